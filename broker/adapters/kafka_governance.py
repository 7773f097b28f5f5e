"""The governance topic on Kafka: disputes, approvals, comments and declarations as JSON events, the source of truth.

One partition keeps one order. Each command's events go in one Kafka transaction together with their copies on
the audit topic, so a crash never leaves half a command; a fixed transactional id fences a second writer.
"""

from __future__ import annotations

import contextlib
import json
import time
from collections.abc import Mapping, Sequence
from typing import Any

from kafka import KafkaConsumer, TopicPartition
from kafka.errors import KafkaError

from broker.adapters.kafka_access import KafkaAccess
from broker.adapters.kafka_admin import TRAIL_TOPIC_CONFIG, create_topics
from broker.adapters.kafka_offsets import end_offset
from broker.adapters.kafka_transactions import transactional_producer
from broker.domain.topics import AUDIT_TOPIC, GOVERNANCE_TOPIC
from broker.errors import ServiceError


def ensure_governance_topics(kafka: KafkaAccess, topic: str = GOVERNANCE_TOPIC, audit_topic: str = AUDIT_TOPIC) -> None:
    for name in (topic, audit_topic):
        create_topics(kafka, [name], partitions=1, configs=TRAIL_TOPIC_CONFIG)


class KafkaGovernanceLog:
    """Appends events transactionally and reads them back in order, read_committed."""

    def __init__(self, kafka: KafkaAccess, topic: str = GOVERNANCE_TOPIC, audit_topic: str = AUDIT_TOPIC,
                 transactional_id: str = "accord-governance") -> None:
        self._topic, self._audit = topic, audit_topic
        self._tp = TopicPartition(topic, 0)
        self._consumer = KafkaConsumer(**kafka.client_options(), client_id=f"{transactional_id}-reader",
                                       group_id=None, enable_auto_commit=False, isolation_level="read_committed")
        self._consumer.assign([self._tp])
        self._consumer.seek_to_beginning(self._tp)
        self._producer = transactional_producer(kafka, transactional_id, "governance writer")

    def append(self, events: Sequence[Mapping[str, Any]]) -> list[int]:
        """Append `events` atomically; their offsets on the governance topic."""
        try:
            self._producer.begin_transaction()
            futures = []
            for event in events:
                case = event.get("dispute") or (event.get("data") or {}).get("misroute")
                key = str(case or event.get("type")).encode()
                payload = json.dumps(event, sort_keys=True).encode()
                futures.append(self._producer.send(self._topic, key=key, value=payload))
                self._producer.send(self._audit, key=b"governance", value=payload)
            self._producer.commit_transaction()
            return [int(f.get(timeout=30).offset) for f in futures]
        except KafkaError as exc:
            self._abort()
            raise ServiceError(f"appending to {self._topic} failed, nothing was written: {exc}") from exc

    def _abort(self) -> None:
        with contextlib.suppress(KafkaError):
            self._producer.abort_transaction()

    def read_new(self, timeout_s: float = 10.0) -> list[tuple[int, dict[str, Any]]]:
        """Every committed event not read yet, up to the topic's current end."""
        try:
            end = end_offset(self._consumer, self._tp)
            events: list[tuple[int, dict[str, Any]]] = []
            deadline = time.monotonic() + timeout_s
            while self._consumer.position(self._tp) < end:
                if time.monotonic() > deadline:
                    raise ServiceError(f"{self._topic} was not read to offset {end} within {timeout_s:.0f}s")
                for batch in self._consumer.poll(timeout_ms=50).values():
                    events.extend((m.offset, json.loads(m.value)) for m in batch if m.value is not None)
            return events
        except KafkaError as exc:
            raise ServiceError(f"reading {self._topic} failed: {exc}") from exc

    def close(self) -> None:
        self._consumer.close()
        self._producer.close()


class GovernanceFeed:
    """Reads the governance log, never writes it (the console's transparency figures): every committed event in
    order, from the first."""

    def __init__(self, kafka: KafkaAccess, topic: str = GOVERNANCE_TOPIC, client_id: str = "accord-console") -> None:
        self._topic, self._tp = topic, TopicPartition(topic, 0)
        self._consumer = KafkaConsumer(**kafka.client_options(), client_id=client_id, group_id=None,
                                       enable_auto_commit=False, isolation_level="read_committed")
        self._consumer.assign([self._tp])
        self._consumer.seek_to_beginning(self._tp)

    def read_new(self, timeout_s: float = 10.0) -> list[dict[str, Any]]:
        """Every committed event not read yet, up to the topic's current end."""
        try:
            end = end_offset(self._consumer, self._tp)
            events: list[dict[str, Any]] = []
            deadline = time.monotonic() + timeout_s
            while self._consumer.position(self._tp) < end:
                if time.monotonic() > deadline:
                    raise ServiceError(f"{self._topic} was not read to offset {end} within {timeout_s:.0f}s")
                for batch in self._consumer.poll(timeout_ms=50).values():
                    events.extend(json.loads(m.value) for m in batch if m.value is not None)
            return events
        except KafkaError as exc:
            raise ServiceError(f"reading {self._topic} failed: {exc}") from exc

    def close(self) -> None:
        self._consumer.close()


def ensure_audit_topic(kafka: KafkaAccess, audit_topic: str = AUDIT_TOPIC) -> None:
    """The raw audit topic alone, for writers that are not the governance service (gates, policy changes)."""
    create_topics(kafka, [audit_topic], partitions=1, configs=TRAIL_TOPIC_CONFIG)
