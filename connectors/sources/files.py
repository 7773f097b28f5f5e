"""The files source: CSV, JSON lines and Parquet, one file or a directory of them, each file published once.

Position (JSON, stored by run_source after each batch):

    {"done": {"<name>": "<size>:<sha256>", ...},      the ledger: every file published to its end
     "file": "<name>" | null, "fingerprint": "<size>:<sha256>", "row": rows consumed, "line": last line consumed}

so a restart (also after `kill -9`) goes on in the file in hand from the row after the last stored batch, and
never takes a file of the ledger again. A file is named by its path relative to the watched directory (a single
file: its own name). A file whose name and content (size and SHA-256) are in the ledger is skipped; a file of the
same name with other content is a new file and is published. Published files are left where they are.

A watched directory (`watch: true`) is polled every `poll_s`; a file is taken once its size and modification time
have stayed the same for `settle_s` (so one still being copied in waits), and never while its name ends in
`.partial` (a writer can write `x.csv.partial` and rename it to `x.csv` when complete). Names starting with `.`
are ignored. Files are taken in name order.

Where a row came from is `<name>:<line>` (CSV: the line its record starts on, the header being line 1; JSON lines:
its line) or `<name>:row <n>` (Parquet: 1 for the first row).
"""

from __future__ import annotations

import csv
import hashlib
import io
import json
import time
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from broker.errors import AccordError
from connectors.sources.base import Position, Reject, Row, SourceBatch, batched
from connectors.sources.coercion import CoercionError, Mapper

Format = Literal["csv", "jsonl", "parquet"]
SUFFIXES: dict[str, Format] = {".csv": "csv", ".jsonl": "jsonl", ".ndjson": "jsonl", ".parquet": "parquet"}
PARTIAL = ".partial"
MAX_RAW = 2000  # characters of a rejected row kept in the rejects file


class FileSourceError(AccordError):
    """A file cannot be read as configured (its format, its encoding), or changed while it was being published."""


def fingerprint(path: Path) -> str:
    digest = hashlib.sha256()
    size = 0
    with open(path, "rb") as handle:
        while chunk := handle.read(1 << 20):
            digest.update(chunk)
            size += len(chunk)
    return f"{size}:{digest.hexdigest()}"


@dataclass(frozen=True)
class Settled:
    size: int
    mtime_ns: int
    since: float


class FileSource:
    """Rows of the files at `path` (a file, or a directory of files matching `pattern`) mapped to the stream."""

    def __init__(self, path: Path, mapper: Mapper, *, format: Format | None = None, pattern: str = "*",
                 watch: bool = False, poll_s: float = 2.0, settle_s: float = 2.0, delimiter: str = ",",
                 encoding: str = "utf-8-sig", max_rows: int = 2000, max_bytes: int = 900_000,
                 stop: Callable[[], bool] = lambda: False, wait: Callable[[float], object] = time.sleep,
                 clock: Callable[[], float] = time.monotonic,
                 on_warning: Callable[[str], None] = lambda message: None) -> None:
        self.path, self._mapper, self._format, self._pattern = path, mapper, format, pattern
        self._watch, self._poll_s, self._settle_s = watch, poll_s, settle_s
        self._delimiter, self._encoding = delimiter, encoding
        self._max_rows, self._max_bytes = max_rows, max_bytes
        self._stop, self._wait, self._clock, self._on_warning = stop, wait, clock, on_warning
        self._seen: dict[str, Settled] = {}
        self._marks: dict[str, tuple[int, int, str]] = {}

    # -- which files, in which order ------------------------------------------------------------------------------

    def _candidates(self) -> list[tuple[str, Path]]:
        if not self.path.is_dir():
            if not self.path.exists():
                raise FileSourceError(f"{self.path} does not exist")
            return [(self.path.name, self.path)]
        found = []
        for item in sorted(self.path.rglob(self._pattern)):
            name = item.relative_to(self.path).as_posix()
            if (item.is_file() and not name.endswith(PARTIAL) and not any(p.startswith(".") for p in
                                                                          item.relative_to(self.path).parts)):
                found.append((name, item))
        return found

    def _settled(self, name: str, path: Path) -> bool:
        if not self._watch:
            return True
        try:
            stat = path.stat()
        except FileNotFoundError:
            return False
        now = self._clock()
        seen = self._seen.get(name)
        if seen is None or (seen.size, seen.mtime_ns) != (stat.st_size, stat.st_mtime_ns):
            self._seen[name] = Settled(stat.st_size, stat.st_mtime_ns, now)
            return self._settle_s == 0
        return now - seen.since >= self._settle_s

    def _fingerprint(self, name: str, path: Path) -> str:
        """The file's size and SHA-256, worked out again only when its size or modification time changed."""
        stat = path.stat()
        known = self._marks.get(name)
        if known is not None and known[:2] == (stat.st_size, stat.st_mtime_ns):
            return known[2]
        mark = fingerprint(path)
        self._marks[name] = (stat.st_size, stat.st_mtime_ns, mark)
        return mark

    def batches(self, after: Position | None) -> Iterator[SourceBatch]:
        position: dict[str, Any] = {"done": {}, "file": None} if after is None else json.loads(json.dumps(after))
        busy = False
        while True:
            taken = False
            for name, path in self._candidates():
                if self._stop():
                    return
                current = position.get("file") == name
                if not current and (position.get("file") is not None or not self._settled(name, path)):
                    continue
                mark = self._fingerprint(name, path)
                if not current and position["done"].get(name) == mark:
                    continue
                if current and position.get("fingerprint") != mark:
                    raise FileSourceError(
                        f"{path} changed while it was being published (row {position.get('row')} of it is stored): "
                        "a file must not change once taken; restore it, or start a new state_dir to publish it anew")
                taken = busy = True
                for batch in self._file_batches(name, path, mark, position):
                    yield batch
                    position = dict(batch.end)
                break  # the directory again: a file earlier in name order may have arrived
            if position.get("file") is not None:
                file = position["file"]
                raise FileSourceError(f"{file}, being published (row {position.get('row')} is stored), is gone from "
                                      f"{self.path}: put it back to publish the rest of it")
            if not taken:
                if not self._watch:
                    return
                if busy:  # what is in flight is stored before the wait
                    yield SourceBatch([], [], [], position, position, 0, label="waiting")
                    busy = False
                waited = 0.0
                while waited < self._poll_s and not self._stop():
                    step = min(0.2, self._poll_s - waited)
                    self._wait(step)
                    waited += step
                if self._stop():
                    return

    def _file_batches(self, name: str, path: Path, mark: str, position: Mapping[str, Any]) -> Iterator[SourceBatch]:
        """The file's batches; the last one's end puts the file in the ledger."""
        done = dict(position["done"])
        skip = int(position.get("row", 0)) if position.get("file") == name else 0
        start: Position = dict(position)
        previous: SourceBatch | None = None
        for batch in batched(self._rows(name, path, mark, done, skip), start, self._max_rows, self._max_bytes):
            if previous is not None:
                yield previous
            previous = batch
        finished = {"done": {**done, name: mark}, "file": None}
        if previous is None:  # nothing (more) to read: the ledger takes the file
            yield SourceBatch([], [], [], start, finished, 0, label=name)
        else:
            yield SourceBatch(previous.records, previous.wheres, previous.rejects, previous.start, finished,
                              previous.rows, previous.total, previous.total, name)

    # -- reading the rows of one file ----------------------------------------------------------------------------

    def _rows(self, name: str, path: Path, mark: str, done: dict[str, str], skip: int) -> Iterator[Row]:
        kind = self._format or SUFFIXES.get(path.suffix.lower())
        if kind is None:
            raise FileSourceError(f"{path}: cannot tell its format from the name; set `files.format` "
                                  f"({', '.join(sorted(set(SUFFIXES.values())))})")
        read = {"csv": self._csv, "jsonl": self._jsonl, "parquet": self._parquet}[kind]
        record = self._mapper.record
        for number, line, raw, done_bytes, total in read(path, skip):
            where = f"{name}:{line}" if kind != "parquet" else f"{name}:row {line}"
            after = {"done": done, "file": name, "fingerprint": mark, "row": number, "line": line}
            if isinstance(raw, Reject):
                yield Row(Reject(where, raw.reason, raw.raw), where, after, done_bytes, total, name)
                continue
            try:
                yield Row(record(raw), where, after, done_bytes, total, name)
            except CoercionError as exc:
                yield Row(Reject(where, str(exc), _kept(raw)), where, after, done_bytes, total, name)

    def _csv(self, path: Path, skip: int) -> Iterator[tuple[int, int, Mapping[str, Any] | Reject, int, int]]:
        total = path.stat().st_size
        with open(path, "rb") as binary, io.TextIOWrapper(binary, encoding=self._encoding, newline="") as text:
            reader = csv.reader(text, delimiter=self._delimiter)
            try:
                header = [h.strip() for h in next(reader)]
            except StopIteration:
                return
            except (UnicodeDecodeError, csv.Error) as exc:
                raise FileSourceError(f"{path}:1: cannot read the header: {exc}") from exc
            missing = [c for c in self._mapper.required_columns() if c not in header]
            if missing and skip == 0:
                self._on_warning(f"{path}:1: the header has no column {', '.join(map(repr, missing))}, which the "
                                 "stream requires: each row will be quarantined (map fields to columns with "
                                 "`columns: {field: column}`)")
            width, number, line, read = len(header), 0, reader.line_num, 0
            while True:
                first = line + 1
                try:
                    values = next(reader)
                except StopIteration:
                    return
                except UnicodeDecodeError as exc:
                    raise FileSourceError(f"{path}: after line {line}: not {self._encoding} text ({exc}); set "
                                          "`files.encoding`") from exc
                except csv.Error as exc:
                    raise FileSourceError(f"{path}:{first}: {exc}") from exc
                line = reader.line_num
                if not values:
                    continue  # a blank line
                number += 1
                if number <= skip:
                    continue
                if len(values) != width:
                    raw: Mapping[str, Any] | Reject = Reject(
                        "", f"{len(values)} values where the header has {width} columns",
                        _kept(self._delimiter.join(values)))
                else:
                    raw = dict(zip(header, values, strict=True))
                if number % 256 == 0:
                    read = binary.tell()  # for the progress bar: what the reader has taken in, roughly
                yield number, first, raw, read, total

    def _jsonl(self, path: Path, skip: int) -> Iterator[tuple[int, int, Mapping[str, Any] | Reject, int, int]]:
        total = path.stat().st_size
        number = 0
        with open(path, "rb") as binary:
            for line, data in enumerate(binary, start=1):
                if not data.strip():
                    continue
                number += 1
                if number <= skip:
                    continue
                raw: Mapping[str, Any] | Reject
                try:
                    value = json.loads(data)
                    raw = value if isinstance(value, dict) else Reject("", "the line is not a JSON object",
                                                                       _kept(value))
                except ValueError as exc:
                    raw = Reject("", f"not JSON: {exc}", _kept(data.decode("utf-8", "replace")))
                yield number, line, raw, binary.tell(), total

    def _parquet(self, path: Path, skip: int) -> Iterator[tuple[int, int, Mapping[str, Any] | Reject, int, int]]:
        import pyarrow as pa
        import pyarrow.parquet as pq

        try:
            table = pq.ParquetFile(path)
        except (pa.ArrowException, OSError) as exc:
            raise FileSourceError(f"{path}: not a Parquet file ({exc})") from exc
        with table:
            total = table.metadata.num_rows
            number = 0
            for chunk in table.iter_batches(batch_size=max(self._max_rows, 1024)):
                if number + chunk.num_rows <= skip:
                    number += chunk.num_rows
                    continue
                for row in chunk.to_pylist():
                    number += 1
                    if number > skip:
                        yield number, number, row, number, total


def _kept(raw: Any) -> Any:
    """A rejected row as the rejects file keeps it: whole unless it is very long."""
    text = raw if isinstance(raw, str) else json.dumps(raw, default=str, ensure_ascii=False)
    if len(text) <= MAX_RAW:
        return raw
    return {"excerpt": text[:MAX_RAW], "characters": len(text)}
