"""Sharing plans of a stream from the policy engine, for one policy state: never asked per record."""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping
from typing import Any

from broker.domain.control import PolicyState
from broker.domain.plans import Plan
from broker.errors import PolicyEngineError
from broker.ports import PolicyEngine

PLAN_RULE = "accord.plans.plan"
SUBSCRIPTIONS_RULE = "accord.plans.subscriptions"
CATALOG_REVISION = "accord.catalog.revision"  # a data document, readable like a rule


class Planner:
    """Asks OPA for one plan per subscription of a stream; makes sure OPA holds the state's catalog first.

    The control topic is the source of truth for the catalog: a policy engine that restarted empty, or that
    another writer left on an older revision, gets the state's catalog pushed before any plan is trusted.
    """

    def __init__(self, engine: PolicyEngine, policies: Mapping[str, str] | None = None) -> None:
        self._engine = engine
        self._policies = dict(policies or {})

    def plans_by_stream(self, state: PolicyState, streams: list[str], now: dt.datetime) -> dict[str, list[Plan]]:
        """Every stream's plans, with the engine's catalog checked once rather than once per stream."""
        if state.catalog is None:
            return {stream: [] for stream in streams}
        self.ensure_catalog(state)
        return {stream: self._plans(state, stream, now) for stream in streams}

    def plans(self, state: PolicyState, stream: str, now: dt.datetime) -> list[Plan]:
        if state.catalog is None:
            return []
        self.ensure_catalog(state)
        return self._plans(state, stream, now)

    def _plans(self, state: PolicyState, stream: str, now: dt.datetime) -> list[Plan]:
        grants = [dict(g) for _, g in sorted(state.grants.items())]
        subscriptions = self._engine.evaluate(SUBSCRIPTIONS_RULE, {"stream": stream, "grants": grants}) or []
        plans = [self._plan(state, stream, entry, now) for entry in _entries(subscriptions)]
        expected = state.catalog_revision
        for plan in plans:
            if not plan.revision.startswith(f"{expected}/"):
                raise PolicyEngineError(f"OPA answered with revision {plan.revision} while the control topic is at "
                                        f"catalog {expected}; another writer changed OPA's data")
        return plans

    def ensure_catalog(self, state: PolicyState) -> None:
        if state.catalog is None:
            return
        if self._engine.evaluate(CATALOG_REVISION, {}) != state.catalog_revision:
            # An engine without the catalog has probably lost its policies too (a restart): give it both.
            for module_id, source in self._policies.items():
                self._engine.put_policy(module_id, source)
            self._engine.put_data("accord/catalog", state.catalog)

    def _plan(self, state: PolicyState, stream: str, entry: dict[str, str], now: dt.datetime) -> Plan:
        request = state.plan_input(entry["subscriber"], entry["role"], stream, entry["purpose"], now)
        answer = self._engine.evaluate(PLAN_RULE, request)
        if not isinstance(answer, dict):
            raise PolicyEngineError(f"OPA has no {PLAN_RULE} for {request['subscriber']}/{request['role']} "
                                    "(policies not loaded?)")
        return Plan.from_opa(answer)


def _entries(answer: Any) -> list[dict[str, str]]:
    if not isinstance(answer, list) or not all(
            isinstance(e, dict) and {"subscriber", "role", "purpose"} <= e.keys() for e in answer):
        raise PolicyEngineError(f"{SUBSCRIPTIONS_RULE} answered {str(answer)[:200]}, not a list of subscriptions")
    return [{k: str(e[k]) for k in ("subscriber", "role", "purpose")} for e in answer]
