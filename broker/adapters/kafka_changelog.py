"""A compacted one-partition Kafka topic used as a service's source of truth: replayed at start, then followed."""

from __future__ import annotations

import json
import threading
from collections.abc import Callable, Sequence
from typing import Any

from kafka import KafkaConsumer, KafkaProducer, TopicPartition
from kafka.errors import KafkaError

from broker.adapters.kafka_access import KafkaAccess
from broker.adapters.kafka_admin import create_topics
from broker.errors import ServiceError

OnRecord = Callable[[str, dict[str, Any] | None], None]


class Changelog:
    """Keys are text, values JSON objects or None (a tombstone). `on_record` runs on the follower thread."""

    def __init__(self, kafka: KafkaAccess, topic: str, on_record: OnRecord,
                 client_id: str = "accord-changelog") -> None:
        self.topic = topic
        self._kafka = kafka
        self._on_record = on_record
        self._client_id = client_id
        self._tp = TopicPartition(topic, 0)
        self._next_offset = 0  # every record before this offset has been applied
        self._cond = threading.Condition()
        self._stopping = threading.Event()
        self._thread: threading.Thread | None = None
        self._producer: KafkaProducer | None = None
        self._failure: BaseException | None = None

    def start(self, timeout_s: float = 30.0) -> None:
        """Create the topic if needed, replay it to its current end, keep following it."""
        create_topics(self._kafka, [self.topic], partitions=1,
                      configs={"cleanup.policy": "compact", "min.insync.replicas": "1"})
        consumer = KafkaConsumer(**self._kafka.client_options(), client_id=self._client_id, group_id=None,
                                 enable_auto_commit=False, isolation_level="read_committed")
        consumer.assign([self._tp])
        consumer.seek_to_beginning(self._tp)
        end = int(consumer.end_offsets([self._tp])[self._tp])
        self._producer = KafkaProducer(**self._kafka.client_options(), client_id=self._client_id, acks="all",
                                       enable_idempotence=True, linger_ms=0)
        self._thread = threading.Thread(target=self._follow, args=(consumer,), name=f"follow-{self.topic}",
                                        daemon=True)
        self._thread.start()
        self._wait_applied(end, timeout_s)

    def _follow(self, consumer: KafkaConsumer) -> None:
        try:
            while not self._stopping.is_set():
                for batch in consumer.poll(timeout_ms=100).values():
                    for message in batch:
                        key = message.key.decode() if message.key is not None else ""
                        value = json.loads(message.value) if message.value is not None else None
                        self._on_record(key, value)
                with self._cond:
                    self._next_offset = max(self._next_offset, int(consumer.position(self._tp)))
                    self._cond.notify_all()
        except BaseException as exc:  # surfaced to writers; a follower that dies must not fail silently
            with self._cond:
                self._failure = exc
                self._cond.notify_all()
            raise
        finally:
            consumer.close()

    def _wait_applied(self, offset: int, timeout_s: float) -> None:
        with self._cond:
            done = self._cond.wait_for(lambda: self._next_offset >= offset or self._failure is not None, timeout_s)
            if self._failure is not None:
                raise ServiceError(f"following {self.topic} failed: {self._failure}") from self._failure
            if not done:
                raise ServiceError(f"{self.topic} was not caught up to offset {offset} within {timeout_s:.0f}s")

    def append(self, changes: Sequence[tuple[str, dict[str, Any] | None]], timeout_s: float = 30.0) -> None:
        """Write the records and return once this instance has applied them."""
        if self._producer is None:
            raise ServiceError(f"changelog {self.topic} is not started")
        last = -1
        try:
            futures = [
                self._producer.send(self.topic, key=key.encode(),
                                    value=None if value is None else json.dumps(value).encode())
                for key, value in changes
            ]
            for future in futures:
                last = max(last, int(future.get(timeout=timeout_s).offset))
        except KafkaError as exc:
            raise ServiceError(f"writing to {self.topic} failed: {exc}") from exc
        self._wait_applied(last + 1, timeout_s)

    def close(self) -> None:
        self._stopping.set()
        if self._thread is not None:
            self._thread.join(timeout=5)
        if self._producer is not None:
            self._producer.close()
