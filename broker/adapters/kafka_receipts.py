"""The API service's side of receipts on Kafka: the receipt keys bodies registered (folded from the governance log,
read_committed, read to its end on every lookup so a key registered a moment ago is known) and the audit topic an
accepted receipt is appended to."""

from __future__ import annotations

import contextlib
import json
import threading
import time
from collections.abc import Mapping
from typing import Any

from kafka import KafkaConsumer, TopicPartition
from kafka.errors import KafkaError

from broker.adapters.kafka_access import KafkaAccess
from broker.adapters.kafka_control import ControlWriter
from broker.domain.receipt_ledger import ReceiptKey, fold_key_event
from broker.domain.receipts import DELIVERY_RECEIPT
from broker.domain.topics import AUDIT_TOPIC, GOVERNANCE_TOPIC
from broker.errors import ServiceError


class KafkaReceiptKeys:
    def __init__(self, kafka: KafkaAccess, topic: str = GOVERNANCE_TOPIC, client_id: str = "accord-api-receipt-keys",
                 timeout_s: float = 10.0) -> None:
        self._kafka, self._topic, self._client_id, self._timeout_s = kafka, topic, client_id, timeout_s
        self._tp = TopicPartition(topic, 0)
        self._consumer: KafkaConsumer | None = None
        self._keys: dict[str, ReceiptKey] = {}
        self._lock = threading.Lock()

    def get(self, key_id: str) -> ReceiptKey | None:
        with self._lock:
            self._read_to_end()
            return self._keys.get(key_id)

    def _read_to_end(self) -> None:
        try:
            consumer = self._open()
            end = int(consumer.end_offsets([self._tp])[self._tp])
            deadline = time.monotonic() + self._timeout_s
            while consumer.position(self._tp) < end:
                if time.monotonic() > deadline:
                    raise ServiceError(f"{self._topic} was not read to offset {end} within {self._timeout_s:.0f}s")
                for batch in consumer.poll(timeout_ms=100).values():
                    for message in batch:
                        if message.value is not None:
                            with contextlib.suppress(KeyError, TypeError, ValueError):  # not a key event of ours
                                self._keys = fold_key_event(self._keys, _event(message.value))
        except KafkaError as exc:
            raise ServiceError(f"reading the receipt keys on {self._topic} failed: {exc}") from exc

    def _open(self) -> KafkaConsumer:
        if self._consumer is None:
            consumer = KafkaConsumer(**self._kafka.client_options(), client_id=self._client_id, group_id=None,
                                     enable_auto_commit=False, isolation_level="read_committed")
            consumer.assign([self._tp])
            consumer.seek_to_beginning(self._tp)
            self._consumer = consumer
        return self._consumer

    def close(self) -> None:
        if self._consumer is not None:
            self._consumer.close()
            self._consumer = None


def _event(value: bytes) -> Mapping[str, Any]:
    try:
        event = json.loads(value)
    except ValueError:
        return {}
    return event if isinstance(event, dict) else {}


class KafkaReceiptAudit:
    """Appends accepted receipts to the audit topic (acks=all, idempotent), keyed `delivery-receipt`."""

    def __init__(self, kafka: KafkaAccess, topic: str = AUDIT_TOPIC) -> None:
        self._writer = ControlWriter(kafka, client_id="accord-api-receipts")
        self._topic = topic

    def append(self, record: Mapping[str, Any]) -> None:
        self._writer.append(DELIVERY_RECEIPT, dict(record), topic=self._topic)

    def close(self) -> None:
        self._writer.close()
