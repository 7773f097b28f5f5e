"""Reading a delivery topic as its subscriber does (read_committed, decoded with the registry's schemas), on the
Kafka login of the subscriber's role."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from broker.adapters.kafka_access import KafkaAccess
from broker.adapters.kafka_admin import end_positions
from broker.adapters.kafka_log import KafkaLog
from broker.adapters.registry_http import HttpSchemaRegistry
from broker.config import Settings
from broker.security.kafka_identities import subscriber_access
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
        self.login = kafka.username or "(no SASL login)"
        self._log = KafkaLog(kafka, client_id=client_id)
        self._registry = HttpSchemaRegistry(registry_url, token=token)
        self._decode = AvroDeserializer(self._registry)

    def close(self) -> None:
        self._log.close()
        self._registry.close()

    def read(self, topic: str, start: int | Mapping[int, int], select: Select, want: int, timeout_s: float = 20.0,
             settle_s: float = 1.5) -> list[Delivered]:
        """Selected records from offset `start` (or per partition, as `ends_now` gives them); waits for `want` of
        them, then `settle_s` longer so that over-delivery would show; returns what it has when `timeout_s` passes."""
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


class RoleReaders:
    """A DeliveryReader per role of a subscriber, each on that role's own Kafka login (`<body>.<role>`), as a
    council's DPH or analysts read: a role's login is refused every other role's topics."""

    def __init__(self, settings: Settings, kafka: KafkaAccess, registry_url: str, token: Callable[[], str | None],
                 client_id: str = "accord-subscriber") -> None:
        self._settings, self._kafka, self._registry_url, self._token = settings, kafka, registry_url, token
        self._client_id = client_id
        self._readers: dict[tuple[str, str], DeliveryReader] = {}

    def __call__(self, subscriber: str, role: str) -> DeliveryReader:
        if (subscriber, role) not in self._readers:
            access = subscriber_access(self._settings, self._kafka, subscriber, role)
            self._readers[subscriber, role] = DeliveryReader(access, self._registry_url, self._token,
                                                             client_id=f"{self._client_id}-{subscriber}-{role}")
        return self._readers[subscriber, role]

    def close(self) -> None:
        for reader in self._readers.values():
            reader.close()
        self._readers.clear()


def ends_now(kafka: KafkaAccess, topics: Iterable[str]) -> dict[str, dict[int, int]]:
    """Each topic's end offset per partition now: where to read what is published next from (a topic with a long
    history is then not read from its beginning)."""
    out: dict[str, dict[int, int]] = {}
    for (topic, partition), end in end_positions(kafka, topics).items():
        out.setdefault(topic, {})[partition] = end
    return out
