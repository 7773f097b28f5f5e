"""The drill runner: runs each check (a function returning a verdict, its reason and the seconds it measured) in
order, holds timings to their targets, and folds the outcomes and the moments the checks noted into a Report.

A check that cannot run returns `not_run(why)`; one that raises is a failure with the error as its reason, so a
report never shows `pass` for something that did not happen.
"""

from __future__ import annotations

import logging
import time
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from broker.clock import Clock
from broker.domain.drills import CheckResult, Moment, Report, Verdict
from broker.errors import AccordError

log = logging.getLogger(__name__)
# The check whose seconds are a flow's `approval_to_first_record_s`.
FIRST_RECORD = "approval-to-first-record"


@dataclass(frozen=True)
class Outcome:
    verdict: Verdict
    reason: str
    seconds: float | None = None
    target: float | None = None     # a target the check learns as it runs (its Check has none)


def passed(reason: str, seconds: float | None = None, target: float | None = None) -> Outcome:
    return Outcome("pass", reason, seconds, target)


def failed(reason: str, seconds: float | None = None, target: float | None = None) -> Outcome:
    return Outcome("fail", reason, seconds, target)


def not_run(reason: str) -> Outcome:
    return Outcome("not-run", reason)


class Moments:
    """What checks note while they run (a request made, an approval given), stamped by the runner's clock."""

    def __init__(self, clock: Clock) -> None:
        self._clock = clock
        self.noted: list[Moment] = []

    def note(self, flow: str, what: str) -> None:
        self.noted.append(Moment(self._clock(), flow, what))


@dataclass(frozen=True)
class Check:
    """One check of one flow: `run` does it (noting moments) and says how it went; `target` bounds its seconds."""

    flow: str
    name: str
    run: Callable[[Moments], Outcome]
    target: float | None = None


def held_to_target(outcome: Outcome, target: float | None) -> Outcome:
    """A pass that took longer than its target is a failure, saying by how much."""
    if outcome.verdict != "pass" or target is None or outcome.seconds is None or outcome.seconds <= target:
        return outcome
    return failed(f"{outcome.reason}; but it took {outcome.seconds:.3f} s, over the {target:g} s target",
                  outcome.seconds, target)


class DrillRunner:
    """Runs checks against one deployment (`deployment` names it in the report)."""

    def __init__(self, deployment: str, clock: Clock, *, time_scale: float = 1.0,
                 monotonic: Callable[[], float] = time.monotonic) -> None:
        self._deployment, self._clock, self._time_scale, self._monotonic = deployment, clock, time_scale, monotonic

    def run(self, flows: Sequence[str], checks: Sequence[Check], run_id: str | None = None) -> Report:
        moments = Moments(self._clock)
        started = self._clock()
        results = [self._one(check, moments) for check in checks]
        first = {r.flow: r.seconds for r in results if r.check == FIRST_RECORD and r.verdict != "not-run"}
        return Report(run=run_id or f"drill-{uuid.uuid4().hex[:8]}", deployment=self._deployment,
                      started_at=started, finished_at=self._clock(), flows=tuple(flows), checks=tuple(results),
                      timeline=tuple(moments.noted), time_scale=self._time_scale,
                      first_record_s={flow: first.get(flow) for flow in flows})

    def _one(self, check: Check, moments: Moments) -> CheckResult:
        started, begun = self._clock(), self._monotonic()
        try:
            outcome = check.run(moments)
        except AccordError as exc:
            outcome = failed(f"{type(exc).__name__}: {exc}")
        except Exception as exc:  # a broken check is a failed check, and the rest still run
            log.exception("drill check %s/%s raised", check.flow, check.name)
            outcome = failed(f"the check itself broke ({type(exc).__name__}: {exc})")
        if outcome.verdict == "fail" and outcome.seconds is None:
            outcome = Outcome("fail", outcome.reason, round(self._monotonic() - begun, 3), outcome.target)
        target = check.target if check.target is not None else outcome.target
        outcome = held_to_target(outcome, target)
        return CheckResult(flow=check.flow, check=check.name, verdict=outcome.verdict, reason=outcome.reason,
                           started_at=started, seconds=outcome.seconds, target=target)
