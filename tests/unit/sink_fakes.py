"""In-memory fakes of a sink's ports: a delivery topic's partition, a database that keeps what it was told, a folder
for the file sink, a webhook receiver; and the signature check README.md gives webhook receivers, as written there."""

from __future__ import annotations

import errno
import hashlib
import io
import os
import re
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any, BinaryIO

from broker.domain.messages import Record
from broker.errors import ServiceError


class FakeSource:
    """One partition of committed records; `positions` moves past what `poll` returned."""

    def __init__(self, topic: str, records: list[Record]) -> None:
        self.topic, self.records, self.next = topic, records, 0
        self.seeks: list[dict[int, int]] = []

    def seek(self, positions: Mapping[int, int]) -> None:
        self.seeks.append(dict(positions))
        self.next = positions.get(0, 0)

    def poll(self, max_records: int, timeout_s: float) -> list[Record]:
        batch = [r for r in self.records if r.offset >= self.next][:max_records]
        if batch:
            self.next = batch[-1].offset + 1
        return batch

    def positions(self) -> dict[int, int]:
        return {0: self.next}

    def end_offsets(self) -> dict[int, int]:
        return {0: (self.records[-1].offset + 1) if self.records else 0}

    def close(self) -> None:
        pass


class FakeDatabase:
    """Keeps each transaction's statements; answers the sink's few queries from what was applied."""

    def __init__(self) -> None:
        self.transactions: list[list[tuple[str, list[list[Any]]]]] = []
        self.fail_next = False

    def query(self, sql: str, params: Sequence[Any] = ()) -> list[tuple[Any, ...]]:
        applied = [s for t in self.transactions for s, _ in t]
        if "to_regclass" in sql:
            table = str(params[0]).strip('"')
            return [(any(s.startswith(f"CREATE TABLE IF NOT EXISTS {table} ") for s in applied),)]
        if "FROM accord_rejected" in sql:
            return [(sum(len([r for r in rows if (r[0], r[1]) == tuple(params)]) for t in self.transactions
                         for s, rows in t if s.startswith("INSERT INTO accord_rejected")),)]
        if "information_schema" in sql:
            return []
        if "accord_positions" in sql:
            last: dict[int, int] = {}
            for t in self.transactions:
                for s, rows in t:
                    if s.startswith("INSERT INTO accord_positions"):
                        last |= {int(r[2]): int(r[3]) for r in rows if (r[0], r[1]) == tuple(params)}
            return sorted(last.items())
        raise AssertionError(sql)

    def apply(self, statements: Sequence[tuple[str, Sequence[Sequence[Any]]]]) -> None:
        if self.fail_next:
            self.fail_next = False
            raise ServiceError("PostgreSQL write failed (nothing of it was stored): connection refused")
        self.transactions.append([(s, [list(r) for r in rows]) for s, rows in statements])


class FakeEndpoint:
    """A webhook receiver that answers each POST with the next scripted answer (an HTTP status, or a ServiceError
    for no answer at all), then 200; it keeps every POST's body and headers."""

    def __init__(self, answers: Sequence[int | ServiceError] = ()) -> None:
        self.answers = list(answers)
        self.posts: list[tuple[bytes, dict[str, str]]] = []

    def post(self, body: bytes, headers: Mapping[str, str]) -> tuple[int, str]:
        self.posts.append((body, dict(headers)))
        answer = self.answers.pop(0) if self.answers else 200
        if isinstance(answer, ServiceError):
            raise answer
        return answer, "" if 200 <= answer < 300 else f"receiver says {answer}"


def readme_check() -> Callable[[str, str, bytes], bool]:
    """`accord_signature_ok(secret, header, body)` from README.md's "Into your webhook", run as written."""
    readme = Path(__file__).resolve().parents[2] / "README.md"
    text = readme.read_text(encoding="utf-8").split("### Into your webhook", 1)[1]
    snippet = re.search(r"```python\n(.*?)```", text, re.S)
    assert snippet is not None, "README.md's webhook section has no Python snippet"
    scope: dict[str, Any] = {}
    exec(compile(snippet.group(1), str(readme), "exec"), scope)
    check: Callable[[str, str, bytes], bool] = scope["accord_signature_ok"]
    return check


class FakeFile(io.BytesIO):
    """A file being written in a FakeDirectory; a write while the directory is full fails as a full disk does."""

    def __init__(self, directory: FakeDirectory) -> None:
        super().__init__()
        self.directory = directory

    def write(self, data: Any) -> int:
        if self.directory.full:
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        return super().write(data)


class FakeDirectory:
    """A folder in memory: complete files in `files`, files being written in `writing` (a crash leaves them)."""

    location = "/srv/drop"

    def __init__(self) -> None:
        self.files: dict[str, bytes] = {}
        self.writing: dict[str, FakeFile] = {}
        self.full = False

    def names(self) -> list[str]:
        return sorted([*self.files, *self.writing])

    def read(self, name: str) -> bytes:
        return self.files[name]

    def create(self, name: str) -> BinaryIO:
        self.writing[name] = FakeFile(self)
        return self.writing[name]

    def publish(self, file: BinaryIO, temporary: str, name: str) -> tuple[str, int]:
        self._check(name)
        assert self.writing.pop(temporary) is file
        data = file.getvalue() if isinstance(file, io.BytesIO) else b""
        file.close()
        self.files[name] = data
        return hashlib.sha256(data).hexdigest(), len(data)

    def write_atomically(self, name: str, data: bytes, temporary: str) -> None:
        self._check(name)
        self.files[name] = data

    def remove(self, name: str) -> None:
        self.files.pop(name, None)
        self.writing.pop(name, None)

    def _check(self, name: str) -> None:
        if self.full:
            raise ServiceError(f"cannot write {self.location}/{name}: No space left on device (errno 28)")
