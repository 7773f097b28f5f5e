"""History on a new grant, run by the gate: mark where live delivery under the grant began, then replay the ingest
records before that mark (from the start the grant asks for) to that one delivery topic, a chunk per gate batch.

Everything a step writes (marks, replayed records, progress) goes in the gate's batch transaction, so a crash
resumes from the last committed progress and delivers nothing twice; only the gate worker that owns an ingest
partition in the consumer group replays it, and its commit is fenced by the group like the live batch's.
"""

from __future__ import annotations

import datetime as dt
import logging
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Any, Protocol

from broker.domain.backfill import (
    BackfillLog,
    Job,
    Partition,
    boundary_key,
    boundary_value,
    parse_history,
    progress_key,
    progress_value,
)
from broker.domain.control import PolicyState
from broker.domain.messages import Record
from broker.domain.topics import ingest_topic
from broker.services.delivery_table import Delivery

log = logging.getLogger(__name__)

CHUNK = 500  # ingest records replayed per gate batch at most: the live batch waits for them
IDLE = dt.timedelta(seconds=1)


class HistorySource(Protocol):
    """Committed ingest records by offset (adapters.kafka_history.HistoryReader)."""

    def start_offset(self, topic: str, partition: int, since_ms: int) -> int:
        """An offset at or before the first record stamped at or after `since_ms`."""
    def read(self, topic: str, partition: int, start: int, end: int, max_records: int
             ) -> tuple[list[Record], int]: ...


class BackfillLogSource(Protocol):
    """The backfill topic, read on from where the last call stopped (adapters.kafka_history.BackfillLogReader)."""

    def read_new(self) -> list[tuple[str, dict[str, Any] | None]]: ...


class BackfillCounters(Protocol):
    def replayed(self, topic: str, delivered: int, read: int) -> None: ...
    def remaining(self, topic: str, records: int) -> None: ...


class _NoCounters:
    def replayed(self, topic: str, delivered: int, read: int) -> None:
        pass

    def remaining(self, topic: str, records: int) -> None:
        pass


@dataclass(frozen=True)
class Chunk:
    """Ingest records of one partition to replay to one job's delivery topic, and the progress after them."""

    job: Job
    ingest: str
    partition: int
    since_ms: int
    records: list[Record]
    after: Partition  # the partition's progress once these records are replayed (delivered not yet counted)


@dataclass
class Work:
    """What one gate step writes for history: marks (key, value) and at most one chunk."""

    marks: list[tuple[str, dict[str, Any]]] = field(default_factory=list)
    marked: list[Job] = field(default_factory=list)
    chunk: Chunk | None = None
    delivered: int = 0


def jobs_of(state: PolicyState, deliveries: Mapping[str, Sequence[Delivery]]) -> list[Job]:
    """A job per delivery whose plan comes from an agreement or grant asking for history."""
    # As the policies read them: a grant is known by its `id`, and a catalog agreement of that id wins.
    agreements = {**{str(g.get("id", key)): g for key, g in state.grants.items()},
                  **((state.catalog or {}).get("agreements") or {})}
    jobs = []
    for stream, bound in sorted(deliveries.items()):
        for delivery in bound:
            for grant in delivery.plan.agreements:
                terms = agreements.get(grant) or {}
                asked = terms.get("backfill")
                if asked:
                    try:
                        jobs.append(Job(grant, delivery.topic, stream, parse_history(asked)))
                    except ValueError as exc:  # the catalog checks it; a grant from elsewhere might not be
                        log.error("%s: %s; no history replayed", grant, exc)
    return jobs


class Backfiller:
    """The gate worker's side of history on a new grant; `prepare` before a batch, `committed` after it."""

    def __init__(self, history: HistorySource, backfill_log: BackfillLogSource, worker: str,
                 clock: Callable[[], dt.datetime], counters: BackfillCounters | None = None,
                 chunk: int = CHUNK) -> None:
        self._history, self._log_source, self._worker, self._clock = history, backfill_log, worker, clock
        self._counters = counters or _NoCounters()
        self._chunk = chunk
        self.log = BackfillLog()
        self._marked: set[tuple[str, str]] = set()  # jobs this worker has marked boundaries for
        self._idle_until: dt.datetime | None = None
        # Replaced whole after each commit, so that another thread (the gate's /health) reads it safely.
        self.progress_seen: tuple[dict[str, Any], ...] = ()

    def prepare(self, state: PolicyState, deliveries: Mapping[str, Sequence[Delivery]], batch: Sequence[Record],
                positions: Callable[[], Mapping[tuple[str, int], int]]) -> Work | None:
        """What this step writes besides the live batch; None when no grant asks for history (nothing is read)."""
        jobs = jobs_of(state, deliveries)
        if not jobs:
            return None
        work = Work()
        unmarked = [job for job in jobs if (job.grant, job.topic) not in self._marked]
        now = self._clock()
        # Once nothing is left to replay, the log is looked at once a second, not before every batch.
        reading = self._idle_until is None or now >= self._idle_until
        if not unmarked and not reading:
            return None
        assigned = positions()
        for job in unmarked:
            self._mark(job, batch, assigned, work)
        if work.marks or reading:
            self.log.apply_all(self._log_source.read_new())
            work.chunk = self._next_chunk(jobs, assigned)
            self._idle_until = None if work.chunk or work.marks else now + IDLE
        return work if work.marks or work.chunk else None

    def _mark(self, job: Job, batch: Sequence[Record], assigned: Mapping[tuple[str, int], int], work: Work) -> None:
        """The first offset of each owned partition evaluated under the job's plan: this batch's first record of
        the partition, else the position the next batch starts from."""
        ingest = ingest_topic(job.stream)
        owned = {p: offset for (topic, p), offset in assigned.items() if topic == ingest}
        if not owned:
            return  # no partition yet: marked in a later step, before any record of the stream is evaluated
        for record in reversed(batch):
            if record.topic == ingest:
                owned[record.partition] = record.offset
        now = self._clock()
        for partition, offset in sorted(owned.items()):
            work.marks.append((boundary_key(job, ingest, partition, self._worker),
                               boundary_value(job, ingest, partition, offset, now)))
        work.marked.append(job)

    def _next_chunk(self, jobs: list[Job], assigned: Mapping[tuple[str, int], int]) -> Chunk | None:
        for job in jobs:
            replay = self.log.replays.get((job.grant, job.topic))
            if replay is None:
                continue
            for (ingest, partition), part in sorted(replay.partitions.items()):
                since = part.since_ms
                if (ingest, partition) not in assigned or part.boundary is None or since is None:
                    continue
                if part.start is None:
                    start = min(self._history.start_offset(ingest, partition, since), part.boundary)
                    part = replace(part, start=start, next=start)
                span = part.remaining()
                if span is None:
                    if replay.partitions[(ingest, partition)].next is None:
                        # Nothing before the mark: say so once, so the status reads done.
                        return Chunk(job, ingest, partition, since, [], replace(part, next=part.boundary))
                    continue
                records, following = self._history.read(ingest, partition, span[0], span[1], self._chunk)
                return Chunk(job, ingest, partition, since, records, replace(part, next=following))
        return None

    def progress(self, work: Work) -> tuple[str, dict[str, Any]] | None:
        """The progress record of the step's chunk, with what it delivered, written in the same transaction."""
        chunk = work.chunk
        if chunk is None:
            return None
        after = replace(chunk.after, delivered=chunk.after.delivered + work.delivered)
        return progress_key(chunk.job, chunk.ingest, chunk.partition), progress_value(chunk.job, chunk.ingest,
                                                                                   chunk.partition, after)

    def committed(self, work: Work) -> None:
        """The step's transaction committed: its marks hold and its progress is the partition's."""
        self._marked.update((job.grant, job.topic) for job in work.marked)
        self.log.apply_all(work.marks)
        written = self.progress(work)
        if written is not None and work.chunk is not None:
            replay = self.log.replay(work.chunk.job.grant, work.chunk.job.topic)
            was_finished = replay.finished
            self.log.apply(*written)
            done, total = replay.counts()
            self._counters.replayed(work.chunk.job.topic, work.delivered, len(work.chunk.records))
            self._counters.remaining(work.chunk.job.topic, total - done)
            if replay.finished and not was_finished:
                log.info("history of %s for %s replayed: %d records delivered", work.chunk.job.grant,
                         work.chunk.job.topic, replay.delivered)
        self.progress_seen = tuple(replay.summary() for _, replay in sorted(self.log.replays.items()))
