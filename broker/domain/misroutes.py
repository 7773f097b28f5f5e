"""Rows in the wrong place: councils told of rows that could be theirs, and a wrong recipient's deletion logged.

A row whose jurisdiction fields disagree is quarantined by the gate and delivered to no one. Governance reads the
quarantine entry and tells the publisher and every subscriber of the stream serving one of the row's candidate
areas (`jurisdiction-query`), so that both councils know a row awaits the publisher's correction.

A row delivered to a council it does not belong to is reported (`misroute-reported`); that council must delete it
within the ladder's deletion deadline and confirm it (`deletion-confirmed`), or `deletion-overdue` tells the
governance board. Every step is a governance event, so the deletion is on the audit trail.

```
new ──misroute-reported──▶ awaiting-deletion ──deletion-confirmed──▶ deleted
                                 └──deletion-overdue──▶ overdue ──deletion-confirmed──┘
```
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping
from dataclasses import dataclass, replace
from types import MappingProxyType
from typing import Any

from broker.domain.disputes import parse_stamp
from broker.errors import GovernanceError

QUERY = "jurisdiction-query"
UNRESOLVED = "jurisdiction-unresolved"
REPORTED, CONFIRMED, OVERDUE = "misroute-reported", "deletion-confirmed", "deletion-overdue"
EVENTS = (REPORTED, CONFIRMED, OVERDUE)
TRANSITIONS: Mapping[tuple[str, str], str] = MappingProxyType({
    ("new", REPORTED): "awaiting-deletion",
    ("awaiting-deletion", CONFIRMED): "deleted",
    ("awaiting-deletion", OVERDUE): "overdue",
    ("overdue", CONFIRMED): "deleted",
})


@dataclass(frozen=True)
class Misroute:
    """One reported misrouting as its events left it; `timeline` holds every event in order."""

    id: str
    state: str
    stream: str
    publisher: str
    recipient: str
    belongs_to: str
    rightful: tuple[str, ...]
    source: Mapping[str, Any]
    reason: str
    deadline: dt.datetime
    confirmation: Mapping[str, Any] | None = None
    timeline: tuple[Mapping[str, Any], ...] = ()

    @property
    def parties(self) -> frozenset[str]:
        return frozenset({self.publisher, self.recipient, *self.rightful})

    def to_json(self) -> dict[str, Any]:
        return {"id": self.id, "state": self.state, "stream": self.stream, "publisher": self.publisher,
                "recipient": self.recipient, "belongs_to": self.belongs_to, "rightful": list(self.rightful),
                "source": dict(self.source), "reason": self.reason, "deadline": self.deadline.isoformat(),
                "confirmation": None if self.confirmation is None else dict(self.confirmation),
                "timeline": [dict(event) for event in self.timeline]}


def fold(misroute: Misroute | None, event: Mapping[str, Any]) -> Misroute:
    """The misroute after `event`; a move the transition table lacks raises GovernanceError."""
    kind, data = str(event["type"]), event.get("data") or {}
    state = "new" if misroute is None else misroute.state
    after = TRANSITIONS.get((state, kind))
    if after is None:
        raise GovernanceError(f"misroute {data.get('misroute')!r} is {state}: {kind} is not possible now")
    if misroute is None:
        return Misroute(
            id=str(data["misroute"]), state=after, stream=str(data["stream"]), publisher=str(data["publisher"]),
            recipient=str(data["recipient"]), belongs_to=str(data["belongs_to"]),
            rightful=tuple(data["rightful"]), source=MappingProxyType(dict(data["source"])),
            reason=str(data["reason"]), deadline=parse_stamp(data["deadline"]), timeline=(event,))
    confirmation = {"by": event.get("actor"), "at": event["at"], "statement": data.get("statement")}
    return replace(misroute, state=after, timeline=(*misroute.timeline, event),
                   confirmation=confirmation if kind == CONFIRMED else misroute.confirmation)
