"""The base of every source: read a batch from the stored position, publish it through Accord's API with an
Idempotency-Key made from (source name, where the batch starts, where it ends), keep its rejects, then store the
new position atomically. A `kill -9` anywhere repeats at most the last batch, with the same key and the same body,
which the API publishes once: nothing is lost or repeated.

A row is a *reject* when the source cannot map or coerce it (kept here with where it came from and why) or when the
API quarantines it (its reasons are the API's). Every reject is written to the state directory's rejects file
(JSON lines) and counted in the summary.

    STATE_DIR/position.json   {"source", "stream", "position", "rejects_bytes", "totals"}
    STATE_DIR/rejects.jsonl   {"where", "reason", "raw", "by"}: one line per rejected row
    STATE_DIR/lock            held while a runner works on the directory

The rejects file only ever grows by whole batches: `rejects_bytes` in the position is its length after the last
stored batch, and a restart cuts off what a killed batch had appended (the batch is then read and appended again).
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import os
import threading
import time
from collections import deque
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Literal, Protocol

from broker.domain.publishing import PublishOutcome as PublishOutcome  # the port speaks it
from broker.errors import AccordError, ConfigError, ServiceError
from connectors.sinks.webhook_state import write_atomically

Position = Mapping[str, Any]  # JSON: what a source needs to read on from where a batch ended
MAX_KEY_NAME = 150
MAX_BACKOFF_S = 30.0
POSITION_FILE, REJECTS_FILE, LOCK_FILE = "position.json", "rejects.jsonl", "lock"


@dataclass(frozen=True)
class Reject:
    """A row kept out of the stream: where it came from (`file:line`, a row key or watermark), why, its raw value,
    and `by` whom: the source (mapping/coercion) or the API (quarantine)."""

    where: str
    reason: str
    raw: Any
    by: Literal["source", "api"] = "source"

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True)
class SourceBatch:
    """Rows read from `start` (None: the beginning) up to `end`: the records to publish (with where each came
    from, in the same order), the rows that could not be mapped, and how many rows were read in all. `done` and
    `total` (optional, in units the source chooses, e.g. bytes of a file) drive a progress bar."""

    records: list[dict[str, Any]]
    wheres: list[str]
    rejects: list[Reject]
    start: Position | None
    end: Position
    rows: int
    done: int | None = None
    total: int | None = None
    label: str = ""  # what is being read (a file's name), for the progress bar


class Source(Protocol):
    """One source of rows for one stream."""

    def batches(self, after: Position | None) -> Iterator[SourceBatch]:
        """The batches after `after` (None: from the beginning), in order; each batch's `start` is the previous
        one's `end`. The same `after` and the same input give the same batches (a repeat has the same body)."""


class Publisher(Protocol):
    """Accord's API as a source publishes to it."""

    def publish(self, stream: str, records: Sequence[Mapping[str, Any]], idempotency_key: str) -> list[PublishOutcome]:
        """Each record's outcome, in order. ServiceError when it cannot be published now (sent again, same key and
        body); another AccordError when the API refused the request (it would be refused again)."""


class Progress(Protocol):
    """Shows how a load goes (a bar on a terminal, nothing otherwise)."""

    def update(self, batch: SourceBatch, totals: Totals) -> None: ...

    def close(self) -> None: ...


class NoProgress:
    def update(self, batch: SourceBatch, totals: Totals) -> None:
        pass

    def close(self) -> None:
        pass


@dataclass
class Totals:
    """Rows of the source since its state directory was made (they survive restarts)."""

    rows: int = 0
    accepted: int = 0
    quarantined: int = 0  # by the API
    rejected: int = 0     # by the source: could not be mapped or coerced

    def add(self, other: Totals) -> None:
        self.rows += other.rows
        self.accepted += other.accepted
        self.quarantined += other.quarantined
        self.rejected += other.rejected

    @property
    def kept_out(self) -> int:
        return self.quarantined + self.rejected


@dataclass
class Summary:
    """What one run did (`run`) and what the state directory holds since it was made (`totals`)."""

    run: Totals = field(default_factory=Totals)
    totals: Totals = field(default_factory=Totals)
    seconds: float = 0.0
    batches: int = 0

    @property
    def rows_per_s(self) -> float:
        return self.run.rows / self.seconds if self.seconds > 0 else 0.0

    def line(self) -> str:
        r = self.run
        return (f"rows read {r.rows}, accepted {r.accepted}, quarantined {r.kept_out} ({r.rejected} by the source, "
                f"{r.quarantined} by the API), {self.seconds:.1f} s, {self.rows_per_s:.0f} rows/s")


def idempotency_key(source: str, start: Position | None, end: Position) -> str:
    """The key of the batch from `start` to `end` of `source`: the same batch always has the same key."""
    canonical = json.dumps([start, end], sort_keys=True, separators=(",", ":"), default=str).encode()
    return f"accord-source:{source[:MAX_KEY_NAME]}:{hashlib.sha256(canonical).hexdigest()[:40]}"


@dataclass(frozen=True)
class Stored:
    position: Position | None
    rejects_bytes: int
    totals: Totals


class SourceState:
    """A source's state directory: its position with its totals, and its rejects; each write whole or not at all."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory

    @property
    def rejects_path(self) -> Path:
        return self.directory / REJECTS_FILE

    @contextlib.contextmanager
    def lock(self) -> Iterator[None]:
        """Held by one runner at a time: a second `accord connect run` on the same state directory stops."""
        self.directory.mkdir(mode=0o700, parents=True, exist_ok=True)
        with open(self.directory / LOCK_FILE, "a+b") as handle:
            try:
                fcntl.flock(handle.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                raise ConfigError(f"another source is running on the state directory {self.directory}") from None
            try:
                yield
            finally:
                fcntl.flock(handle.fileno(), fcntl.LOCK_UN)

    def load(self, source: str, stream: str) -> Stored:
        path = self.directory / POSITION_FILE
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
        except FileNotFoundError:
            return Stored(None, 0, Totals())
        except (OSError, ValueError) as exc:
            raise ConfigError(f"cannot read the source position {path}: {exc}") from exc
        if data.get("source") != source or data.get("stream") != stream:
            raise ConfigError(f"the state directory {self.directory} belongs to source {data.get('source')!r} of "
                              f"stream {data.get('stream')!r}, not {source!r} of {stream!r}: give each source its "
                              "own state_dir")
        return Stored(data.get("position"), int(data.get("rejects_bytes", 0)), Totals(**data.get("totals", {})))

    def cut_rejects(self, length: int) -> None:
        """Drop what a batch that was never stored appended to the rejects file."""
        with contextlib.suppress(FileNotFoundError), open(self.rejects_path, "r+b") as out:
            if os.fstat(out.fileno()).st_size > length:
                out.truncate(length)
                os.fsync(out.fileno())

    def append_rejects(self, rejects: Iterable[Reject]) -> int:
        """Append `rejects` (synced to disk); the file's new length."""
        self.directory.mkdir(mode=0o700, parents=True, exist_ok=True)
        lines = b"".join(json.dumps(r.to_json(), default=str, ensure_ascii=False).encode() + b"\n" for r in rejects)
        # The rows kept here are the publisher's own, identifiers and all: readable by its owner only.
        with os.fdopen(os.open(self.rejects_path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600), "ab") as out:
            if lines:
                out.write(lines)
                out.flush()
                os.fsync(out.fileno())
            return out.tell()

    def store(self, source: str, stream: str, position: Position, rejects_bytes: int, totals: Totals) -> None:
        body = {"source": source, "stream": stream, "position": position, "rejects_bytes": rejects_bytes,
                "totals": asdict(totals)}
        write_atomically(self.directory / POSITION_FILE, json.dumps(body, sort_keys=True).encode())

    def rejects(self, limit: int | None = None, length: int | None = None) -> list[dict[str, Any]]:
        """The rejects stored so far, oldest first (at most `limit`, the newest ones); `length`: only the first
        bytes of the file (those of stored batches, Stored.rejects_bytes)."""
        try:
            with open(self.rejects_path, "rb") as handle:
                data = handle.read() if length is None else handle.read(length)
        except FileNotFoundError:
            return []
        found = [json.loads(line) for line in data.splitlines() if line.strip()]
        return found if limit is None else found[-limit:]


def api_rejects(batch: SourceBatch, outcomes: Sequence[PublishOutcome]) -> list[Reject]:
    """The records of `batch` the API quarantined, as rejects with where each came from."""
    if len(outcomes) != len(batch.records):
        raise ServiceError(f"the API answered {len(outcomes)} outcomes for {len(batch.records)} records")
    return [Reject(where, "; ".join(o.reasons) or "quarantined", record, "api")
            for record, where, o in zip(batch.records, batch.wheres, outcomes, strict=True)
            if o.status == "quarantined"]


def is_idle(batch: SourceBatch) -> bool:
    """A batch of no rows ending where it starts: the source is about to wait for more (a watched directory with
    nothing new); what is in flight is finished and stored first."""
    return batch.rows == 0 and not batch.records and not batch.rejects and batch.start == batch.end


def run_source(name: str, stream: str, source: Source, publisher: Publisher, state: SourceState, *,
               stop: Callable[[], bool] = lambda: False, progress: Progress | None = None,
               wait: Callable[[float], object] = time.sleep,
               on_error: Callable[[Exception], None] = lambda exc: None,
               clock: Callable[[], float] = time.monotonic, in_flight: int = 1) -> Summary:
    """Publish `source` into `stream` from the stored position until it has no more batches or `stop()` is true
    (checked between batches); a batch the API cannot take now is sent again (same key, same body) after a wait
    that doubles up to MAX_BACKOFF_S. The caller holds `state.lock()`.

    Up to `in_flight` batches are POSTed at once; their positions are stored in order, each once every batch
    before it is stored. A batch published whose position was not stored yet (a kill) is read again from the
    stored position, with the same boundaries, so sent again with the same key and body: the API publishes it once.
    """
    shown = progress or NoProgress()
    stored = state.load(name, stream)
    state.cut_rejects(stored.rejects_bytes)
    summary = Summary(totals=stored.totals)
    began = clock()
    halted = threading.Event()

    def halt() -> bool:
        return halted.is_set() or stop()

    def finish(batch: SourceBatch, outcomes: list[PublishOutcome] | None) -> bool:
        if outcomes is None:
            return False  # stopped while the API was away: the batch is read again at the next start
        rejects = [*batch.rejects, *api_rejects(batch, outcomes)]
        length = state.append_rejects(rejects)
        quarantined = sum(o.status == "quarantined" for o in outcomes)
        done = Totals(batch.rows, len(outcomes) - quarantined, quarantined, len(batch.rejects))
        totals = Totals(**asdict(summary.totals))
        totals.add(done)
        state.store(name, stream, batch.end, length, totals)
        summary.totals = totals
        summary.run.add(done)
        summary.batches += 1
        shown.update(batch, summary.run)
        return True

    pending: deque[tuple[SourceBatch, Future[list[PublishOutcome] | None]]] = deque()
    going = True
    try:
        with ThreadPoolExecutor(max_workers=max(in_flight, 1), thread_name_prefix="source-publish") as pool:
            try:
                for batch in source.batches(stored.position):
                    if is_idle(batch):
                        while going and pending:
                            going = finish(pending[0][0], pending.popleft()[1].result())
                    else:
                        pending.append((batch, pool.submit(_publish, name, stream, batch, publisher, halt, wait,
                                                           on_error)))
                        while going and pending and (len(pending) >= in_flight or pending[0][1].done()):
                            going = finish(pending[0][0], pending.popleft()[1].result())
                    if not going or stop():
                        break
                while going and pending:
                    going = finish(pending[0][0], pending.popleft()[1].result())
            finally:
                halted.set()  # what is still in flight gives up its retries; it is sent again at the next start
    finally:
        summary.seconds = clock() - began
        shown.close()
    return summary


def _publish(name: str, stream: str, batch: SourceBatch, publisher: Publisher, stop: Callable[[], bool],
             wait: Callable[[float], object], on_error: Callable[[Exception], None]) -> list[PublishOutcome] | None:
    if not batch.records:
        return []
    key = idempotency_key(name, batch.start, batch.end)
    backoff = 0.5
    while True:
        try:
            return publisher.publish(stream, batch.records, key)
        except ServiceError as exc:
            on_error(exc)
            if stop():
                return None
            wait(backoff)
            backoff = min(backoff * 2, MAX_BACKOFF_S)
        except AccordError:
            raise


class MemoryPublisher:
    """A Publisher in memory for unit tests: records by stream, once per key (a repeated key replays the first
    answer, as the API does); `quarantine(record)` says why a record is quarantined (None: accepted)."""

    def __init__(self, quarantine: Callable[[Mapping[str, Any]], str | None] = lambda record: None) -> None:
        self.published: dict[str, list[dict[str, Any]]] = {}
        self.answers: dict[str, list[PublishOutcome]] = {}
        self.calls = 0
        self._quarantine = quarantine
        self._lock = threading.Lock()

    def publish(self, stream: str, records: Sequence[Mapping[str, Any]], idempotency_key: str) -> list[PublishOutcome]:
        with self._lock:
            return self._publish(stream, records, idempotency_key)

    def _publish(self, stream: str, records: Sequence[Mapping[str, Any]], idempotency_key: str) -> list[PublishOutcome]:
        self.calls += 1
        scoped = f"{stream}/{idempotency_key}"
        if scoped in self.answers:
            return self.answers[scoped]
        outcomes = []
        for record in records:
            reason = self._quarantine(record)
            if reason is None:
                self.published.setdefault(stream, []).append(dict(record))
                outcomes.append(PublishOutcome("accepted"))
            else:
                outcomes.append(PublishOutcome("quarantined", (reason,)))
        self.answers[scoped] = outcomes
        return outcomes


@dataclass(frozen=True)
class Row:
    """One row read: its record (or why it cannot be one), where it came from, and the position just after it."""

    record: dict[str, Any] | Reject
    where: str
    after: Position
    done: int | None = None
    total: int | None = None
    label: str = ""


def batched(rows: Iterable[Row], start: Position | None, max_rows: int, max_bytes: int) -> Iterator[SourceBatch]:
    """`rows` in batches of at most `max_rows` rows and about `max_bytes` of JSON records (a batch ends before the
    record that would pass it, unless it is the batch's first): the same rows always make the same batches."""
    records: list[dict[str, Any]] = []
    wheres: list[str] = []
    rejects: list[Reject] = []
    size, count, last = 0, 0, None
    for row in rows:
        weight = 0 if isinstance(row.record, Reject) else len(json.dumps(row.record, default=str)) + 1
        if last is not None and (count >= max_rows or (records and size + weight > max_bytes)):
            yield SourceBatch(records, wheres, rejects, start, last.after, count, last.done, last.total, last.label)
            start, records, wheres, rejects, size, count = last.after, [], [], [], 0, 0
        if isinstance(row.record, Reject):
            rejects.append(row.record)
        else:
            records.append(row.record)
            wheres.append(row.where)
            size += weight
        count += 1
        last = row
    if last is not None and count:
        yield SourceBatch(records, wheres, rejects, start, last.after, count, last.done, last.total, last.label)
