"""Reads the gates' delivery-batch records on the audit topic for the governance service, so it learns when an
approved access request's first record reached the requester (a committed gate transaction's own audit record)."""

from __future__ import annotations

import datetime as dt
import json
from typing import Any

from kafka import KafkaConsumer, TopicPartition
from kafka.errors import KafkaError

from broker.adapters.kafka_access import KafkaAccess
from broker.domain.audit_records import DELIVERY_BATCH
from broker.domain.topics import AUDIT_TOPIC
from broker.errors import ServiceError

_KEY = DELIVERY_BATCH.encode()


class KafkaDeliveryReports:
    """One consumer over the audit topic (no group), placed at the first record of `since` (by the records'
    timestamps) and reading forward from there. A different `since` (the earliest approval still waiting changed)
    places it again, so a later approval does not make it read the whole trail written in between; a record read
    twice is harmless, since each request's first delivery is recorded once."""

    def __init__(self, kafka: KafkaAccess, topic: str = AUDIT_TOPIC,
                 client_id: str = "accord-governance-deliveries") -> None:
        self._topic = topic
        self._consumer = KafkaConsumer(**kafka.client_options(), client_id=client_id, group_id=None,
                                       enable_auto_commit=False, isolation_level="read_committed")
        self._placed: dt.datetime | None = None

    def read_new(self, since: dt.datetime, timeout_s: float = 0.2, rounds: int = 20) -> list[dict[str, Any]]:
        try:
            if self._placed != since and not self._place(since):
                return []
            reports: list[dict[str, Any]] = []
            for _ in range(rounds):
                batches = self._consumer.poll(timeout_ms=int(timeout_s * 1000), max_records=5000)
                if not batches:
                    break
                reports.extend(_report(m.value) for batch in batches.values() for m in batch if m.key == _KEY)
            return [r for r in reports if r]
        except KafkaError as exc:
            raise ServiceError(f"reading delivery reports on {self._topic} failed: {exc}") from exc

    def _place(self, since: dt.datetime) -> bool:
        partitions = sorted(self._consumer.partitions_for_topic(self._topic) or ())
        if not partitions:
            return False
        found = [TopicPartition(self._topic, p) for p in partitions]
        self._consumer.assign(found)
        # The end first: a batch committed between the two questions is then at or after it, never skipped.
        ends = self._consumer.end_offsets(found)
        at = self._consumer.offsets_for_times({tp: int(since.timestamp() * 1000) for tp in found})
        for tp in found:
            position = at.get(tp)
            self._consumer.seek(tp, int(ends[tp]) if position is None else int(position.offset))
        self._placed = since
        return True

    def close(self) -> None:
        self._consumer.close()


def _report(value: bytes | None) -> dict[str, Any]:
    try:
        body = json.loads(value or b"")
    except ValueError:
        return {}
    return body if isinstance(body, dict) and "at" in body else {}
