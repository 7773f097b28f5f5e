"""The webhook sink's state directory: the position of each delivery topic and the dead letter (a file per batch
the endpoint did not accept), each file written whole or not at all (a temporary name, fsync, rename, fsync of
the folder), so a crash leaves the old file or the new one, never half of either.

    STATE_DIR/positions/<topic>.json               {"topic": ..., "positions": {"<partition>": next offset}}
    STATE_DIR/dead-letter/<topic>+<partition>+<first>-<last>.json   one batch, with its reason and attempts
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import tempfile
from collections.abc import Iterator, Mapping
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from broker.errors import ConfigError, NotFoundError, ServiceError

POSITIONS = "positions"
DEAD_LETTER = "dead-letter"


@dataclass(frozen=True)
class Attempt:
    """One POST of a batch: when (unix seconds), the HTTP status (None: no answer) and what went wrong."""

    at: float
    status: int | None
    error: str


@dataclass(frozen=True)
class DeadLetter:
    """A batch the endpoint did not accept within the retry policy: sent again by `accord connect redeliver`."""

    id: str  # the batch's Accord-Delivery-Id: topic/partition/first-last
    topic: str
    partition: int
    first_offset: int
    last_offset: int
    reason: str
    attempts: tuple[Attempt, ...]
    batch: Mapping[str, Any]  # the JSON body POSTed (its records), as parsed JSON

    @property
    def records(self) -> int:
        return len(self.batch.get("records", []))

    def to_json(self) -> dict[str, Any]:
        return {**asdict(self), "attempts": [asdict(a) for a in self.attempts], "batch": dict(self.batch)}

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> DeadLetter:
        return cls(str(data["id"]), str(data["topic"]), int(data["partition"]), int(data["first_offset"]),
                   int(data["last_offset"]), str(data["reason"]),
                   tuple(Attempt(float(a["at"]), None if a["status"] is None else int(a["status"]), str(a["error"]))
                         for a in data["attempts"]), dict(data["batch"]))


def write_atomically(path: Path, data: bytes) -> None:
    """`path` holds `data` or what it held before, whatever happens: a crash never leaves a part of a write."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, temporary = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as out:
            out.write(data)
            out.flush()
            os.fsync(out.fileno())
        os.replace(temporary, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(temporary)
        raise
    folder = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(folder)  # the rename itself survives a power cut
    finally:
        os.close(folder)


def letter_file(letter_id: str) -> str:
    # Topic names hold [a-z0-9._-] only, so `+` stands for `/` without ambiguity.
    return letter_id.replace("/", "+") + ".json"


class StateDirectory:
    """Positions and dead letters of one webhook sink config. Writes that fail (a full disk) raise ServiceError, so
    the sink waits and tries again from what is stored; a file that is not ours raises ConfigError naming it."""

    def __init__(self, root: Path) -> None:
        self.root = root

    def positions(self, topic: str) -> dict[int, int]:
        data = self._read(self.root / POSITIONS / f"{topic}.json")
        if data is None:
            return {}
        try:
            return {int(p): int(n) for p, n in data["positions"].items()}
        except (KeyError, AttributeError, TypeError, ValueError) as exc:
            raise ConfigError(f"{self.root / POSITIONS / topic}.json is not a positions file: {exc!r}") from None

    def save_positions(self, topic: str, positions: Mapping[int, int]) -> None:
        body = {"topic": topic, "positions": {str(p): n for p, n in sorted(positions.items())}}
        self._write(self.root / POSITIONS / f"{topic}.json", body)

    def put(self, letter: DeadLetter) -> None:
        self._write(self.root / DEAD_LETTER / letter_file(letter.id), letter.to_json())

    def remove(self, letter_id: str) -> None:
        try:
            (self.root / DEAD_LETTER / letter_file(letter_id)).unlink(missing_ok=True)
        except OSError as exc:
            raise ServiceError(f"cannot remove dead letter {letter_id} from {self.root}: {exc}") from exc

    def dead_letters(self) -> list[DeadLetter]:
        """Every dead-lettered batch, oldest position first per topic and partition."""
        folder = self.root / DEAD_LETTER
        if not folder.is_dir():
            return []
        letters = []
        for path in sorted(folder.glob("*.json")):
            data = self._read(path)
            if data is None:
                continue  # removed by a redelivery since the listing
            try:
                letters.append(DeadLetter.from_json(data))
            except (KeyError, TypeError, ValueError) as exc:
                raise ConfigError(f"{path} is not a dead letter of this sink: {exc!r}") from None
        return sorted(letters, key=lambda d: (d.topic, d.partition, d.first_offset))

    def dead_letter(self, letter_id: str) -> DeadLetter:
        found = [d for d in self.dead_letters() if d.id == letter_id]
        if not found:
            held = ", ".join(d.id for d in self.dead_letters()) or "none"
            raise NotFoundError(f"no dead letter {letter_id!r} in {self.root}; it holds: {held}")
        return found[0]

    @contextlib.contextmanager
    def lock(self) -> Iterator[None]:
        """Held by `accord connect run` while it delivers: two runs on one state directory would both send."""
        try:
            self.root.mkdir(parents=True, exist_ok=True)
            handle = (self.root / ".lock").open("a")
        except OSError as exc:
            raise ConfigError(f"cannot use the webhook state directory {self.root}: {exc}") from exc
        with handle:
            try:
                fcntl.flock(handle.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                raise ConfigError(f"another `accord connect run` is delivering from the state directory {self.root}; "
                                  "stop it first, or give this config a state_dir of its own") from None
            yield

    def _read(self, path: Path) -> dict[str, Any] | None:
        try:
            text = path.read_text(encoding="utf-8")
        except FileNotFoundError:
            return None
        except OSError as exc:
            raise ServiceError(f"cannot read {path}: {exc}") from exc
        try:
            data = json.loads(text)
        except ValueError as exc:
            raise ConfigError(f"{path} is not JSON ({exc}); it is not a file this sink wrote") from None
        if not isinstance(data, dict):
            raise ConfigError(f"{path} is not a JSON object; it is not a file this sink wrote")
        return data

    def _write(self, path: Path, body: Mapping[str, Any]) -> None:
        try:
            write_atomically(path, json.dumps(body, indent=1).encode())
        except OSError as exc:
            raise ServiceError(f"cannot write {path}: {exc}") from exc
