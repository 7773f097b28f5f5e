"""Governance state folded from the governance topic: disputes, access requests, emergency declarations, webhooks, the
webhook outbox and the grants and revocations that decisions put into force. Events are JSON objects:

    {"event_id": "...", "type": "raised", "dispute": "d-...", "at": "<RFC 3339>", "actor": {body, role, person} | null,
     "data": {...}}

Decisions, defaults and break-glass carry their policy effect in `data`: `grant` (an agreement-shaped grant with an
`id`), `revoke_grants`, `revoke_agreements` and `reinstate_agreements` (an appeal reversing a revocation);
declarations carry `scope` and `level`. `webhook-queued` puts a notification in the outbox (in the same transaction
as the events it tells of) and `webhook-finished` takes it out, so a restart sends what is still owed.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field, replace
from types import MappingProxyType
from typing import Any, TypedDict

from broker.domain.access_requests import PREFIX as REQUEST_PREFIX
from broker.domain.access_requests import AccessRequest
from broker.domain.access_requests import fold as fold_request
from broker.domain.control import with_entry
from broker.domain.disputes import Dispute, fold, stamp
from broker.domain.ladder import LEVELS, Actor, higher
from broker.domain.misroutes import EVENTS as MISROUTE_EVENTS
from broker.domain.misroutes import QUERY, Misroute
from broker.domain.misroutes import fold as fold_misroute
from broker.domain.receipt_ledger import ReceiptKey, fold_key_event
from broker.domain.receipts import KEY_REGISTERED, KEY_RETIRED
from broker.domain.webhooks import Webhook
from broker.errors import GovernanceError

NATIONAL = "national"
STATE_EVENTS = ("emergency-declared", "emergency-lifted", "webhook-registered", "break-glass")
QUEUED, FINISHED = "webhook-queued", "webhook-finished"
# Agreements' own dates (domain/agreement_notices.py): a legal basis about to end, a review falling due.
LEGAL_BASIS_ENDING, REVIEW_DUE, REVIEW_COMPLETED = "legal-basis-ending", "review-due", "review-completed"


def _empty() -> Mapping[str, Any]:
    return MappingProxyType({})


@dataclass(frozen=True)
class GovernanceState:
    """Everything the governance topic says, up to `offset` (the next offset to apply)."""

    disputes: Mapping[str, Dispute] = field(default_factory=_empty)
    emergency: Mapping[str, Mapping[str, Any]] = field(default_factory=_empty)   # scope → declaration
    webhooks: Mapping[str, str] = field(default_factory=_empty)                   # body → URL
    registrations: Mapping[str, str] = field(default_factory=_empty)  # body → its registration's event id
    outbox: Mapping[str, Mapping[str, Any]] = field(default_factory=_empty)  # delivery id → {body, notification}
    ended_grants: frozenset[str] = frozenset()  # grants revoked or expired by a governance event
    grants: Mapping[str, Mapping[str, Any]] = field(default_factory=_empty)      # grant id → grant in force
    revocations: Mapping[str, Mapping[str, Any]] = field(default_factory=_empty)  # agreement id → why
    misroutes: Mapping[str, Misroute] = field(default_factory=_empty)
    requests: Mapping[str, AccessRequest] = field(default_factory=_empty)
    quarantine_read: Mapping[str, int] = field(default_factory=_empty)  # "topic/partition" → next offset to read
    receipt_keys: Mapping[str, ReceiptKey] = field(default_factory=_empty)  # key id → a body's receipt key
    notices: frozenset[str] = frozenset()  # legal-basis notices sent: "<agreement>/<basis end>/<days before>"
    reviews: Mapping[str, Mapping[str, Any]] = field(default_factory=_empty)  # review task id → the task
    offset: int = 0

    def level(self, scope: str) -> str:
        declaration = self.emergency.get(scope)
        return "normal" if declaration is None else str(declaration["level"])

    def level_for(self, regions: Iterable[str]) -> str:
        """The level that applies to a body in `regions`: the highest of the national and its regions' levels."""
        level = self.level(NATIONAL)
        for region in regions:
            level = higher(level, self.level(region))
        return level

    def webhook(self, body: str) -> Webhook | None:
        url, registration = self.webhooks.get(body), self.registrations.get(body)
        return None if url is None or registration is None else Webhook(url, registration)

    def dispute(self, ident: str) -> Dispute:
        try:
            return self.disputes[ident]
        except KeyError:
            raise GovernanceError(f"no dispute {ident!r}; `accord dispute list` shows the disputes") from None

    def request(self, ident: str) -> AccessRequest:
        try:
            return self.requests[ident]
        except KeyError:
            raise GovernanceError(f"no access request {ident!r}; `accord request list` shows yours") from None

    def misroute(self, ident: str) -> Misroute:
        try:
            return self.misroutes[ident]
        except KeyError:
            raise GovernanceError(f"no misrouting report {ident!r}; GET /misroutes lists them") from None


def apply(state: GovernanceState, offset: int, event: Mapping[str, Any]) -> GovernanceState:
    """The state after the governance event at `offset`; an offset already applied changes nothing (a writer reads
    back the events it appended and applied itself)."""
    if offset < state.offset:
        return state
    after = replace(state, offset=offset + 1)
    kind = event.get("type")
    data: Mapping[str, Any] = event.get("data") or {}
    if kind == "emergency-declared":
        return replace(after, emergency=with_entry(state.emergency, str(data["scope"]), {**data, "at": event["at"]}))
    if kind == "emergency-lifted":
        return replace(after, emergency=with_entry(state.emergency, str(data["scope"]), None))
    if kind == "webhook-registered":
        body, url = str(data["body"]), data.get("url")
        return replace(after, webhooks=with_entry(state.webhooks, body, url),
                       registrations=with_entry(state.registrations, body, None if url is None else event["event_id"]))
    if kind in (KEY_REGISTERED, KEY_RETIRED):
        return replace(after, receipt_keys=MappingProxyType(fold_key_event(state.receipt_keys, event)))
    if kind == QUEUED:
        entry = {"body": data["body"], "notification": data["notification"]}
        return replace(after, outbox=with_entry(state.outbox, str(data["delivery"]), entry))
    if kind == FINISHED:
        return replace(after, outbox=with_entry(state.outbox, str(data["delivery"]), None))
    if kind == QUERY:
        position = data["position"]
        read = with_entry(state.quarantine_read, f"{position['topic']}/{position['partition']}",
                          int(position["offset"]) + 1)
        return replace(after, quarantine_read=read)
    if kind == LEGAL_BASIS_ENDING:
        return replace(after, notices=state.notices | set(data["notices"]))
    if kind == REVIEW_DUE:
        task = {**data, "state": "open", "raised_at": event["at"], "completed": None}
        return replace(after, reviews=with_entry(state.reviews, str(data["task"]), task))
    if kind == REVIEW_COMPLETED:
        ident = str(data["task"])
        done = {**state.reviews[ident], "state": "completed",
                "completed": {"at": event["at"], "by": event.get("actor"), "note": data.get("note", "")}}
        return replace(after, reviews=with_entry(state.reviews, ident, done))
    if kind in MISROUTE_EVENTS:
        ident = str(data["misroute"])
        return replace(after, misroutes=with_entry(state.misroutes, ident, fold_misroute(state.misroutes.get(ident),
                                                                                          event)))
    if str(kind).startswith(REQUEST_PREFIX):
        ident = str(data["request"])
        after = replace(after, requests=with_entry(state.requests, ident, fold_request(state.requests.get(ident),
                                                                                       event)))
        return _effects(after, data)
    if event.get("dispute") is not None:
        ident = str(event["dispute"])
        after = replace(after, disputes=with_entry(state.disputes, ident, fold(state.disputes.get(ident), event)))
    return _effects(after, data)


def _effects(state: GovernanceState, data: Mapping[str, Any]) -> GovernanceState:
    grants = state.grants
    if data.get("grant") is not None:
        grants = with_entry(grants, str(data["grant"]["id"]), data["grant"])
    ended = state.ended_grants
    for ident in data.get("revoke_grants") or ():
        grants = with_entry(grants, str(ident), None)
        ended |= {str(ident)}
    revocations = state.revocations
    for ident in data.get("revoke_agreements") or ():
        revocations = with_entry(revocations, str(ident), {"reason": data.get("reason", "")})
    for ident in data.get("reinstate_agreements") or ():
        revocations = with_entry(revocations, str(ident), None)
    return replace(state, grants=grants, revocations=revocations, ended_grants=ended - set(grants))


class GovernanceEvent(TypedDict):
    """One event on the governance topic: what happened (`type`), to which dispute, when, by whom, with what."""

    event_id: str
    type: str
    dispute: str | None
    at: str | None
    actor: dict[str, str] | None
    data: dict[str, Any]


def new_event(kind: str, dispute: str | None, at: Any, actor: Actor | None, data: Mapping[str, Any]
              ) -> GovernanceEvent:
    return {
        "event_id": uuid.uuid4().hex, "type": kind, "dispute": dispute, "at": stamp(at),
        "actor": None if actor is None else actor.to_json(), "data": dict(data),
    }


def check_level(level: str) -> str:
    if level not in LEVELS:
        raise GovernanceError(f"emergency level {level!r} is not one of {', '.join(LEVELS)}")
    return level
