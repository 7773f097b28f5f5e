"""The base of every sink: read a delivery topic from the stored position, decode with the registry, store the
records and the new position together (so a crash loses and repeats nothing), and report position and lag."""

from __future__ import annotations

import json
import time
from abc import ABC, abstractmethod
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, Protocol

from broker.domain.messages import Record
from broker.domain.wire import header_schema_id
from broker.errors import ServiceError
from broker.services.serde import AvroDeserializer, SchemaRegistry, SerializationContext

SOURCE_HEADER = "accord.source"


class DeliverySource(Protocol):
    """One topic's committed records (read_committed), read from positions the sink chooses, never a group's."""

    topic: str

    def seek(self, positions: Mapping[int, int]) -> None:
        """Read each partition from its position (a partition not named: from its beginning)."""

    def poll(self, max_records: int, timeout_s: float) -> list[Record]:
        """The next committed records, in offset order per partition."""

    def positions(self) -> dict[int, int]:
        """The next offset to read of each partition: past the records returned and any transaction markers."""

    def end_offsets(self) -> dict[int, int]:
        """The last stable offset of each partition (what a read_committed reader can reach now)."""

    def close(self) -> None: ...


@dataclass(frozen=True)
class Decoded:
    """One delivered record, decoded, with the Avro schema (parsed JSON) it was written with."""

    partition: int
    offset: int
    schema_id: int
    schema: Mapping[str, Any]
    value: dict[str, Any]
    source: str  # `accord.source`: the ingest topic/partition/offset the delivery was made from


@dataclass(frozen=True)
class PartitionStatus:
    topic: str
    partition: int
    stored: int
    end: int

    @property
    def lag(self) -> int:
        return max(self.end - self.stored, 0)


class Sink(ABC):
    """Moves one delivery topic into a target; a subclass says how the target stores rows and positions."""

    def __init__(self, source: DeliverySource, registry: SchemaRegistry,
                 on_error: Callable[[Exception], None] = lambda exc: None,
                 wait: Callable[[float], object] = time.sleep) -> None:
        self.source = source
        self._registry = registry
        self._decode = AvroDeserializer(registry)
        self._schemas: dict[int, Mapping[str, Any]] = {}
        self._stored: dict[int, int] | None = None
        self.last_error = ""
        self.rejected = 0  # records kept aside since start (see rejected_count for the target's total)
        self.failures = 0  # failed steps since start, each retried from the stored position
        self._on_error, self._wait, self._backoff = on_error, wait, 0.0

    @property
    def topic(self) -> str:
        return self.source.topic

    @abstractmethod
    def stored_positions(self) -> dict[int, int]:
        """The next offset of each partition, as last stored in the target."""

    @abstractmethod
    def store(self, records: list[Decoded], positions: Mapping[int, int]) -> None:
        """Store `records` and `positions` at once: both or neither survive a crash."""

    def rejected_count(self) -> int:
        """Records of this topic kept aside (with their reason) because the target cannot hold them."""
        return 0

    def start(self) -> None:
        self._stored = self.stored_positions()
        self.source.seek(self._stored)

    def step(self, max_records: int = 2000, timeout_s: float = 0.5) -> int:
        """Move one batch (or only a position past transaction markers); the number of records stored."""
        if self._stored is None:
            self.start()
        records = self.source.poll(max_records, timeout_s)
        positions = self.source.positions()
        assert self._stored is not None
        if not records and all(self._stored.get(p) == n for p, n in positions.items()):
            return 0
        self.store([d for r in records if (d := self._decoded(r)) is not None], positions)
        self._stored = {**self._stored, **positions}
        return len(records)

    def step_or_wait(self, max_records: int = 2000) -> int:
        """`step`, but a failing target or Kafka is waited for with backoff (up to 30 s) and read again from the
        stored position, so what failed is neither lost nor skipped; the number of records stored."""
        try:
            moved = self.step(max_records)
        except ServiceError as exc:
            self.last_error = str(exc)
            self.failures += 1
            self._on_error(exc)
            self._stored = None  # seek again to what the target holds
            self._backoff = min(max(self._backoff * 2, 0.5), 30.0)
            self._wait(self._backoff)
            return 0
        self._backoff = 0.0
        return moved

    def run(self, stop: Callable[[], bool], max_records: int = 2000) -> None:
        while not stop():
            self.step_or_wait(max_records)

    def status(self) -> list[PartitionStatus]:
        stored = self.stored_positions()
        return [PartitionStatus(self.topic, p, stored.get(p, 0), end)
                for p, end in sorted(self.source.end_offsets().items())]

    def lag_now(self) -> list[PartitionStatus]:
        """`status` from what this process has stored (no query of the target): for metrics, between batches."""
        stored = self._stored or {}
        return [PartitionStatus(self.topic, p, stored.get(p, 0), end)
                for p, end in sorted(self.source.end_offsets().items())]

    def _decoded(self, record: Record) -> Decoded | None:
        if record.value is None:
            return None  # delivery topics carry no tombstones; a stray one deletes nothing
        value = self._decode(record.value, SerializationContext(record.topic))
        assert value is not None
        schema_id = header_schema_id(record.value)
        return Decoded(record.partition, record.offset, schema_id, self._schema(schema_id), value,
                       dict(record.headers).get(SOURCE_HEADER, b"").decode(errors="replace"))

    def _schema(self, schema_id: int) -> Mapping[str, Any]:
        schema = self._schemas.get(schema_id)
        if schema is None:
            schema = self._schemas[schema_id] = json.loads(self._registry.schema_by_id(schema_id))
        return schema
