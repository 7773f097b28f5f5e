"""A Kafka-client publisher at a steady pace, straight onto `ingest.<stream>` (demo and tests of live changes)."""

from __future__ import annotations

import threading
import time
from collections.abc import Mapping, Sequence
from typing import Any

from broker.adapters.kafka_access import KafkaAccess
from broker.adapters.kafka_log import KafkaLog
from broker.adapters.registry_http import HttpSchemaRegistry
from broker.config import Settings
from broker.domain.topics import ingest_topic
from broker.security.api_tokens import ServiceTokens
from broker.services.serde import AvroSerializer, SerializationContext


def publish_steadily(settings: Settings, kafka: KafkaAccess, registry_url: str, stream: str,
                     records: Sequence[Mapping[str, Any]], pause_s: float, key_field: str,
                     sent_at: dict[str, float] | None = None, stop: threading.Event | None = None,
                     client_id: str = "accord-steady-publisher") -> None:
    """Encode and publish each record, pausing `pause_s` between them, until done or `stop` is set.

    `sent_at[specimen_id]` records when each send began: a record sent after a change was acknowledged is
    certainly appended after it.
    """
    topic = ingest_topic(stream)
    registry = HttpSchemaRegistry(registry_url, token=ServiceTokens(settings.secrets_dir, client_id))
    encode = AvroSerializer(registry, (settings.schemas_dir / f"{stream}.avsc").read_text())
    log = KafkaLog(kafka, client_id=client_id)
    try:
        for record in records:
            if stop is not None and stop.is_set():
                return
            payload = encode(record, SerializationContext(topic))
            if sent_at is not None:
                sent_at[str(record["specimen_id"])] = time.time()
            log.publish(topic, payload or b"", key=str(record[key_field]).encode())
            time.sleep(pause_s)
    finally:
        log.close()
        registry.close()
