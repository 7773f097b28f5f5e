"""A governance world for domain tests: the state, catalog and clock that pure commands read, and the events they
return applied in order, as the service would after appending them."""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable, Iterable
from typing import Any

from broker.domain import adjudication, escalation
from broker.domain.adjudication import Context, Decision, DisputeRequest
from broker.domain.disputes import Dispute
from broker.domain.governance import GovernanceEvent, GovernanceState, apply
from broker.domain.ladder import Actor, Ladder
from tests.unit.governance_catalog import LEICESTER, T1, catalog
from tests.unit.governance_fakes import START

Event = GovernanceEvent


def person(body: str, role: str) -> Actor:
    return Actor(body=body, role=role, person=f"{role} of {body}")


DPH = person(LEICESTER, "dph")
UKHSA_IG = person("ukhsa", "ig-lead")
ARBITER = person("accord-arbiter", "arbiter")


def board(body: str) -> Actor:
    return person(body, "governance-board")


def refusal(**changes: Any) -> DisputeRequest:
    """Leicester's DPH, refused T1, asks for part of the line list."""
    fields: dict[str, Any] = {
        "kind": "refusal", "stream": T1, "role": "dph", "purpose": "health-protection",
        "justification": "Cases are rising in Leicester and we need the line list to act.",
        "fields": ("name", "lsoa", "specimen_date"), "decision_id": "plan-refused", "urgency": "urgent"}
    fields.update(changes)
    return DisputeRequest(**fields)


def granted(reason: str = "The need is made out.", **changes: Any) -> Decision:
    return Decision(outcome=changes.pop("outcome", "granted"), reason=reason, **changes)


class World:
    """Pure commands run against one evolving state; `now` moves only when told."""

    def __init__(self, doc: dict[str, Any] | None = None, now: dt.datetime = START) -> None:
        self.catalog = catalog() if doc is None else doc
        self.ladder = Ladder.from_catalog(self.catalog)
        self.state = GovernanceState()
        self.now = now

    def ctx(self) -> Context:
        return Context(self.state, self.catalog, self.ladder, self.now)

    def run(self, command: Callable[[Context], list[Event]]) -> list[Event]:
        return self.apply(command(self.ctx()))

    def apply(self, events: Iterable[Event]) -> list[Event]:
        applied = list(events)
        for event in applied:
            self.state = apply(self.state, self.state.offset, event)
        return applied

    def dispute(self, ident: str = "d-1") -> Dispute:
        return self.state.dispute(ident)

    def raise_(self, actor: Actor = DPH, request: DisputeRequest | None = None, ident: str = "d-1") -> Dispute:
        self.run(lambda ctx: adjudication.raise_dispute(ctx, actor, request or refusal(), ident))
        return self.dispute(ident)

    def decide(self, actor: Actor, decision: Decision, ident: str = "d-1") -> list[Event]:
        return self.run(lambda ctx: adjudication.decide(ctx, ident, actor, decision))

    def enforce(self, ident: str = "d-1") -> list[Event]:
        return self.run(lambda ctx: escalation.enforced(ctx, self.dispute(ident), []))

    def tick(self) -> list[Event]:
        return self.run(escalation.due)

    def at(self, moment: dt.datetime) -> World:
        self.now = moment
        return self

    def later(self, **delta: float) -> World:
        self.now += dt.timedelta(**delta)
        return self

    def declare(self, scope: str, level: str, actor: Actor | None = None) -> list[Event]:
        who = actor or board("dhsc")
        return self.run(lambda ctx: escalation.declare(ctx, who, scope, level, f"{level} for {scope}"))


def types(events: Iterable[Event]) -> list[str]:
    return [str(e["type"]) for e in events]
