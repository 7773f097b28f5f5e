"""Readiness that tells the truth: a service is ready only when what it needs answers now (Kafka, OPA, the
registry) and its own loop is making progress; otherwise it says which is not, and why.

Liveness (`/health`) only says the process answers; readiness (`/ready`) is what a load balancer, `accord local
status` or a supervisor should go by.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, Protocol

from broker.errors import AccordError

OK = "ok"


class Probe(Protocol):
    """One dependency or loop of a service: None when it is fine, else what is wrong, in words for an operator."""

    def __call__(self) -> str | None: ...


@dataclass(frozen=True)
class Readiness:
    checks: dict[str, str]  # name -> "ok" or why not

    @property
    def ready(self) -> bool:
        return all(outcome == OK for outcome in self.checks.values())

    @property
    def failing(self) -> list[str]:
        return sorted(name for name, outcome in self.checks.items() if outcome != OK)

    def as_json(self) -> dict[str, Any]:
        return {"status": "ready" if self.ready else "not ready", "failing": self.failing, "checks": self.checks}


def assess(probes: Mapping[str, Probe]) -> Readiness:
    """Run every probe; one that raises counts as failing with its error (a probe never takes readiness down)."""
    checks: dict[str, str] = {}
    for name, probe in probes.items():
        try:
            outcome = probe()
        except (AccordError, OSError, ValueError) as exc:
            outcome = f"{type(exc).__name__}: {exc}"
        checks[name] = OK if outcome is None else outcome
    return Readiness(checks)


def progressing(what: str, last_progress: Callable[[], float | None], within_s: float,
                clock: Callable[[], float] = time.monotonic) -> Probe:
    """A loop is progressing when it last completed a round less than `within_s` ago (`last_progress`: a
    time.monotonic() value, None before its first round)."""

    def probe() -> str | None:
        last = last_progress()
        if last is None:
            return f"the {what} has not completed a round yet"
        age = clock() - last
        return None if age <= within_s else f"the {what} last completed a round {age:.0f} s ago"
    return probe
