"""A compacted one-partition Kafka topic used as a service's source of truth: replayed at start, then followed.

Every instance of the service may write, but only one at a time: writes are Kafka transactions under one
transactional id shared by all writers of the topic, so the broker fences the older writer whenever another one
starts writing. A writer catches up with the log after it has taken over and before it plans a write, so whatever
it commits was planned against everything committed before it (see `catch_up` and `append`).
"""

from __future__ import annotations

import contextlib
import json
import threading
from collections.abc import Callable, Sequence
from typing import Any

from kafka import KafkaConsumer, KafkaProducer, TopicPartition
from kafka.errors import InvalidProducerEpochError, KafkaError, ProducerFencedError

from broker.adapters.kafka_access import KafkaAccess
from broker.adapters.kafka_admin import CHANGELOG_TOPIC_CONFIG, create_topics
from broker.adapters.kafka_offsets import end_offset
from broker.adapters.kafka_transactions import transactional_producer
from broker.errors import ServiceError, WriterFenced

OnRecord = Callable[[str, dict[str, Any] | None], None]
# An open transaction of a writer that died holds back every read_committed reader until it is aborted: by the next
# writer's take-over at once, or by the broker after this long.
TRANSACTION_TIMEOUT_MS = 10_000


def writer_id(topic: str) -> str:
    """The transactional id every writer of `topic` shares (Kafka ACLs grant the prefix `accord-registry`)."""
    return f"accord-registry:{topic}"


class Changelog:
    """Keys are text, values JSON objects or None (a tombstone). `on_record` runs on the follower thread.

    Writers call `catch_up` and then `append`, one caller at a time.
    """

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
        self._writer_lock = threading.Lock()
        self._producer: KafkaProducer | None = None  # holds the writer id while not None
        self._offsets: KafkaConsumer | None = None  # asks for the end offset; the follower's consumer is its own
        self._failure: BaseException | None = None

    def start(self, timeout_s: float = 30.0) -> None:
        """Create the topic if needed, replay it to its current end, keep following it."""
        create_topics(self._kafka, [self.topic], partitions=1, configs=CHANGELOG_TOPIC_CONFIG)
        consumer = self._reader()
        consumer.assign([self._tp])
        consumer.seek_to_beginning(self._tp)
        end = end_offset(consumer, self._tp)
        self._offsets = self._reader()
        self._thread = threading.Thread(target=self._follow, args=(consumer,), name=f"follow-{self.topic}",
                                        daemon=True)
        self._thread.start()
        self._wait_applied(end, timeout_s)

    def follower_problem(self) -> str | None:
        """None while the follower thread runs; else why it does not (for readiness)."""
        if self._failure is not None:
            return f"following {self.topic} failed: {self._failure}"
        if self._thread is None or not self._thread.is_alive():
            return f"{self.topic} is not being followed"
        return None

    def _reader(self) -> KafkaConsumer:
        return KafkaConsumer(**self._kafka.client_options(), client_id=self._client_id, group_id=None,
                             enable_auto_commit=False, isolation_level="read_committed")

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

    def catch_up(self, timeout_s: float = 30.0) -> None:
        """Be the topic's writer, then apply every record committed so far.

        Taking over (when this instance is not the writer yet, or was fenced) fences every other writer and ends any
        transaction it left open. Another writer can commit after this only by taking over in turn, which makes this
        instance's next `append` fail with WriterFenced: so a plan made after `catch_up` and committed by `append`
        was made against the whole log.
        """
        with self._writer_lock:
            if self._offsets is None:
                raise ServiceError(f"changelog {self.topic} is not started")
            if self._producer is None:
                self._producer = transactional_producer(self._kafka, writer_id(self.topic), f"writer of {self.topic}",
                                                        transaction_timeout_ms=TRANSACTION_TIMEOUT_MS)
            try:
                # read_committed: the last stable offset, so a newer writer's open transaction cannot hold this up.
                end = end_offset(self._offsets, self._tp)
            except KafkaError as exc:
                raise ServiceError(f"reading the end of {self.topic} failed: {exc}") from exc
        self._wait_applied(end, timeout_s)

    def append(self, changes: Sequence[tuple[str, dict[str, Any] | None]], timeout_s: float = 30.0) -> None:
        """Commit the records in one transaction and return once this instance has applied them.

        WriterFenced (nothing written) if another instance took over since `catch_up`; catch up and plan again.
        """
        if not changes:
            return
        with self._writer_lock:
            producer = self._producer
            if producer is None:
                raise ServiceError(f"changelog {self.topic}: catch_up before append")
            try:
                producer.begin_transaction()
                futures = [
                    producer.send(self.topic, key=key.encode(),
                                  value=None if value is None else json.dumps(value).encode())
                    for key, value in changes
                ]
                producer.commit_transaction()
                last = max(int(future.get(timeout=timeout_s).offset) for future in futures)
            except KafkaError as exc:
                fenced = is_fenced(producer, exc)
                self._give_up_writing()
                if fenced:
                    raise WriterFenced(f"another writer of {self.topic} took over; nothing was written") from exc
                raise ServiceError(f"writing to {self.topic} failed: {exc}") from exc
        self._wait_applied(last + 1, timeout_s)

    def _give_up_writing(self) -> None:
        # A fenced or failed transactional producer cannot be used again; the next catch_up takes over anew.
        producer, self._producer = self._producer, None
        if producer is not None:
            with contextlib.suppress(KafkaError):
                producer.abort_transaction()
            producer.close(timeout=5)

    def close(self) -> None:
        self._stopping.set()
        if self._thread is not None:
            self._thread.join(timeout=5)
        with self._writer_lock:
            if self._producer is not None:
                self._producer.close()
                self._producer = None
            if self._offsets is not None:
                self._offsets.close()


def is_fenced(producer: KafkaProducer, exc: KafkaError) -> bool:
    """Whether another writer took over. kafka-python raises the broker's fencing error as itself from a send, but from
    commit_transaction as a plain KafkaError, once its transaction manager has recorded the fencing as its error."""
    if isinstance(exc, ProducerFencedError | InvalidProducerEpochError):
        return True
    manager = getattr(producer, "_transaction_manager", None)
    return isinstance(getattr(manager, "last_error", None), ProducerFencedError | InvalidProducerEpochError)
