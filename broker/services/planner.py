"""Sharing plans of a stream from the policy engine, for one policy state: never asked per record."""

from __future__ import annotations

import datetime as dt
import threading
import time
from collections.abc import Callable, Iterable, Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any, Protocol, TypeVar

from broker.domain.control import PolicyState
from broker.domain.messages import Evaluation
from broker.domain.plans import Plan
from broker.errors import PolicyEngineError

T = TypeVar("T")
PLAN_RULE = "accord.plans.plan"
SUBSCRIPTIONS_RULE = "accord.plans.subscriptions"
CATALOG_REVISION = "accord.catalog.revision"  # a data document, readable like a rule
CATALOG_PATH = "accord/catalog"  # outside the bundle's roots, so OPA takes it over REST


class PolicyEngine(Protocol):
    """Where Rego policies and their data live and sharing decisions are evaluated (OPA).

    Policies arrive in a signed bundle the engine loads itself; only data is written through this port.
    """

    def ready(self) -> bool:
        """Whether the engine is up with its policies (OPA: its signed bundle verified and activated)."""

    def put_data(self, path: str, document: Mapping[str, Any]) -> None:
        """Replace the data document at `path` (slash-separated, e.g. 'accord/agreements')."""

    def evaluate(self, rule: str, input_doc: Mapping[str, Any]) -> Any:
        """The value of `rule` (dotted, e.g. 'accord.sharing.decision') for `input_doc`; None if undefined."""

    def evaluate_with_id(self, rule: str, input_doc: Mapping[str, Any]) -> Evaluation:
        """As `evaluate`, with the id under which the engine logged the decision, for the audit trail."""


@dataclass(frozen=True)
class Decision:
    """A plan as OPA decided it, with OPA's decision id (None when OPA keeps no decision log)."""

    plan: Plan
    decision_id: str | None


class Planner:
    """Asks OPA for one plan per subscription of a stream; makes sure OPA holds the state's catalog first.

    The control topic is the source of truth for the catalog: a policy engine that restarted empty, or that
    another writer left on an older revision, gets the state's catalog pushed before any plan is trusted. Policies
    are never pushed: the engine loads them from Accord's signed bundle (services/bundles.py).

    With `concurrency` above 1 (the engine must then take calls from several threads) the questions of one
    re-plan go to the engine that many at a time: OPA spends about 2 ms on each plan and the caller about as long
    on the request, so a catalog of 25 subscriptions took 100-200 ms one question after another, all of it a pause
    in delivery. The answers are the same, in the same order, as asked one at a time.
    """

    def __init__(self, engine: PolicyEngine, check_every_s: float = 1.0,
                 monotonic: Callable[[], float] = time.monotonic, concurrency: int = 1) -> None:
        self._engine = engine
        self._check_every_s = check_every_s
        self._monotonic = monotonic
        self._ready: tuple[float, bool] | None = None  # (when checked, answer)
        self._concurrency = max(1, concurrency)
        self._pool: ThreadPoolExecutor | None = None
        self._pool_lock = threading.Lock()

    def _map(self, call: Callable[[Any], T], items: Iterable[Any], at_once: bool = True) -> list[T]:
        """`call` on each item, in order; several at once when the planner is concurrent and `at_once`."""
        todo = list(items)
        if self._concurrency == 1 or len(todo) < 2 or not at_once:
            return [call(item) for item in todo]
        with self._pool_lock:
            if self._pool is None:
                self._pool = ThreadPoolExecutor(self._concurrency, thread_name_prefix="accord-planner")
            pool = self._pool
        return list(pool.map(call, todo))   # the first failure is raised here, as it would be asked in turn

    def close(self) -> None:
        with self._pool_lock:
            pool, self._pool = self._pool, None
        if pool is not None:
            pool.shutdown(wait=True)

    def ready(self) -> bool:
        """Whether the engine serves decisions from its verified bundle; asked at most once per `check_every_s`."""
        now = self._monotonic()
        if self._ready is None or now - self._ready[0] >= self._check_every_s:
            self._ready = (now, self._engine.ready())
        return self._ready[1]

    def plans_by_stream(self, state: PolicyState, streams: list[str], now: dt.datetime) -> dict[str, list[Plan]]:
        """Every stream's plans, with the engine's catalog checked once rather than once per stream."""
        return {stream: [d.plan for d in decisions]
                for stream, decisions in self.decisions_by_stream(state, streams, now).items()}

    def decisions_by_stream(self, state: PolicyState, streams: list[str], now: dt.datetime, at_once: bool = True
                            ) -> dict[str, list[Decision]]:
        """As `plans_by_stream`, each plan with OPA's decision id for the audit trail. `at_once=False` asks one
        question at a time even on a concurrent planner (a re-plan nobody waits for, leaving the pool to one
        that somebody does)."""
        if state.catalog is None:
            return {stream: [] for stream in streams}
        self.ensure_catalog(state)
        grants = [dict(g) for _, g in sorted(state.grants.items())]
        entries = self._map(lambda stream: self._subscriptions(stream, grants), streams, at_once)
        asked = [(stream, entry) for stream, found in zip(streams, entries, strict=True) for entry in found]
        decided = self._map(lambda pair: self._decide(state, pair[0], pair[1], now), asked, at_once)
        found: dict[str, list[Decision]] = {stream: [] for stream in streams}
        for (stream, _), decision in zip(asked, decided, strict=True):
            found[stream].append(decision)
        for decisions in found.values():
            self._check_revision(state, decisions)
        return found

    def plans(self, state: PolicyState, stream: str, now: dt.datetime) -> list[Plan]:
        return self.plans_by_stream(state, [stream], now)[stream]

    def _subscriptions(self, stream: str, grants: list[dict[str, Any]]) -> list[dict[str, str]]:
        return _entries(self._engine.evaluate(SUBSCRIPTIONS_RULE, {"stream": stream, "grants": grants}) or [])

    @staticmethod
    def _check_revision(state: PolicyState, decisions: list[Decision]) -> None:
        expected = state.catalog_revision
        for plan in (d.plan for d in decisions):
            if not plan.revision.startswith(f"{expected}/"):
                raise PolicyEngineError(f"OPA answered with revision {plan.revision} while the control topic is at "
                                        f"catalog {expected}; another writer changed OPA's data")

    def ensure_catalog(self, state: PolicyState) -> None:
        if state.catalog is None:
            return
        if self._engine.evaluate(CATALOG_REVISION, {}) != state.catalog_revision:
            self._engine.put_data(CATALOG_PATH, state.catalog)

    def _decide(self, state: PolicyState, stream: str, entry: dict[str, str], now: dt.datetime) -> Decision:
        request = state.plan_input(entry["subscriber"], entry["role"], stream, entry["purpose"], now)
        answer = self._engine.evaluate_with_id(PLAN_RULE, request)
        if not isinstance(answer.result, dict):
            raise PolicyEngineError(f"OPA has no {PLAN_RULE} for {request['subscriber']}/{request['role']} "
                                    "(policies not loaded?)")
        return Decision(Plan.from_opa(answer.result), answer.decision_id)


def _entries(answer: Any) -> list[dict[str, str]]:
    if not isinstance(answer, list) or not all(
            isinstance(e, dict) and {"subscriber", "role", "purpose"} <= e.keys() for e in answer):
        raise PolicyEngineError(f"{SUBSCRIPTIONS_RULE} answered {str(answer)[:200]}, not a list of subscriptions")
    return [{k: str(e[k]) for k in ("subscriber", "role", "purpose")} for e in answer]
