"""A source's latest batches, each kept on disk before it is published, so that a restart after a `kill -9`
publishes exactly those batches again (same Idempotency-Keys, same bodies) even when the data they were read from
has changed since: a row updated, added late or deleted in a database or behind an API between the crash and the
restart would otherwise make a batch read again differ from the one already published (published twice, or
refused 409).

    STATE_DIR/batches/<sequence>.json   {"start", "end", "records", "wheres", "rejects", "rows"}

The runner stores positions in order with up to `in_flight` batches published ahead of the stored one, so the batch
starting at the stored position is among the last `in_flight` handed out: that many (and one more) are kept.
"""

from __future__ import annotations

import contextlib
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from broker.errors import ConfigError, ServiceError
from connectors.sinks.webhook_state import write_atomically
from connectors.sources.base import Position, Reject, Source, SourceBatch, is_idle

BATCHES = "batches"


def same_position(a: Position | None, b: Position | None) -> bool:
    return _canonical(a) == _canonical(b)


def _canonical(position: Position | None) -> str:
    return json.dumps(position, sort_keys=True, separators=(",", ":"), default=str)


class Replayed:
    """`source` with its last `window` batches kept in `state_dir`: asked to read from where one of them started
    (handed out, perhaps published, but its end never stored), the kept ones from there come first, unchanged."""

    def __init__(self, source: Source, state_dir: Path, window: int = 4) -> None:
        self.source, self.folder, self.window = source, state_dir / BATCHES, window + 1

    def batches(self, after: Position | None) -> Iterator[SourceBatch]:
        kept = self._kept()
        sequence = kept[-1][0] if kept else 0
        chain = [batch for _, batch in kept]
        starts = [i for i, batch in enumerate(chain) if same_position(batch.start, after)]
        if starts:
            for batch in chain[starts[-1]:]:
                if not same_position(batch.start, after):
                    break  # not the batch read after the previous one: read afresh from here
                yield batch
                after = batch.end
        for batch in self.source.batches(after):
            if not is_idle(batch):
                sequence += 1
                self._keep(sequence, batch)
            yield batch

    def _keep(self, sequence: int, batch: SourceBatch) -> None:
        body = {"start": batch.start, "end": batch.end, "records": batch.records, "wheres": batch.wheres,
                "rejects": [r.to_json() for r in batch.rejects], "rows": batch.rows}
        try:
            self.folder.mkdir(mode=0o700, parents=True, exist_ok=True)  # the publisher's rows: its owner's only
            write_atomically(self.folder / f"{sequence:012d}.json",
                             json.dumps(body, default=str, ensure_ascii=False).encode())
            for old in self.folder.glob("*.json"):
                if old.stem.isdigit() and int(old.stem) <= sequence - self.window:
                    with contextlib.suppress(FileNotFoundError):
                        old.unlink()
        except OSError as exc:
            raise ServiceError(f"cannot keep the batch in hand in {self.folder}: {exc}") from exc

    def _kept(self) -> list[tuple[int, SourceBatch]]:
        if not self.folder.is_dir():
            return []
        found = []
        for path in sorted(self.folder.glob("*.json")):
            if not path.stem.isdigit():
                continue
            try:
                data: dict[str, Any] = json.loads(path.read_text(encoding="utf-8"))
                found.append((int(path.stem), SourceBatch(
                    list(data["records"]), list(data["wheres"]), [Reject(**r) for r in data["rejects"]],
                    data["start"], data["end"], int(data["rows"]))))
            except (OSError, ValueError, KeyError, TypeError) as exc:
                raise ConfigError(f"{path} is not a batch this source kept: {exc!r}") from None
        return sorted(found, key=lambda item: item[0])
