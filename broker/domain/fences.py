"""Which delivery topics a subscriber may still read, how long each keeps its records, and when ended ones are
emptied: worked out from the policy state (agreements, grants, revocations) and the time.

A delivery topic (`deliver.<subscriber>.<role>.<stream>`) is *open* while at least one agreement or grant in force
gives the subscriber that role on that stream. When the last one ends (expiry, its legal basis lapsing, a
revocation, a grant withdrawn) the topic is *fenced*: its readers are refused at once, and once the grace has
passed since it ended its records are deleted. A topic's retention is the shortest retention of the agreements
that keep it open, so no record outlives what any of them allows.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from broker.domain.control import PolicyState
from broker.domain.disputes import parse_stamp
from broker.domain.flows import Flow
from broker.domain.topics import delivery_topic
from broker.errors import GovernanceError


@dataclass(frozen=True)
class Source:
    """One agreement or grant's right to one delivery topic."""

    ident: str
    topic: str
    starts: dt.datetime
    ends: dt.datetime
    revoked_at: dt.datetime | None
    retention: dt.timedelta | None

    def in_force(self, now: dt.datetime) -> bool:
        return self.revoked_at is None and self.starts <= now < self.ends

    @property
    def ended_at(self) -> dt.datetime:
        """When the right ended (or will end): its revocation if revoked, else its end."""
        return self.revoked_at if self.revoked_at is not None and self.revoked_at < self.ends else self.ends


@dataclass(frozen=True)
class TopicFence:
    """What a delivery topic should look like now."""

    topic: str
    open: bool
    retention: dt.timedelta | None      # for an open topic: the shortest retention of what keeps it open
    ended_at: dt.datetime | None        # for a fenced topic: when its last right ended
    because: tuple[str, ...]            # the agreements or grants that keep it open, or that ended

    def delete_due(self, now: dt.datetime, grace: dt.timedelta) -> bool:
        return not self.open and self.ended_at is not None and now >= self.ended_at + grace


def sources(state: PolicyState) -> list[Source]:
    """Every (agreement or grant, delivery topic) right in the state, whatever its dates."""
    catalog = state.catalog or {}
    found: list[Source] = []
    for ident, agreement in sorted((catalog.get("agreements") or {}).items()):
        found += _rights(ident, agreement, _revoked_at(state.revoked.get(ident)))
    for ident, grant in sorted(state.grants.items()):
        found += _rights(f"grant/{ident}", grant, None)
    return found


def fences(state: PolicyState, now: dt.datetime, existing: Iterable[str] = (),
           fenced_since: Mapping[str, dt.datetime] | None = None) -> dict[str, TopicFence]:
    """The fence of every delivery topic the state names, and of `existing` delivery topics it no longer names (a
    grant withdrawn, an agreement removed from the catalog): nothing in the state says when those ended, so they
    count as ended when first seen fenced (`fenced_since`), else `now`."""
    by_topic: dict[str, list[Source]] = {}
    for source in sources(state):
        by_topic.setdefault(source.topic, []).append(source)
    result = {topic: _fence(topic, rights, now) for topic, rights in by_topic.items()}
    for topic in existing:
        result.setdefault(topic, TopicFence(topic, False, None, (fenced_since or {}).get(topic, now), ()))
    return result


@dataclass(frozen=True)
class Access:
    """Whether a subscriber's role may read a delivery topic now, and why (the pull API's 403 says `reason`)."""

    open: bool
    reason: str


def delivery_access(state: PolicyState, topic: str, now: dt.datetime) -> Access:
    """The same rights the fence keeper acts on, asked for one topic: open while an agreement or grant is in force;
    otherwise the reason names each right and how it ended (revoked, expired, not yet begun)."""
    rights = [s for s in sources(state) if s.topic == topic]
    live = [s.ident for s in rights if s.in_force(now)]
    if live:
        return Access(True, f"in force under {', '.join(live)}")
    if not rights:
        return Access(False, "no agreement or grant in force gives this role this stream")
    return Access(False, "; ".join(_ended(s, now) for s in rights))


def _ended(right: Source, now: dt.datetime) -> str:
    if right.revoked_at is not None:
        return f"{right.ident} was revoked at {_iso(right.revoked_at)}"
    if right.starts > now:
        return f"{right.ident} is not in force until {_iso(right.starts)}"
    return f"{right.ident} expired at {_iso(right.ends)}"


def _iso(moment: dt.datetime) -> str:
    return moment.astimezone(dt.UTC).isoformat().replace("+00:00", "Z")


def _fence(topic: str, rights: list[Source], now: dt.datetime) -> TopicFence:
    live = [s for s in rights if s.in_force(now)]
    if live:
        spans = [s.retention for s in live if s.retention is not None]
        return TopicFence(topic, True, min(spans) if spans else None, None, tuple(s.ident for s in live))
    begun = [s for s in rights if s.starts <= now]
    if not begun:  # nothing has started yet: closed, but there is nothing to delete either
        return TopicFence(topic, False, None, None, tuple(s.ident for s in rights))
    return TopicFence(topic, False, None, max(s.ended_at for s in begun), tuple(s.ident for s in begun))


def _rights(ident: str, flow: Flow | Mapping[str, Any], revoked_at: dt.datetime | None) -> list[Source]:
    try:
        starts, ends = parse_stamp(flow["valid_from"]), parse_stamp(flow["valid_until"])
        subscriber, stream = str(flow["subscriber"]), str(flow["stream"])
    except (KeyError, GovernanceError, ValueError):
        return []  # a malformed entry grants nothing, so it keeps nothing open
    retention_s = flow.get("retention_s")
    retention = dt.timedelta(seconds=int(retention_s)) if isinstance(retention_s, int) else None
    roles = sorted({str(role) for tier in flow.get("tiers") or () for role in tier.get("roles") or ()})
    return [Source(ident, delivery_topic(subscriber, role, stream), starts, ends, revoked_at, retention)
            for role in roles]


def _revoked_at(revocation: Mapping[str, Any] | None) -> dt.datetime | None:
    if revocation is None:
        return None
    try:
        return parse_stamp(revocation["at"])
    except (KeyError, GovernanceError, ValueError):
        # A revocation whose time cannot be read still revokes; it counts as ended at the epoch, so the grace
        # runs from the earliest moment rather than never.
        return dt.datetime.fromtimestamp(0, dt.UTC)
