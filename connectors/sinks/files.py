"""The file sink: one delivery topic into CSV or Parquet files in a folder that a council's SFTP or file-share sync
picks up. A file is written under a hidden temporary name, fsynced and renamed; then its manifest
(`<file>.manifest.json`: rows, SHA-256, source offsets) is written the same way, and is the commit point: a file
without one is not complete. Reading resumes after the last committed file, so a crash loses and repeats nothing.

Files rotate after `max_rows` rows, after `max_seconds` (also when no record comes), and when the delivered schema's
fields change (a later plan added or dropped one), so each file has one header. Besides the manifests, a hidden
positions file (`.<prefix>.positions.json`) keeps where to resume, so a sync that moves files away loses nothing.
"""

from __future__ import annotations

import contextlib
import json
import re
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, BinaryIO, Protocol

from broker.clock import Clock, system_clock
from broker.domain.receipts import Claim
from broker.errors import ConfigError, ServiceError
from broker.services.serde import SchemaRegistry
from connectors.sinks.base import Decoded, DeliverySource, Sink
from connectors.sinks.file_formats import Format, RowWriter, layout, open_writer

MANIFEST = ".manifest.json"
PARTIAL = ".partial"


class Directory(Protocol):
    """The folder a file sink writes. Its failures (disk full, no permission, no such folder) are ServiceErrors
    naming the path and the reason; `location` names the folder in messages."""

    location: str

    def names(self) -> list[str]:
        """The names of the folder's entries."""

    def read(self, name: str) -> bytes: ...

    def create(self, name: str) -> BinaryIO:
        """A new, empty file to write (replacing one of that name)."""

    def publish(self, file: BinaryIO, temporary: str, name: str) -> tuple[str, int]:
        """Flush, fsync and close `file` (made by `create(temporary)`), rename it to `name` and fsync the folder;
        the SHA-256 (hex) and size of what is now on disk."""

    def write_atomically(self, name: str, data: bytes, temporary: str) -> None:
        """`data` as `name`: written as `temporary`, fsynced, renamed, the folder fsynced."""

    def remove(self, name: str) -> None:
        """Delete `name`; one already gone is not an error."""


def temporary(name: str) -> str:
    """The hidden name a file is written under before it is complete (syncs skip dot files)."""
    return f".{name}{PARTIAL}"


@dataclass(frozen=True)
class Progress:
    """The last committed file's sequence number and where reading resumes after it."""

    sequence: int
    positions: dict[int, int]


@dataclass
class _OpenFile:
    sequence: int
    name: str
    layout: tuple[tuple[str, str], ...]
    handle: BinaryIO
    writer: RowWriter
    opened_at: float
    rows: int = 0
    schema_ids: list[int] = field(default_factory=list)
    offsets: dict[int, list[int]] = field(default_factory=dict)  # partition -> [first, last] delivered offset
    first_source: str = ""  # the first and the last row's accord.source (ingest topic/partition/offset)
    last_source: str = ""


class FileSink(Sink):
    """One delivery topic into numbered files `<prefix>-<sequence>.<csv|parquet>`, each with its manifest."""

    def __init__(self, source: DeliverySource, registry: SchemaRegistry, directory: Directory, prefix: str,
                 kind: Format = "csv", max_rows: int | None = 100_000, max_seconds: float | None = 300.0,
                 clock: Callable[[], float] = time.monotonic, now: Clock = system_clock, **options: Any) -> None:
        super().__init__(source, registry, **options)
        self._unacknowledged: list[Claim] = []  # receipts of batches whose file is not committed yet
        if max_rows is None and max_seconds is None:
            raise ConfigError("a file sink needs max_rows or max_seconds (or both), or a file would never close")
        self.directory, self.prefix, self.kind = directory, prefix, kind
        self.max_rows, self.max_seconds = max_rows, max_seconds
        self._clock, self._now = clock, now
        self._pattern = re.compile(rf"^{re.escape(prefix)}-(\d{{8,}})\.(csv|parquet)({re.escape(MANIFEST)})?$")
        self._open: _OpenFile | None = None
        self._sequence = 0
        self._running: dict[int, int] = {}  # the next offset of each partition, past what is in files or open
        self._saved: dict[int, int] = {}  # the positions the folder holds
        self._layouts: dict[int, tuple[tuple[str, str], ...]] = {}  # by schema id

    @property
    def positions_name(self) -> str:
        return f".{self.prefix}.positions.json"

    def stored_positions(self) -> dict[int, int]:
        return dict(self.progress().positions)

    def start(self) -> None:
        """Forget a file not committed (its records are read again), remove what a crash left half-written, and
        resume after the last committed file."""
        self._discard()
        progress = self.progress()
        self._tidy(progress.sequence)
        self._sequence, self._running, self._saved = progress.sequence, dict(progress.positions), progress.positions
        super().start()

    def step(self, max_records: int = 2000, timeout_s: float = 0.5) -> int:
        moved = super().step(max_records, timeout_s)
        if self._open is not None and self._too_old(self._open):
            self._commit()  # rotation by time, also when nothing new came
        return moved

    def store(self, records: list[Decoded], positions: Mapping[int, int]) -> None:
        done = 0
        while done < len(records):
            first = records[done]
            if self._open is not None and (self._open.layout != self._layout(first) or self._too_old(self._open)):
                self._commit()
            current = self._open or self._begin(first)
            room = len(records) if self.max_rows is None else self.max_rows - current.rows
            chunk = []
            for record in records[done:done + room]:
                if self._layout(record) != current.layout:
                    break
                chunk.append(record)
            self._write(current, chunk)
            done += len(chunk)
            if self.max_rows is not None and current.rows >= self.max_rows:
                self._commit()
        self._running.update(positions)  # also past transaction markers and tombstones
        if self._open is None and self._running != self._saved:
            # Only a transaction's commit marker (or a tombstone) was read past: save that too, or the folder's
            # position would stay one short of the topic's end (a lag of 1 that never goes).
            self._save_positions()

    def close(self) -> None:
        """A clean stop: commit the rows written so far (a crash instead leaves them to be read again)."""
        if self._open is not None:
            self._commit()

    def progress(self) -> Progress:
        """What the folder says: the newer of the positions file and the newest manifest (a crash may have come
        between writing the one and the other; a sync may have moved the files away)."""
        names = self.directory.names()
        best = Progress(0, {})
        if self.positions_name in names:
            best = self._progress_in(self.positions_name)
        manifests = [(int(m.group(1)), n) for n in names if (m := self._pattern.match(n)) and m.group(3)]
        if manifests and max(manifests)[0] > best.sequence:
            best = self._progress_in(max(manifests)[1])
        return best

    def _progress_in(self, name: str) -> Progress:
        try:
            doc = json.loads(self.directory.read(name))
            topic, sequence, positions = doc["topic"], int(doc["sequence"]), doc["positions"]
            progress = Progress(sequence, {int(p): int(n) for p, n in positions.items()})
        except (ValueError, KeyError, TypeError, AttributeError) as exc:
            raise ConfigError(f"{self.directory.location}/{name} is not a file sink's manifest or positions file "
                              f"({exc!r}); move it away or give this delivery another prefix") from exc
        if topic != self.topic:
            raise ConfigError(f"{self.directory.location}/{name} holds {topic!r}, not {self.topic!r}: give this "
                              "delivery another prefix or folder")
        return progress

    def _tidy(self, committed: int) -> None:
        """Remove this delivery's temporaries and any file newer than the last commit that has no manifest (the
        crash came between its rename and its manifest; it is written again)."""
        names = set(self.directory.names())
        for name in sorted(names):
            if self._leftover(name, names, committed):
                self.directory.remove(name)

    def _leftover(self, name: str, names: set[str], committed: int) -> bool:
        if name.startswith(".") and name.endswith(PARTIAL):
            written = name[1:-len(PARTIAL)]
            return bool(self._pattern.match(written)) or written == self.positions_name[1:]
        m = self._pattern.match(name)
        if m is None or m.group(3):
            return False
        return int(m.group(1)) > committed and name + MANIFEST not in names

    def _begin(self, first: Decoded) -> _OpenFile:
        sequence = self._sequence + 1
        name = f"{self.prefix}-{sequence:08d}.{self.kind}"
        handle = self.directory.create(temporary(name))
        try:
            writer = open_writer(self.kind, handle, first.schema)
        except OSError as exc:
            with contextlib.suppress(OSError):
                handle.close()
            raise self._failed(name, exc) from exc
        self._open = _OpenFile(sequence, name, self._layout(first), handle, writer, self._clock())
        return self._open

    def _write(self, current: _OpenFile, chunk: list[Decoded]) -> None:
        try:
            current.writer.write([(r.value, r.source) for r in chunk])
        except OSError as exc:
            raise self._failed(current.name, exc) from exc
        current.rows += len(chunk)
        for r in chunk:
            current.offsets.setdefault(r.partition, [r.offset, r.offset])[1] = r.offset
            self._running[r.partition] = r.offset + 1
            if r.schema_id not in current.schema_ids:
                current.schema_ids.append(r.schema_id)
        current.first_source = current.first_source or chunk[0].source
        current.last_source = chunk[-1].source

    def _commit(self) -> None:
        current, self._open = self._open, None
        assert current is not None
        try:
            current.writer.finish()
        except OSError as exc:
            self._abandon(current)
            raise self._failed(current.name, exc) from exc
        digest, size = self.directory.publish(current.handle, temporary(current.name), current.name)
        manifest = self._manifest(current, digest, size)
        self.directory.write_atomically(current.name + MANIFEST, _json(manifest), temporary(current.name + MANIFEST))
        self._sequence = current.sequence
        # The manifest committed the file; the positions file keeps the position if a sync moves the files away.
        self._save_positions()
        # Every batch stored before this commit is now in committed files: its receipts may go.
        if self._unacknowledged:
            self._owe(self._unacknowledged)
            self._unacknowledged = []
            self.send_receipts()

    def _acknowledge(self, claims: list[Claim]) -> None:
        """A batch is durable only once the files holding it are committed: while one is still open, its receipts
        wait for that commit."""
        if self._open is None:
            super()._acknowledge(claims)
        else:
            self._unacknowledged.extend(claims)

    def _save_positions(self) -> None:
        """The positions file, after the manifest of the file `sequence` (or past markers read since)."""
        saved = dict(self._running)
        self.directory.write_atomically(self.positions_name, _json({
            "topic": self.topic, "sequence": self._sequence,
            "positions": {str(p): n for p, n in sorted(saved.items())}}), temporary(self.positions_name[1:]))
        self._saved = saved

    def _manifest(self, current: _OpenFile, digest: str, size: int) -> dict[str, Any]:
        return {
            "file": current.name, "format": self.kind, "rows": current.rows, "bytes": size, "sha256": digest,
            "topic": self.topic, "sequence": current.sequence, "schema_ids": current.schema_ids,
            "columns": [name for name, _ in current.layout],
            "partitions": {str(p): {"first_offset": first, "last_offset": last}
                           for p, (first, last) in sorted(current.offsets.items())},
            "sources": {"first": current.first_source, "last": current.last_source},
            # Where reading resumes after this file: the next offset of every partition read so far.
            "positions": {str(p): n for p, n in sorted(self._running.items())},
            "written_at": self._now().isoformat().replace("+00:00", "Z"),
        }

    def _layout(self, record: Decoded) -> tuple[tuple[str, str], ...]:
        found = self._layouts.get(record.schema_id)
        if found is None:
            found = self._layouts[record.schema_id] = layout(record.schema)
        return found

    def _too_old(self, current: _OpenFile) -> bool:
        return self.max_seconds is not None and self._clock() - current.opened_at >= self.max_seconds

    def _discard(self) -> None:
        if self._open is not None:
            self._abandon(self._open)
            self._open = None

    @staticmethod
    def _abandon(current: _OpenFile) -> None:
        current.writer.abandon()
        with contextlib.suppress(OSError):  # its temporary is removed by `_tidy`, whatever state it is in
            current.handle.close()

    def _failed(self, name: str, exc: OSError) -> ServiceError:
        return ServiceError(f"cannot write {name} in {self.directory.location}: {exc.strerror or exc} (the file "
                            "is not committed: it is written again)")


def _json(doc: Mapping[str, Any]) -> bytes:
    return (json.dumps(doc, indent=2) + "\n").encode()
