"""The base of every sink: read a delivery topic from the stored position, decode with the registry, store the
records and the new position together (so a crash loses and repeats nothing), and report position and lag.

With a `Receipts` port, each stored batch is then acknowledged: one signed receipt per partition for the offsets it
stored, with the SHA-256 of those records as they were read (broker/domain/receipts.py). A receipt that cannot be
sent now is kept and sent again later, never holding up the data; receipts are idempotent per range.
"""

from __future__ import annotations

import json
import logging
import time
from abc import ABC, abstractmethod
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, Protocol

from broker.domain.messages import Record
from broker.domain.receipts import Claim, claims_for
from broker.domain.wire import header_schema_id
from broker.errors import AccordError, ServiceError
from broker.services.serde import AvroDeserializer, SchemaRegistry, SerializationContext

SOURCE_HEADER = "accord.source"
MAX_OWED_RECEIPTS = 10_000   # beyond this the oldest are given up (their ranges show as not acknowledged)
MAX_RECEIPT_BACKOFF_S = 60.0

log = logging.getLogger(__name__)


class Receipts(Protocol):
    """Where a sink acknowledges what it stored: signs a claim with the body's receipt key and sends it."""

    key_id: str

    def send(self, claim: Claim) -> None:
        """Sign and send one receipt. ServiceError when it cannot be sent now (sent again later); another
        AccordError when Accord refused it (it would be refused again: logged and given up)."""


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
                 wait: Callable[[float], object] = time.sleep, receipts: Receipts | None = None,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.source = source
        self._registry = registry
        self._decode = AvroDeserializer(registry)
        self._schemas: dict[int, Mapping[str, Any]] = {}
        self._stored: dict[int, int] | None = None
        self.last_error = ""
        self.rejected = 0  # records kept aside since start (see rejected_count for the target's total)
        self.failures = 0  # failed steps since start, each retried from the stored position
        self._on_error, self._wait, self._backoff = on_error, wait, 0.0
        self._receipts, self._clock = receipts, clock
        self.owed: list[Claim] = []          # receipts not sent yet, oldest first
        self.receipt_error = ""
        self._receipt_retry_at, self._receipt_backoff = 0.0, 0.0

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
        self.send_receipts()
        records = self.source.poll(max_records, timeout_s)
        positions = self.source.positions()
        assert self._stored is not None
        if not records and all(self._stored.get(p) == n for p, n in positions.items()):
            return 0
        self.store([d for r in records if (d := self._decoded(r)) is not None], positions)
        self._stored = {**self._stored, **positions}
        if self._receipts is not None and records:
            self._acknowledge(claims_for(records, self._receipts.key_id))
        return len(records)

    def _acknowledge(self, claims: list[Claim]) -> None:
        """Receipts for records `store` has made durable. A sink whose `store` is not yet durable (a file until
        its manifest) holds them until it is."""
        self._owe(claims)
        self.send_receipts()

    def _owe(self, claims: list[Claim]) -> None:
        self.owed.extend(claims)
        if len(self.owed) > MAX_OWED_RECEIPTS:
            dropped = self.owed[:len(self.owed) - MAX_OWED_RECEIPTS]
            del self.owed[:len(dropped)]
            log.error("%d receipts of %s could not be sent and are given up; `accord audit receipts` lists their "
                      "ranges as not acknowledged", len(dropped), self.topic)

    def send_receipts(self, now: bool = False) -> None:
        """Send the receipts owed, oldest first; after a failure, not before a backoff (up to a minute) passed,
        unless `now` (a last try as the sink stops)."""
        if self._receipts is None or not self.owed or (not now and self._clock() < self._receipt_retry_at):
            return
        while self.owed:
            claim = self.owed[0]
            try:
                self._receipts.send(claim)
            except ServiceError as exc:
                self.receipt_error = f"receipt for {claim.topic}/{claim.partition} {claim.first_offset}-" \
                                     f"{claim.last_offset} not sent, retried later: {exc}"
                log.warning("%s", self.receipt_error)
                self._receipt_backoff = min(max(self._receipt_backoff * 2, 1.0), MAX_RECEIPT_BACKOFF_S)
                self._receipt_retry_at = self._clock() + self._receipt_backoff
                return
            except AccordError as exc:
                self.receipt_error = f"receipt for {claim.topic}/{claim.partition} {claim.first_offset}-" \
                                     f"{claim.last_offset} refused, given up: {exc}"
                log.error("%s", self.receipt_error)
            self.owed.pop(0)
            self._receipt_backoff = 0.0

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
