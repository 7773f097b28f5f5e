"""History on a new grant: what an agreement's `backfill` asks for, and the log of where each replay stands.

A grant asking for history (`backfill: P28D`, or a date) is replayed once per delivery topic it reaches. The live
gate marks, per ingest partition, the first offset it evaluated under the new plan (a *boundary*); the replay then
delivers the records of [the first offset kept, boundary) whose timestamp is at or after the
start, so that live delivery and replay neither overlap nor leave a gap. Both kinds of record live on one
compacted topic (topics.BACKFILL_TOPIC); progress is written in the same transaction as the records it counts.
"""

from __future__ import annotations

import datetime as dt
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

BOUNDARY = "boundary"
PROGRESS = "progress"
# Weeks, days, hours: history is asked for in whole days or hours (a month has no fixed length).
_DURATION = re.compile(r"P(?=[0-9]|T[0-9])(?:([0-9]+)W)?(?:([0-9]+)D)?(?:T(?=[0-9])([0-9]+)H)?")
_DATE = re.compile(r"[0-9]{4}-[0-9]{2}-[0-9]{2}")


@dataclass(frozen=True)
class HistoryRequest:
    """`backfill:` of an agreement or grant: a span before the moment it comes into force, or a day to start on."""

    text: str
    span: dt.timedelta | None = None
    day: dt.date | None = None

    def since(self, applied: dt.datetime) -> dt.datetime:
        """The first moment whose records are replayed, for a grant the gate applied at `applied`."""
        if self.day is not None:
            return dt.datetime.combine(self.day, dt.time(), tzinfo=dt.UTC)
        assert self.span is not None
        return applied - self.span


def parse_history(value: object) -> HistoryRequest:
    """`P28D`, `P4W`, `PT36H`, `P1DT12H` or a date `2026-11-01`; ValueError saying what to write otherwise."""
    text = value.isoformat() if isinstance(value, dt.date) else value
    if isinstance(text, str):
        if _DATE.fullmatch(text):
            try:
                return HistoryRequest(text, day=dt.date.fromisoformat(text))
            except ValueError:
                pass
        elif (found := _DURATION.fullmatch(text)) and any(found.groups()):
            weeks, days, hours = (int(part or 0) for part in found.groups())
            span = dt.timedelta(weeks=weeks, days=days, hours=hours)
            if span > dt.timedelta(0):
                return HistoryRequest(text, span=span)
    raise ValueError(f"backfill {value!r} is neither an ISO 8601 duration in weeks, days or hours (e.g. P28D, "
                     "PT36H) nor a date (e.g. 2026-11-01); write how far back the subscriber receives history")


@dataclass(frozen=True)
class Job:
    """One replay: the history `request` of grant `grant` delivered to one delivery topic."""

    grant: str
    topic: str  # the delivery topic
    stream: str
    request: HistoryRequest


def boundary_key(job: Job, ingest: str, partition: int, worker: str) -> str:
    # One key per worker: the earliest boundary a worker marked is the one that holds (see Replay.boundary).
    return f"{BOUNDARY}/{job.grant}/{job.topic}/{ingest}/{partition}/{worker}"


def progress_key(job: Job, ingest: str, partition: int) -> str:
    return f"{PROGRESS}/{job.grant}/{job.topic}/{ingest}/{partition}"


def boundary_value(job: Job, ingest: str, partition: int, offset: int, applied: dt.datetime) -> dict[str, Any]:
    since = job.request.since(applied)
    return {"kind": BOUNDARY, "grant": job.grant, "topic": job.topic, "stream": job.stream, "ingest": ingest,
            "partition": partition, "offset": offset, "backfill": job.request.text,
            "applied_ms": _ms(applied), "since_ms": _ms(since)}


@dataclass
class Partition:
    """Where the replay of one job stands on one ingest partition."""

    boundary: int | None = None  # end of the replay (exclusive): the live gate delivers from here
    since_ms: int | None = None
    start: int | None = None  # where reading began (the first offset kept then), fixed once
    next: int | None = None  # next offset to replay
    delivered: int = 0

    @property
    def done(self) -> bool:
        return self.boundary is not None and self.next is not None and self.next >= self.boundary

    def remaining(self) -> tuple[int, int] | None:
        """[next, boundary) still to replay; None while the boundary or start is unknown, or when done."""
        if self.boundary is None or self.start is None or self.done:
            return None
        begin = self.start if self.next is None else self.next
        return (begin, self.boundary) if begin < self.boundary else None


@dataclass
class Replay:
    """What the backfill log says about one job (grant, delivery topic)."""

    grant: str
    topic: str
    stream: str = ""
    backfill: str = ""
    partitions: dict[tuple[str, int], Partition] = field(default_factory=dict)

    def counts(self) -> tuple[int, int]:
        """(records replayed so far, records to replay in all), in ingest offsets; unknown ranges count as 0."""
        done = total = 0
        for part in self.partitions.values():
            if part.boundary is None or part.start is None:
                continue
            total += max(0, part.boundary - part.start)
            done += max(0, min(part.next if part.next is not None else part.start, part.boundary) - part.start)
        return done, total

    @property
    def delivered(self) -> int:
        return sum(part.delivered for part in self.partitions.values())

    @property
    def finished(self) -> bool:
        return bool(self.partitions) and all(part.done for part in self.partitions.values())

    def summary(self) -> dict[str, Any]:
        """What an operator reads: records read of those to read, delivered, and whether it is done."""
        done, total = self.counts()
        return {"grant": self.grant, "topic": self.topic, "backfill": self.backfill, "read": done,
                "to_read": total, "delivered": self.delivered, "finished": self.finished}


class BackfillLog:
    """The backfill topic folded: every job's boundaries and progress. Applying a record twice changes nothing."""

    def __init__(self) -> None:
        self.replays: dict[tuple[str, str], Replay] = {}

    def replay(self, grant: str, topic: str) -> Replay:
        return self.replays.setdefault((grant, topic), Replay(grant, topic))

    def apply_all(self, records: Iterable[tuple[str, Mapping[str, Any] | None]]) -> None:
        for key, value in records:
            self.apply(key, value)

    def apply(self, key: str, value: Mapping[str, Any] | None) -> None:
        if value is None or value.get("kind") not in (BOUNDARY, PROGRESS):
            return
        replay = self.replay(str(value["grant"]), str(value["topic"]))
        replay.stream, replay.backfill = str(value.get("stream", replay.stream)), str(value.get("backfill", ""))
        part = replay.partitions.setdefault((str(value["ingest"]), int(value["partition"])), Partition())
        if value["kind"] == BOUNDARY:
            # The earliest mark holds: a worker that took the partition over later marked a later offset, and
            # the live gate has delivered under the grant since the first.
            offset, since = int(value["offset"]), int(value["since_ms"])
            part.boundary = offset if part.boundary is None else min(part.boundary, offset)
            part.since_ms = since if part.since_ms is None else min(part.since_ms, since)
        elif part.next is None or int(value["next"]) >= part.next:
            # Progress only moves on: a reader held back by another worker's open transaction may meet an older
            # record of a partition after the newer one was applied from memory, and must not go back to it.
            part.start, part.next = int(value["start"]), int(value["next"])
            part.delivered = int(value.get("delivered", 0))


def progress_value(job: Job, ingest: str, partition: int, part: Partition) -> dict[str, Any]:
    return {"kind": PROGRESS, "grant": job.grant, "topic": job.topic, "stream": job.stream, "ingest": ingest,
            "partition": partition, "backfill": job.request.text, "start": part.start, "next": part.next,
            "end": part.boundary, "delivered": part.delivered}


def bar(done: int, total: int, width: int = 30) -> str:
    """`[#########.....]  45%` for the CLI."""
    share = 1.0 if total <= 0 else min(1.0, done / total)
    filled = round(share * width)
    return f"[{'#' * filled}{'.' * (width - filled)}] {share:4.0%}"


def _ms(moment: dt.datetime) -> int:
    return int(moment.timestamp() * 1000)
