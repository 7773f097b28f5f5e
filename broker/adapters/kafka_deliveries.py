"""Delivery topics read for the pull API (services/deliveries.py's DeliveryLog): committed records only, from the
positions a cursor names, by a small pool of kafka-python consumers reused across requests."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager

from kafka import KafkaConsumer, TopicPartition
from kafka.errors import KafkaError, TopicAuthorizationFailedError

from broker.adapters.kafka_access import KafkaAccess
from broker.domain.cursors import Positions
from broker.domain.messages import Record
from broker.errors import DeliveryRefused, ServiceError

POLL_MS = 200


class KafkaDeliveryLog:
    """Each read borrows a consumer (group-less: positions live in the caller's cursor, never in Kafka); at most
    `keep` idle consumers are kept, so a burst of requests costs connections only while it lasts."""

    def __init__(self, kafka: KafkaAccess, client_id: str = "accord-pull", keep: int = 4,
                 fetch_timeout_s: float = 10.0) -> None:
        self._kafka, self._client_id, self._keep = kafka, client_id, keep
        self._fetch_timeout_s = fetch_timeout_s
        self._idle: list[KafkaConsumer] = []
        self._lock = threading.Lock()

    def partitions(self, topic: str) -> list[int] | None:
        with self._consumer() as consumer:
            found = consumer.partitions_for_topic(topic)
        return None if not found else sorted(found)

    def ends(self, topic: str) -> dict[int, int]:
        with self._consumer() as consumer:
            tps = [TopicPartition(topic, p) for p in sorted(consumer.partitions_for_topic(topic) or ())]
            return {tp.partition: int(offset) for tp, offset in consumer.end_offsets(tps).items()} if tps else {}

    def read(self, topic: str, positions: Positions, limit: int, wait_s: float) -> list[Record]:
        with self._consumer() as consumer:
            tps = [TopicPartition(topic, p) for p in sorted(consumer.partitions_for_topic(topic) or ())]
            if not tps:
                return []
            consumer.assign(tps)
            for tp in tps:
                if tp.partition in positions:
                    consumer.seek(tp, positions[tp.partition])
                else:
                    consumer.seek_to_beginning(tp)
            return _read(consumer, tps, limit, wait_s, self._fetch_timeout_s)

    @contextmanager
    def _consumer(self) -> Iterator[KafkaConsumer]:
        with self._lock:
            consumer = self._idle.pop() if self._idle else None
        try:
            consumer = consumer or KafkaConsumer(
                **self._kafka.client_options(), client_id=self._client_id, group_id=None,
                isolation_level="read_committed", enable_auto_commit=False, auto_offset_reset="earliest")
            yield consumer
            consumer.unsubscribe()  # drop the assignment and its buffered fetches before another request
        except TopicAuthorizationFailedError as exc:
            raise DeliveryRefused("Kafka refuses this delivery topic's readers: its right has ended (fenced)") from exc
        except KafkaError as exc:
            raise ServiceError(f"reading a delivery topic failed: {exc}") from exc
        finally:
            self._put_back(consumer)

    def _put_back(self, consumer: KafkaConsumer | None) -> None:
        """Back to the pool if it is healthy (unassigned) and there is room; closed otherwise."""
        if consumer is None:
            return
        with self._lock:
            if not consumer.assignment() and len(self._idle) < self._keep:
                self._idle.append(consumer)
                return
        consumer.close()

    def close(self) -> None:
        with self._lock:
            idle, self._idle = self._idle, []
        for consumer in idle:
            consumer.close()


def _read(consumer: KafkaConsumer, tps: list[TopicPartition], limit: int, wait_s: float,
          fetch_timeout_s: float) -> list[Record]:
    """Up to the committed end as of now (read_committed end offsets are the last stable offsets), or `limit`;
    when nothing is there, wait up to `wait_s` for a first record."""
    ends = consumer.end_offsets(tps)
    started = time.monotonic()
    records: list[Record] = []
    while len(records) < limit:
        caught_up = all(consumer.position(tp) >= ends[tp] for tp in tps)
        elapsed = time.monotonic() - started
        if (caught_up and (records or elapsed >= wait_s)) or elapsed >= max(wait_s, fetch_timeout_s):
            break
        for batch in consumer.poll(timeout_ms=POLL_MS, max_records=limit - len(records)).values():
            records.extend(Record(m.topic, m.partition, m.offset, m.key, m.value, tuple(m.headers)) for m in batch)
    return records
