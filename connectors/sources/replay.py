"""A source's last batch, kept on disk before it is published, so that a restart after a `kill -9` publishes
exactly that batch again (same Idempotency-Key, same body) even when the data it was read from has changed since:
a row updated, added late or deleted in a database or behind an API between the crash and the restart would
otherwise make the batch read again differ from the one already published (published twice, or refused 409).

    STATE_DIR/batch.json   {"start", "end", "records", "wheres", "rejects", "rows"}: the batch last handed out
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from broker.errors import ConfigError, ServiceError
from connectors.sinks.webhook_state import write_atomically
from connectors.sources.base import Position, Reject, Source, SourceBatch

BATCH_FILE = "batch.json"


def same_position(a: Position | None, b: Position | None) -> bool:
    return _canonical(a) == _canonical(b)


def _canonical(position: Position | None) -> str:
    return json.dumps(position, sort_keys=True, separators=(",", ":"), default=str)


class Replayed:
    """`source` with its last batch kept in `state_dir`: when asked to read from where that batch started (it was
    handed out, perhaps published, but its end was never stored), the kept batch comes first, unchanged."""

    def __init__(self, source: Source, state_dir: Path) -> None:
        self.source, self.path = source, state_dir / BATCH_FILE

    def batches(self, after: Position | None) -> Iterator[SourceBatch]:
        kept = self._kept()
        if kept is not None and same_position(kept.start, after):
            yield kept
            after = kept.end
        for batch in self.source.batches(after):
            self._keep(batch)
            yield batch

    def _keep(self, batch: SourceBatch) -> None:
        body = {"start": batch.start, "end": batch.end, "records": batch.records, "wheres": batch.wheres,
                "rejects": [r.to_json() for r in batch.rejects], "rows": batch.rows}
        try:
            write_atomically(self.path, json.dumps(body, default=str, ensure_ascii=False).encode())
        except OSError as exc:
            raise ServiceError(f"cannot keep the batch in hand in {self.path}: {exc}") from exc

    def _kept(self) -> SourceBatch | None:
        try:
            data: dict[str, Any] = json.loads(self.path.read_text(encoding="utf-8"))
        except FileNotFoundError:
            return None
        except (OSError, ValueError) as exc:
            raise ConfigError(f"cannot read the batch in hand {self.path}: {exc}") from exc
        try:
            return SourceBatch(list(data["records"]), list(data["wheres"]),
                               [Reject(**r) for r in data["rejects"]], data["start"], data["end"], int(data["rows"]))
        except (KeyError, TypeError) as exc:
            raise ConfigError(f"{self.path} is not a batch this source kept: {exc!r}") from None
