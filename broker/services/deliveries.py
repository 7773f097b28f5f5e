"""A subscriber reading its own deliveries over HTTP (the pull API and its live events): pages of committed records
after a signed cursor, decoded with each record's writer schema from the registry.

The topic is always `deliver.<body>.<role>.<stream>` for the caller's verified body and role: nothing the caller
sends names a topic, so nothing outside its own plan can be read. The access check is the one the fence keeper acts
on (broker/domain/fences.py), asked for every page, so a revoked or expired right refuses at once with its reason
(and the fence's DENY binding on Kafka refuses the read as well, once the keeper has put it on).
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from typing import Any, Protocol

from broker.domain.cursors import CursorCodec, Positions, advanced
from broker.domain.fences import Access
from broker.domain.messages import Record
from broker.domain.topics import delivery_topic, value_subject
from broker.errors import DeliveryRefused, RegistryError
from broker.services.serde import AvroDeserializer, SchemaRegistry, SerializationContext

MAX_LIMIT = 10_000
DEFAULT_LIMIT = 1_000
NOT_FOUND = 404


class DeliveryLog(Protocol):
    """Where delivery topics are read (Kafka, read_committed)."""

    def partitions(self, topic: str) -> list[int] | None:
        """The topic's partitions; None if there is no such topic (nothing delivered to it yet)."""

    def ends(self, topic: str) -> dict[int, int]:
        """Each partition's committed end (the offset the next committed record will have); {} if no topic."""

    def read(self, topic: str, positions: Positions, limit: int, wait_s: float) -> list[Record]:
        """Committed records from `positions` (a partition not named: from its first record), at most `limit`, each
        partition's in offset order. Returns once it has read what was committed when asked; when that is nothing,
        waits up to `wait_s` for a first record. DeliveryRefused when the log refuses the read (a fenced topic)."""


@dataclass(frozen=True)
class Delivered:
    """One record as handed over."""

    partition: int
    offset: int
    value: dict[str, Any]


@dataclass(frozen=True)
class Page:
    records: list[Delivered]
    next_cursor: str
    topic: str
    start: Positions  # where the page began: each record's own cursor is worked out from it

    def fields(self, schema_fields: list[str]) -> list[str]:
        """CSV columns: the projected schema's fields, then any field only an older writer schema had."""
        seen = dict.fromkeys(schema_fields)
        for record in self.records:
            seen.update(dict.fromkeys(record.value))
        return list(seen)


class Deliveries:
    """The pull API's use case; `access(topic)` says whether the topic's right is in force now."""

    def __init__(self, log: DeliveryLog, registry: SchemaRegistry, access: Callable[[str], Access],
                 cursors: CursorCodec) -> None:
        self._log, self._registry, self._access, self._cursors = log, registry, access, cursors
        self._decode = AvroDeserializer(registry)

    def topic(self, body: str, role: str, stream: str) -> str:
        return delivery_topic(body, role, stream)

    def page(self, body: str, role: str, stream: str, after: str | None, limit: int = DEFAULT_LIMIT,
             wait_s: float = 0.0) -> Page:
        """The caller's records after `after` (None: from the first one kept), at most `limit`.

        BadCursor for a cursor not issued for this caller's topic; DeliveryRefused with the reason when the right
        has ended. `wait_s`: how long to wait for a first record when there is none yet (the live events' poll).
        """
        topic = self.topic(body, role, stream)
        positions = {} if after is None else self._cursors.decode(topic, after)
        self._open_topic(body, role, stream)
        if self._log.partitions(topic) is None:
            return Page([], self._cursors.encode(topic, positions), topic, positions)
        records = self._log.read(topic, positions, max(1, min(limit, MAX_LIMIT)), wait_s)
        start, delivered = positions, []
        for record in records:
            positions = advanced(positions, record.partition, record.offset)
            value = self._decode(record.value, SerializationContext(topic))
            if value is not None:  # a tombstone moves the cursor on and hands nothing over
                delivered.append(Delivered(record.partition, record.offset, value))
        return Page(delivered, self._cursors.encode(topic, positions), topic, start)

    def with_cursors(self, page: Page) -> Iterator[tuple[Delivered, str]]:
        """Each record of `page` with the cursor that resumes just after it (an event's id). Signed only when asked:
        a page read needs the last cursor alone, and signing one per record would cost it a third of its time."""
        positions = page.start
        for record in page.records:
            positions = advanced(positions, record.partition, record.offset)
            yield record, self._cursors.encode(page.topic, positions)

    def latest(self, body: str, role: str, stream: str, count: int) -> Page:
        """The caller's newest records, at most `count` per partition (the console's preview); DeliveryRefused as
        `page`."""
        topic = self._open_topic(body, role, stream)
        if self._log.partitions(topic) is None:
            return Page([], self._cursors.encode(topic, {}), topic, {})
        start = {p: max(0, end - count) for p, end in self._log.ends(topic).items()}
        return self.page(body, role, stream, self._cursors.encode(topic, start), max(1, count * len(start)))

    def from_now(self, body: str, role: str, stream: str) -> Page:
        """An empty page whose cursor is the end of the caller's topic now: the start of a live tail."""
        topic = self._open_topic(body, role, stream)
        ends = self._log.ends(topic)
        return Page([], self._cursors.encode(topic, ends), topic, ends)

    def _open_topic(self, body: str, role: str, stream: str) -> str:
        topic = self.topic(body, role, stream)
        access = self._access(topic)
        if not access.open:
            raise DeliveryRefused(f"{body} as {role} may no longer read {stream}: {access.reason}")
        return topic

    def schema_fields(self, topic: str) -> list[str]:
        """The field names of the topic's projected schema (its latest registered version); [] before the first."""
        try:
            schema = self._registry.latest(value_subject(topic)).schema
        except RegistryError as exc:
            if exc.status == NOT_FOUND:
                return []
            raise
        parsed = json.loads(schema)
        return [str(f["name"]) for f in parsed.get("fields", [])] if isinstance(parsed, Mapping) else []
