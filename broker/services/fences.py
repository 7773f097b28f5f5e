"""Keeps delivery topics as the policy state says (broker/domain/fences.py): retention on open topics, readers
refused on ended ones at once, and their records deleted after the grace; every change is audited."""

from __future__ import annotations

import datetime as dt
import logging
from collections.abc import Mapping
from typing import Any, Protocol

from broker.domain.control import PolicyState
from broker.domain.disputes import stamp
from broker.domain.fences import TopicFence, fences, sources

log = logging.getLogger(__name__)

FENCE_AUDIT = "delivery-fence"
# However quiet the state, the cluster is checked this often (someone may have changed a topic by hand).
RECHECK = dt.timedelta(seconds=60)


class FenceAdmin(Protocol):
    """The cluster side of fences (Kafka: topic configs, a DENY binding per fenced topic, deleteRecords)."""

    def delivery_topics(self) -> Mapping[str, int | None]:
        """Every delivery topic and its retention.ms (None: the broker's default)."""

    def fenced_topics(self) -> set[str]:
        """The delivery topics whose readers are refused."""

    def set_retention(self, topic: str, retention_ms: int) -> None: ...

    def fence(self, topic: str) -> None:
        """Refuse every reader of `topic`, the pull API's user included (no Kafka super user reads one)."""

    def unfence(self, topic: str) -> None: ...

    def delete_records(self, topic: str) -> int:
        """Delete every record of `topic`; how many there were (0: already empty)."""


class FenceAudit(Protocol):
    def __call__(self, kind: str, record: dict[str, Any]) -> None: ...


class FenceKeeper:
    """Brings the cluster in line with the fences when the state changes, when a date in it passes, and every
    RECHECK otherwise; `reconcile` is safe to repeat."""

    def __init__(self, admin: FenceAdmin, audit: FenceAudit, grace: dt.timedelta) -> None:
        self._admin, self._audit, self._grace = admin, audit, grace
        self._seen_offset = -1
        self._next_due: dt.datetime | None = None
        # When this keeper first found each topic fenced: the grace of a topic the state no longer names (a grant
        # withdrawn) runs from then. Kept in memory, so a restart starts that grace again: records are kept
        # longer, never deleted early.
        self._fenced_since: dict[str, dt.datetime] = {}

    def step(self, state: PolicyState, now: dt.datetime) -> list[dict[str, Any]]:
        """Reconcile if anything may have changed since the last call; the actions taken."""
        if state.offset == self._seen_offset and self._next_due is not None and now < self._next_due:
            return []
        done = self.reconcile(state, now)
        self._seen_offset, self._next_due = state.offset, self._due_after(state, now)
        return done

    def reconcile(self, state: PolicyState, now: dt.datetime) -> list[dict[str, Any]]:
        existing = self._admin.delivery_topics()
        fenced = self._admin.fenced_topics()
        done: list[dict[str, Any]] = []
        for topic in fenced:
            self._fenced_since.setdefault(topic, now)
        for topic, fence in sorted(fences(state, now, existing, self._fenced_since).items()):
            if topic in existing:
                done += self._keep(fence, existing[topic], topic in fenced, now)
            if fence.open:
                self._fenced_since.pop(topic, None)
            else:
                self._fenced_since.setdefault(topic, now)
        for action in done:
            self._audit(FENCE_AUDIT, action)
            log.info("delivery fence: %s %s", action["action"], action["topic"])
        return done

    def _keep(self, fence: TopicFence, retention_ms: int | None, fenced: bool, now: dt.datetime
              ) -> list[dict[str, Any]]:
        done: list[dict[str, Any]] = []

        def record(action: str, **detail: Any) -> None:
            done.append({"topic": fence.topic, "action": action, "because": list(fence.because), "at": stamp(now),
                         **detail})

        if fence.open:
            if fenced:
                self._admin.unfence(fence.topic)
                record("read-restored")
            wanted = None if fence.retention is None else int(fence.retention.total_seconds() * 1000)
            if wanted is not None and wanted != retention_ms:
                self._admin.set_retention(fence.topic, wanted)
                record("retention-set", retention_ms=wanted)
            return done
        if not fenced:
            self._admin.fence(fence.topic)
            record("read-refused", ended_at=stamp(fence.ended_at))
        if fence.delete_due(now, self._grace):
            deleted = self._admin.delete_records(fence.topic)
            if deleted:
                record("records-deleted", records=deleted, ended_at=stamp(fence.ended_at))
        return done

    def _due_after(self, state: PolicyState, now: dt.datetime) -> dt.datetime:
        """The next moment a fence changes by the clock alone (a start, an end, a grace running out)."""
        moments = [now + RECHECK, *(since + self._grace for since in self._fenced_since.values())]
        for source in sources(state):
            moments += [source.starts, source.ends, source.ended_at + self._grace]
        return min(m for m in moments if m > now)
