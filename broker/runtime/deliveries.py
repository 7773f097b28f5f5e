"""Reading a delivery topic as its subscriber does (read_committed, decoded with the registry's schemas)."""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from broker.adapters.kafka_access import KafkaAccess
from broker.adapters.kafka_log import KafkaLog
from broker.adapters.registry_http import HttpSchemaRegistry
from broker.services.serde import AvroDeserializer, SerializationContext

Select = Callable[[dict[str, Any], dict[str, bytes]], bool]


@dataclass(frozen=True)
class Delivered:
    offset: int
    value: dict[str, Any]
    headers: dict[str, bytes]

    @property
    def source(self) -> bytes:
        """`<ingest topic>/<partition>/<offset>` of the record this delivery was made from."""
        return self.headers.get("accord.source", b"")


class DeliveryReader:
    def __init__(self, kafka: KafkaAccess, registry_url: str, token: Callable[[], str | None],
                 client_id: str = "accord-subscriber") -> None:
        self._log = KafkaLog(kafka, client_id=client_id)
        self._registry = HttpSchemaRegistry(registry_url, token=token)
        self._decode = AvroDeserializer(self._registry)

    def close(self) -> None:
        self._log.close()
        self._registry.close()

    def read(self, topic: str, start: int, select: Select, want: int, timeout_s: float = 20.0,
             settle_s: float = 1.5) -> list[Delivered]:
        """Selected records from offset `start`; waits for `want` of them, then `settle_s` longer so that
        over-delivery would show; returns what it has when `timeout_s` passes."""
        deadline = time.monotonic() + timeout_s
        settled_at: float | None = None
        while True:
            found = []
            for record in self._log.read(topic, max_records=1_000_000, timeout_s=0.5, start_offset=start):
                value = self._decode(record.value, SerializationContext(topic))
                headers = dict(record.headers)
                if value is not None and select(value, headers):
                    found.append(Delivered(record.offset, value, headers))
            now = time.monotonic()
            if len(found) >= want:
                settled_at = settled_at or now
                if now - settled_at >= settle_s:
                    return found
            elif now > deadline:
                return found
