"""Access requests: the transition table and the fold of `request-*` governance events into one request's state.

```
new ──request-made──▶ awaiting ──request-approved──▶ approved ──request-enforced──▶ live ──request-expired──▶ expired
                       │  ▲  └──request-refused───▶ refused
                       └──┘  └──request-defaulted──▶ defaulted ──request-enforced──▶ live   (a provisional grant)
     request-reviewed, request-tier-opened (deadline passed: the next ladder tier),
     request-deadline-changed (a higher level declared: the tier's deadline shortens)
```
`request-first-delivery` records, once, when the gate first delivered to the requester after approval. The governance
topic is the source of truth: a request keeps its timeline after its grant ends.
"""

from __future__ import annotations

import datetime as dt
import re
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from types import MappingProxyType
from typing import Any

from broker.domain.disputes import parse_stamp, stamp
from broker.domain.ladder import Actor
from broker.errors import GovernanceError, InvalidRequestError

PREFIX = "request-"
GRANT_PREFIX = "request-"       # the grant an approved request puts on the control topic: grant/request-<id>
OPEN_STATES = frozenset({"awaiting"})

TRANSITIONS: Mapping[tuple[str, str], str] = MappingProxyType({
    ("new", "request-made"): "awaiting",
    ("awaiting", "request-reviewed"): "awaiting",
    ("awaiting", "request-tier-opened"): "awaiting",
    ("awaiting", "request-deadline-changed"): "awaiting",
    ("awaiting", "request-approved"): "approved",
    ("awaiting", "request-refused"): "refused",
    ("awaiting", "request-defaulted"): "defaulted",
    ("approved", "request-enforced"): "live",
    ("defaulted", "request-enforced"): "live",
    ("live", "request-first-delivery"): "live",
    ("live", "request-expired"): "expired",
    ("expired", "request-first-delivery"): "expired",
})

_DURATION = re.compile(r"^P(?:(\d+)W)?(?:(\d+)D)?(?:T(?:(\d+)H)?(?:(\d+)M)?(?:(\d+)S)?)?$")


def parse_duration(text: str, what: str) -> dt.timedelta:
    """An ISO 8601 duration in weeks, days, hours, minutes or seconds (P28D, PT2H); InvalidRequestError otherwise."""
    found = _DURATION.match(text.strip().upper()) if text else None
    if found is None or text.strip().upper() in ("P", "PT"):
        raise InvalidRequestError(f"{what} {text!r} is not an ISO 8601 duration in weeks, days, hours, minutes or "
                                  "seconds, such as P28D or PT12H")
    weeks, days, hours, minutes, seconds = (int(part or 0) for part in found.groups())
    return dt.timedelta(weeks=weeks, days=days, hours=hours, minutes=minutes, seconds=seconds)


@dataclass(frozen=True)
class AccessRequest:
    """One access request as its events left it; `timeline` holds every event in order."""

    id: str
    state: str
    requester: Actor
    template: str
    stream: str
    publisher: str
    purpose: str
    legal_basis: tuple[str, ...]
    fields: tuple[str, ...]
    areas: tuple[str, ...]
    duration: str
    backfill: str | None
    justification: str
    made_at: dt.datetime
    tier: int = 0
    level: str = "normal"
    deadline: dt.datetime | None = None
    reviews: tuple[Mapping[str, Any], ...] = ()     # at the current tier: {actor, verdict, reason, tier}
    decision: Mapping[str, Any] | None = None
    decided_at: dt.datetime | None = None
    approved_at: dt.datetime | None = None
    enforced_at: dt.datetime | None = None
    first_delivery: Mapping[str, Any] | None = None
    expired_at: dt.datetime | None = None
    timeline: tuple[Mapping[str, Any], ...] = field(default=())

    @property
    def body(self) -> str:
        return self.requester.body

    @property
    def role(self) -> str:
        return self.requester.role

    @property
    def grant_id(self) -> str:
        return f"{GRANT_PREFIX}{self.id}"

    @property
    def approval_to_first_record_s(self) -> float | None:
        if self.first_delivery is None:
            return None
        return float(self.first_delivery["approval_to_first_record_s"])

    def to_json(self) -> dict[str, Any]:
        return {
            "id": self.id, "state": self.state, "requester": self.requester.to_json(), "body": self.body,
            "role": self.role, "template": self.template, "stream": self.stream, "publisher": self.publisher,
            "purpose": self.purpose, "legal_basis": list(self.legal_basis), "fields": list(self.fields),
            "areas": list(self.areas), "duration": self.duration, "backfill": self.backfill,
            "justification": self.justification, "made_at": stamp(self.made_at), "tier": self.tier,
            "level": self.level, "deadline": stamp(self.deadline), "reviews": [dict(r) for r in self.reviews],
            "decision": None if self.decision is None else dict(self.decision),
            "decided_at": stamp(self.decided_at), "approved_at": stamp(self.approved_at),
            "enforced_at": stamp(self.enforced_at),
            "first_delivery": None if self.first_delivery is None else dict(self.first_delivery),
            "approval_to_first_record_s": self.approval_to_first_record_s,
            "expired_at": stamp(self.expired_at), "timeline": [dict(e) for e in self.timeline],
        }


def next_state(state: str, event_type: str, ident: str) -> str:
    try:
        return TRANSITIONS[(state, event_type)]
    except KeyError:
        raise GovernanceError(f"access request {ident} is {state}; it cannot take '{event_type}'") from None


def fold(request: AccessRequest | None, event: Mapping[str, Any]) -> AccessRequest:
    """`request` after `event` (None before its `request-made` event)."""
    kind = str(event["type"])
    data: Mapping[str, Any] = event.get("data") or {}
    ident = str(data["request"])
    if request is None:
        next_state("new", kind, ident)
        return _made(event)
    state = next_state(request.state, kind, ident)
    at = parse_stamp(event["at"])
    after = replace(request, state=state, timeline=(*request.timeline, event))
    if kind == "request-reviewed":
        return replace(after, reviews=(*request.reviews, {"actor": event["actor"], **data}))
    if kind == "request-tier-opened":
        return replace(after, tier=int(data["tier"]), level=str(data["level"]), deadline=parse_stamp(data["deadline"]),
                       reviews=())
    if kind == "request-deadline-changed":
        return replace(after, level=str(data["level"]), deadline=parse_stamp(data["deadline"]))
    if kind in ("request-approved", "request-refused", "request-defaulted"):
        approved = at if data.get("grant") is not None else None
        return replace(after, decision=data, decided_at=at, approved_at=approved, deadline=None)
    if kind == "request-enforced":
        return replace(after, enforced_at=at)
    if kind == "request-first-delivery":
        return replace(after, first_delivery=data)
    if kind == "request-expired":
        return replace(after, expired_at=at)
    return after


def _made(event: Mapping[str, Any]) -> AccessRequest:
    data = event["data"]
    return AccessRequest(
        id=str(data["request"]), state="awaiting", requester=Actor.from_json(event["actor"]),
        template=str(data["template"]), stream=str(data["stream"]), publisher=str(data["publisher"]),
        purpose=str(data["purpose"]), legal_basis=tuple(data["legal_basis"]), fields=tuple(data["fields"]),
        areas=tuple(data["areas"]), duration=str(data["duration"]), backfill=data.get("backfill"),
        justification=str(data["justification"]), made_at=parse_stamp(event["at"]), tier=int(data["tier"]),
        level=str(data["level"]), deadline=parse_stamp(data["deadline"]), timeline=(event,),
    )
