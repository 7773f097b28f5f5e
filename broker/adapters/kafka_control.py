"""The control topic on Kafka: compacted, one partition, JSON values; read to its end before every gate batch."""

from __future__ import annotations

import json
import logging
import threading
import time
from typing import Any

from kafka import KafkaConsumer, KafkaProducer, TopicPartition
from kafka.errors import KafkaError

from broker.adapters.kafka_access import KafkaAccess
from broker.adapters.kafka_admin import create_topics
from broker.adapters.kafka_governance import ensure_audit_topic
from broker.domain.control import PolicyState, apply
from broker.domain.messages import ControlRecord
from broker.domain.topics import CONTROL_TOPIC, STATUS_TOPIC
from broker.errors import PolicyEngineError, ServiceError

log = logging.getLogger(__name__)



def ensure_control_topics(kafka: KafkaAccess) -> None:
    create_topics(kafka, [CONTROL_TOPIC], partitions=1,
                  configs={"cleanup.policy": "compact", "min.insync.replicas": "1"})
    create_topics(kafka, [STATUS_TOPIC], partitions=1, configs={"retention.ms": str(24 * 3600 * 1000)})
    ensure_audit_topic(kafka)  # every control change is audited there, by whoever announces it


class ControlReader:
    """Reads the control topic from the beginning; `end_offset()` is one ListOffsets round trip."""

    def __init__(self, kafka: KafkaAccess, client_id: str = "accord-control", topic: str = CONTROL_TOPIC) -> None:
        self._tp = TopicPartition(topic, 0)
        self._consumer = KafkaConsumer(**kafka.client_options(), client_id=client_id, group_id=None,
                                       enable_auto_commit=False, isolation_level="read_committed")
        self._consumer.assign([self._tp])
        self._consumer.seek_to_beginning(self._tp)

    def end_offset(self) -> int:
        try:
            return int(self._consumer.end_offsets([self._tp])[self._tp])
        except KafkaError as exc:
            raise ServiceError(f"could not read the end of {self._tp.topic}: {exc}") from exc

    def read_to(self, end: int, timeout_s: float = 10.0) -> list[ControlRecord]:
        """Every record before offset `end` not read yet; all or nothing: if the end is not reached in time (or Kafka
        fails) the reader goes back to where it was, so the next call returns these records again. (Dropping them
        would lose a revocation for good: the caller's state would move past it.)"""
        records: list[ControlRecord] = []
        deadline = time.monotonic() + timeout_s
        start = self._consumer.position(self._tp)
        try:
            while self._consumer.position(self._tp) < end:
                if time.monotonic() > deadline:
                    raise ServiceError(f"{self._tp.topic} was not read to offset {end} within {timeout_s:.0f}s")
                for batch in self._consumer.poll(timeout_ms=50).values():
                    records.extend(
                        ControlRecord(m.offset, m.key.decode() if m.key is not None else "",
                                      None if m.value is None else json.loads(m.value), int(m.timestamp))
                        for m in batch)
        except KafkaError as exc:
            self._consumer.seek(self._tp, start)
            raise ServiceError(f"reading {self._tp.topic} failed: {exc}") from exc
        except ServiceError:
            self._consumer.seek(self._tp, start)
            raise
        return records

    def close(self) -> None:
        self._consumer.close()


class ControlWriter:
    """Appends control (or status) records with an idempotent producer; returns (offset, timestamp_ms)."""

    def __init__(self, kafka: KafkaAccess, client_id: str = "accord-control-writer") -> None:
        self._producer = KafkaProducer(**kafka.client_options(), client_id=client_id, acks="all",
                                       enable_idempotence=True, linger_ms=0)

    def append(self, key: str, value: dict[str, Any] | None, topic: str = CONTROL_TOPIC,
               timeout_s: float = 30.0) -> tuple[int, int]:
        payload = None if value is None else json.dumps(value, sort_keys=True).encode()
        try:
            meta = self._producer.send(topic, key=key.encode(), value=payload).get(timeout=timeout_s)
        except KafkaError as exc:
            raise ServiceError(f"writing {key!r} to {topic} failed: {exc}") from exc
        return int(meta.offset), int(meta.timestamp)

    def close(self) -> None:
        self._producer.close()


class ControlView:
    """The control topic folded into a PolicyState, read to its end each time `current()` is asked."""

    def __init__(self, kafka: KafkaAccess, client_id: str = "accord-control-view") -> None:
        self._reader = ControlReader(kafka, client_id=client_id)
        self._state = PolicyState()
        self._lock = threading.Lock()

    def current(self) -> PolicyState:
        with self._lock:
            for record in self._reader.read_to(self._reader.end_offset()):
                try:
                    self._state = apply(self._state, record.offset, record.key, record.value)
                except PolicyEngineError as exc:
                    log.error("control record skipped: %s", exc)
            return self._state

    def close(self) -> None:
        self._reader.close()
