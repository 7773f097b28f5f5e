"""Reading the past for history on a new grant: ingest records by offset range and timestamp, and the backfill log
(boundaries and progress, domain/backfill.py) on its compacted topic."""

from __future__ import annotations

import json
import logging
import time
from typing import Any

from kafka import KafkaConsumer, TopicPartition
from kafka.errors import KafkaError

from broker.adapters.kafka_access import KafkaAccess
from broker.adapters.kafka_admin import create_topics
from broker.adapters.kafka_offsets import end_offset
from broker.domain.messages import Record
from broker.domain.topics import BACKFILL_TOPIC
from broker.errors import ServiceError

log = logging.getLogger(__name__)

# Compacted: a progress record replaces the one before it under its key; boundaries are one key per worker.
BACKFILL_TOPIC_CONFIG = {"cleanup.policy": "compact"}


def ensure_backfill_topic(kafka: KafkaAccess) -> None:
    create_topics(kafka, [BACKFILL_TOPIC], partitions=1, configs=BACKFILL_TOPIC_CONFIG)


class HistoryReader:
    """Committed ingest records of one partition at a time, by offset; where a moment's records begin."""

    def __init__(self, kafka: KafkaAccess, client_id: str = "accord-history") -> None:
        self._consumer = KafkaConsumer(**kafka.client_options(), client_id=client_id, group_id=None,
                                       enable_auto_commit=False, isolation_level="read_committed",
                                       max_poll_records=500)
        self._assigned: TopicPartition | None = None

    def start_offset(self, topic: str, partition: int, since_ms: int) -> int:
        """Where the records stamped at or after `since_ms` may begin: the first offset the partition keeps.

        Timestamps are the publishers' (CreateTime) and need not rise with the offset, so Kafka's lookup by time
        (its sparse time index) is no bound to trust: in the integration test it once began a week of records late.
        The replay reads from the first record kept and delivers only those stamped at or after the start.
        """
        tp = TopicPartition(topic, partition)
        try:
            return int(self._consumer.beginning_offsets([tp])[tp])
        except KafkaError as exc:
            raise ServiceError(f"could not find where {topic}/{partition} begins: {exc}") from exc

    def read(self, topic: str, partition: int, start: int, end: int, max_records: int,
             timeout_s: float = 10.0) -> tuple[list[Record], int]:
        """Committed records of [start, end), at most `max_records`, and the offset to read from next (past
        aborted records and transaction markers, never past `end`)."""
        tp = TopicPartition(topic, partition)
        if self._assigned != tp:
            self._consumer.assign([tp])
            self._assigned = tp
            self._consumer.seek(tp, start)
        elif self._consumer.position(tp) != start:
            self._consumer.seek(tp, start)  # else read on: the records fetched ahead are the ones wanted
        records: list[Record] = []
        deadline = time.monotonic() + timeout_s
        try:
            while not records and self._consumer.position(tp) < end:
                if time.monotonic() > deadline:
                    raise ServiceError(f"{topic}/{partition} was not read from offset {start} within "
                                       f"{timeout_s:.0f}s")
                for batch in self._consumer.poll(timeout_ms=100, max_records=max_records).values():
                    records.extend(Record(m.topic, m.partition, m.offset, m.key, m.value,
                                          tuple(m.headers or ()), int(m.timestamp))
                                   for m in batch if m.offset < end)
            position = int(self._consumer.position(tp))
        except KafkaError as exc:
            raise ServiceError(f"reading {topic}/{partition} failed: {exc}") from exc
        # poll returned at most max_records, so the position is just past the last record returned (or past the
        # markers and aborted records it skipped); records at or beyond `end` were left out above.
        return records, min(end, position)

    def close(self) -> None:
        self._consumer.close()


class BackfillLogReader:
    """The backfill topic from its beginning, read on in each call (committed records only)."""

    def __init__(self, kafka: KafkaAccess, client_id: str = "accord-backfill-log") -> None:
        self._tp = TopicPartition(BACKFILL_TOPIC, 0)
        self._consumer = KafkaConsumer(**kafka.client_options(), client_id=client_id, group_id=None,
                                       enable_auto_commit=False, isolation_level="read_committed")
        self._consumer.assign([self._tp])
        self._consumer.seek_to_beginning(self._tp)

    def read_new(self, timeout_s: float = 10.0) -> list[tuple[str, dict[str, Any] | None]]:
        """Every committed record not read yet, up to the end as it was when called."""
        out: list[tuple[str, dict[str, Any] | None]] = []
        try:
            end = end_offset(self._consumer, self._tp)
            deadline = time.monotonic() + timeout_s
            while self._consumer.position(self._tp) < end:
                if time.monotonic() > deadline:
                    raise ServiceError(f"{BACKFILL_TOPIC} was not read to offset {end} within {timeout_s:.0f}s")
                for batch in self._consumer.poll(timeout_ms=100).values():
                    out.extend((m.key.decode() if m.key else "", _json(m.value)) for m in batch)
        except KafkaError as exc:
            raise ServiceError(f"reading {BACKFILL_TOPIC} failed: {exc}") from exc
        return out

    def close(self) -> None:
        self._consumer.close()


def _json(value: bytes | None) -> dict[str, Any] | None:
    if value is None:
        return None
    try:
        parsed = json.loads(value)
    except ValueError:
        log.warning("%s: a record that is not JSON, skipped", BACKFILL_TOPIC)
        return None
    return parsed if isinstance(parsed, dict) else None
