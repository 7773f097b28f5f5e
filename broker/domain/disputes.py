"""Dispute lifecycle: the transition table and the fold of governance events into one dispute's state.

```
new ──raised──▶ raised ──tier-opened──▶ awaiting ──decided──▶ decided ──enforced──▶ enforced ──closed──▶ closed
                                        │  ▲   └──defaulted──▶ defaulted ──enforced──┘   │
                                        └──┘ tier-opened (deadline passed), approved,     └─appealed─▶ appealed
                                             commented, deadline-changed                       └─tier-opened─▶ awaiting
```
Every event names its dispute; the table is the only place a state changes, and anything else raises.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from types import MappingProxyType
from typing import Any, overload

from broker.domain.ladder import Actor
from broker.errors import GovernanceError

KINDS = ("refusal", "restriction", "grant-contested", "break-glass-review", "provisional-review")
OUTCOMES = ("granted", "granted-in-part", "granted-for-period", "refused")
URGENCIES = ("routine", "urgent", "immediate")
OPEN_STATES = frozenset({"raised", "awaiting", "appealed", "decided", "defaulted"})

TRANSITIONS: Mapping[tuple[str, str], str] = MappingProxyType({
    ("new", "raised"): "raised",
    ("raised", "tier-opened"): "awaiting",
    ("awaiting", "tier-opened"): "awaiting",
    ("awaiting", "deadline-changed"): "awaiting",
    ("awaiting", "approved"): "awaiting",
    ("awaiting", "decided"): "decided",
    ("awaiting", "defaulted"): "defaulted",
    ("decided", "enforced"): "enforced",
    ("defaulted", "enforced"): "enforced",
    ("enforced", "appealed"): "appealed",
    ("appealed", "tier-opened"): "awaiting",
    ("enforced", "closed"): "closed",
    **{(state, "commented"): state for state in ("raised", "awaiting", "appealed", "decided", "defaulted", "enforced")},
})


@dataclass(frozen=True)
class Dispute:
    """One dispute as its events left it; `timeline` holds every event in order."""

    id: str
    kind: str
    state: str
    stream: str
    publisher: str
    subscriber: str
    role: str
    purpose: str
    challenger: Actor
    challenges: Mapping[str, Any]
    sought: Mapping[str, Any]
    justification: str
    urgency: str
    evidence: tuple[str, ...]
    raised_at: dt.datetime
    tier: int = -1
    level: str = "normal"
    tier_opened_at: dt.datetime | None = None
    deadline: dt.datetime | None = None
    approvals: tuple[Mapping[str, Any], ...] = ()
    decision: Mapping[str, Any] | None = None
    decided_at: dt.datetime | None = None
    enforced_at: dt.datetime | None = None
    closes_at: dt.datetime | None = None
    timeline: tuple[Mapping[str, Any], ...] = field(default=())
    # A drill's dispute runs on a compressed ladder: its deadlines (and periods timed off them) divided by this.
    time_scale: float = 1.0

    def scaled(self, duration: dt.timedelta) -> dt.timedelta:
        """`duration` of the ladder as it applies to this dispute (compressed by its time scale)."""
        return duration if self.time_scale == 1 else duration / self.time_scale

    @property
    def parties(self) -> frozenset[str]:
        """Bodies with a stake: the challenger's, the subscriber and the publisher; none of them may adjudicate."""
        return frozenset({self.challenger.body, self.subscriber, self.publisher})

    @property
    def is_open(self) -> bool:
        return self.state in OPEN_STATES

    def to_json(self) -> dict[str, Any]:
        return {
            "id": self.id, "kind": self.kind, "state": self.state, "stream": self.stream,
            "publisher": self.publisher, "subscriber": self.subscriber, "role": self.role, "purpose": self.purpose,
            "challenger": self.challenger.to_json(), "challenges": dict(self.challenges), "sought": dict(self.sought),
            "justification": self.justification, "urgency": self.urgency, "evidence": list(self.evidence),
            "raised_at": stamp(self.raised_at), "tier": self.tier, "level": self.level,
            "tier_opened_at": stamp(self.tier_opened_at), "deadline": stamp(self.deadline),
            "approvals": [dict(a) for a in self.approvals],
            "decision": None if self.decision is None else dict(self.decision),
            "decided_at": stamp(self.decided_at), "enforced_at": stamp(self.enforced_at),
            "closes_at": stamp(self.closes_at), "timeline": [dict(e) for e in self.timeline],
            "time_scale": self.time_scale,
        }


def next_state(state: str, event_type: str, dispute_id: str) -> str:
    """The state after `event_type`, or GovernanceError naming the dispute when the table has no such move."""
    try:
        return TRANSITIONS[(state, event_type)]
    except KeyError:
        raise GovernanceError(f"dispute {dispute_id} is {state}; it cannot take '{event_type}'") from None


def fold(dispute: Dispute | None, event: Mapping[str, Any]) -> Dispute:
    """`dispute` after `event` (None before its `raised` event)."""
    kind = str(event["type"])
    ident = str(event["dispute"])
    if dispute is None:
        next_state("new", kind, ident)
        return _raised(event)
    state = next_state(dispute.state, kind, ident)
    at = parse_stamp(event["at"])
    data: Mapping[str, Any] = event.get("data") or {}
    after = replace(dispute, state=state, timeline=(*dispute.timeline, event))
    if kind == "tier-opened":
        return replace(after, tier=int(data["tier"]), level=str(data["level"]), tier_opened_at=at,
                       deadline=parse_stamp(data["deadline"]), approvals=())
    if kind == "deadline-changed":
        return replace(after, level=str(data["level"]), deadline=parse_stamp(data["deadline"]))
    if kind == "approved":
        return replace(after, approvals=(*dispute.approvals, {"actor": event["actor"], **data}))
    if kind in ("decided", "defaulted"):
        return replace(after, decision=data, decided_at=at, deadline=None)
    if kind == "enforced":
        closes = data.get("closes_at")
        return replace(after, enforced_at=at, closes_at=None if closes is None else parse_stamp(closes))
    if kind == "appealed":
        return replace(after, decision=None, closes_at=None)
    return after


def _raised(event: Mapping[str, Any]) -> Dispute:
    data = event["data"]
    return Dispute(
        id=str(event["dispute"]), kind=str(data["kind"]), state="raised", stream=str(data["stream"]),
        publisher=str(data["publisher"]), subscriber=str(data["subscriber"]), role=str(data["role"]),
        purpose=str(data["purpose"]), challenger=Actor.from_json(event["actor"]),
        challenges=MappingProxyType(dict(data.get("challenges") or {})),
        sought=MappingProxyType(dict(data.get("sought") or {})), justification=str(data.get("justification", "")),
        urgency=str(data.get("urgency", "routine")), evidence=tuple(data.get("evidence") or ()),
        raised_at=parse_stamp(event["at"]), timeline=(event,), time_scale=float(data.get("time_scale", 1)),
    )


@overload
def stamp(moment: dt.datetime) -> str: ...


@overload
def stamp(moment: None) -> None: ...


def stamp(moment: dt.datetime | None) -> str | None:
    """UTC RFC 3339 with a `Z` (the catalog's and OPA's form), or None."""
    if moment is None:
        return None
    return moment.astimezone(dt.UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def parse_stamp(text: Any) -> dt.datetime:
    moment = dt.datetime.fromisoformat(str(text).replace("Z", "+00:00"))
    if moment.tzinfo is None:
        raise GovernanceError(f"time {text!r} has no time zone; use RFC 3339 with Z or an offset")
    return moment.astimezone(dt.UTC)
