"""Idempotent publishing: a keyed request's records and its answer commit in one Kafka transaction, or not at all.

The design, and why it is correct across retries, restarts and several API processes:

- Every answered key is a record on the compacted topic `_accord.ingest-requests` (key: the request key; value: the
  body's digest and the answer), written in the SAME transaction as the records the request published. So either
  the records and the key are both visible to read_committed readers (the gates, this follower), or neither is.
- Each API instance follows that topic into memory (replayed at start: a restart forgets nothing the topic holds).
- Writers use transactional ids from a small fixed set (`accord-ingest-<slot>`, the slot from a hash of the key)
  shared by every API instance. A writer takes over its slot's id with `init_transactions`, which fences any
  other instance's producer of that id and finishes whatever transaction it left open. After taking over (or with
  a producer taken over earlier) the writer catches up with the topic to its last stable offset and looks the key
  up: found, it answers what is stored and publishes nothing. Not found, it publishes and commits. Another
  instance can commit the same key only under the same id, which fences this writer first, so this writer's
  commit then fails, nothing of it becomes visible, and it takes over again, catches up, and finds the key.
- Unrelated keys sharing a slot in two instances fence each other now and then; the loser retries.
- The writers are librdkafka's (confluent-kafka): a producer fenced by another instance stays fenced (a fatal error)
  until it is replaced. kafka-python 3.0 instead answers a fencing seen on a send (INVALID_PRODUCER_EPOCH) by taking
  the transactional id over again (its KIP-360 fallback to a fresh producer id), which fenced the instance that had
  won the key and let both commit it: two copies, two answers, under two API instances racing one key.

Keys are kept as long as the topic keeps them (KEY_RETENTION_MS): a retry within that window publishes nothing twice.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import random
import threading
import time
import zlib
from collections.abc import Callable, Sequence
from typing import Any

from confluent_kafka import KafkaError as RdKafkaError
from confluent_kafka import KafkaException, Message, Producer
from kafka import KafkaConsumer, TopicPartition

from broker.adapters.kafka_access import KafkaAccess
from broker.adapters.kafka_admin import create_topics
from broker.adapters.kafka_changelog import TRANSACTION_TIMEOUT_MS
from broker.adapters.kafka_offsets import end_offset
from broker.adapters.rdkafka_transactions import KEYED_PARTITIONER
from broker.domain.kafka_acls import INGEST_TRANSACTIONAL_PREFIX
from broker.domain.messages import Outgoing
from broker.domain.topics import INGEST_REQUESTS_TOPIC
from broker.errors import ServiceError

KEY_RETENTION_MS = 7 * 24 * 3600 * 1000
# Named once: `accord deploy render k8s` renders the same configuration (replication decides min.insync.replicas).
INGEST_REQUESTS_TOPIC_CONFIG = {"cleanup.policy": "compact,delete", "retention.ms": str(KEY_RETENTION_MS)}
SLOTS = 8
FOLLOW_FETCH_WAIT_MS = 20
ATTEMPTS = 10
STORED_MAX_BYTES = 900_000  # a compressed answer above this is stored without its reasons (they are in quarantine)
Answer = Callable[[list[tuple[int, int]]], dict[str, Any]]


def encode_entry(digest: str, answer: dict[str, Any]) -> bytes:
    """The stored value: zlib-compressed JSON; an answer too large to store keeps its outcomes without reasons."""
    packed = zlib.compress(json.dumps({"digest": digest, "answer": answer}).encode())
    if len(packed) <= STORED_MAX_BYTES:
        return packed
    lean = {**answer, "outcomes": [{**o, "reasons": []} for o in answer.get("outcomes", [])],
            "reasons_omitted": "too many to keep with the key: read them in the stream's quarantine"}
    return zlib.compress(json.dumps({"digest": digest, "answer": lean}).encode())


def decode_entry(value: bytes) -> tuple[str, dict[str, Any]]:
    entry = json.loads(zlib.decompress(value))
    return str(entry["digest"]), dict(entry["answer"])


class KafkaIngestRequests:
    """The answered keys (followed from the topic) and the slot writers; `publish_once` is safe from many threads."""

    def __init__(self, kafka: KafkaAccess, topic: str = INGEST_REQUESTS_TOPIC, slots: int = SLOTS,
                 client_id: str = "accord-ingest-requests") -> None:
        self.topic = topic
        self._kafka = kafka
        self._client_id = client_id
        self._tp = TopicPartition(topic, 0)
        self._slots = slots
        self._locks = [threading.Lock() for _ in range(slots)]
        self._producers: dict[int, Producer] = {}
        self._entries: dict[str, tuple[str, dict[str, Any]]] = {}
        self._applied = 0  # every record before this offset is in _entries
        self._cond = threading.Condition()
        self._offsets_lock = threading.Lock()
        self._offsets: KafkaConsumer | None = None
        self._stopping = threading.Event()
        self._thread: threading.Thread | None = None
        self._failure: BaseException | None = None
        self._start_lock = threading.Lock()

    def start(self, timeout_s: float = 30.0) -> KafkaIngestRequests:
        """Create the topic if needed, replay it, keep following it (done by the first keyed request otherwise)."""
        with self._start_lock:
            if self._thread is None:
                self._start(timeout_s)
        return self

    def _start(self, timeout_s: float) -> None:
        create_topics(self._kafka, [self.topic], configs=INGEST_REQUESTS_TOPIC_CONFIG)
        follower = self._reader()
        follower.assign([self._tp])
        follower.seek_to_beginning(self._tp)
        self._offsets = self._reader()
        self._thread = threading.Thread(target=self._follow, args=(follower,), name=f"follow-{self.topic}",
                                        daemon=True)
        self._thread.start()
        self._catch_up(timeout_s)

    def publish_once(self, key: str, digest: str, records: Sequence[Outgoing], answer: Answer,
                     timeout_s: float = 30.0) -> tuple[str, dict[str, Any], bool]:
        """(digest, answer, published) for `key`: stored before, nothing is published (False); else `records` are
        published and `answer(their positions)` is stored with `digest`, in one transaction (True)."""
        self.start(timeout_s)
        slot = int(hashlib.sha256(key.encode()).hexdigest()[:8], 16) % self._slots
        with self._locks[slot]:
            for attempt in range(ATTEMPTS):
                try:
                    producer = self._producer(slot, timeout_s)
                    self._catch_up(timeout_s)
                    with self._cond:
                        found = self._entries.get(key)
                    if found is not None:
                        return (*found, False)
                    stored = self._commit(producer, key, digest, records, answer, timeout_s)
                except KafkaException as exc:
                    self._give_up(slot)
                    if not _retriable(exc):
                        raise ServiceError(f"publishing a keyed request failed: {_said(exc)}") from exc
                    time.sleep(random.uniform(0.01, 0.05) * (attempt + 1))  # another instance holds the slot
                    continue
                except BaseException:
                    self._give_up(slot)  # its transaction aborted: nothing of this attempt becomes visible
                    raise
                with self._cond:
                    self._entries.setdefault(key, stored)
                return (*stored, True)
        raise ServiceError(f"publishing a keyed request failed: fenced {ATTEMPTS} times by other API instances")

    def _commit(self, producer: Producer, key: str, digest: str, records: Sequence[Outgoing], answer: Answer,
                timeout_s: float) -> tuple[str, dict[str, Any]]:
        producer.begin_transaction()
        placed: list[tuple[int, int] | None] = [None] * len(records)
        failed: list[RdKafkaError] = []

        def acknowledged(index: int) -> Callable[[RdKafkaError | None, Message], None]:
            def done(error: RdKafkaError | None, message: Message) -> None:
                if error is not None:
                    failed.append(error)
                else:
                    placed[index] = (int(message.partition() or 0), int(message.offset() or 0))
            return done
        for index, r in enumerate(records):
            _produce(producer, r.topic, r.value, r.key, list(r.headers), acknowledged(index))
        try:
            left = producer.flush(timeout_s)
        except SystemError as exc:
            # confluent-kafka runs the delivery callbacks with librdkafka's fatal error (a fencing) already raised;
            # the first call a callback makes then fails with that error as its cause.
            if isinstance(exc.__cause__, KafkaException):
                raise exc.__cause__ from exc
            raise
        if failed:
            raise KafkaException(failed[0])  # fenced, or to abort and retry: as a failed commit would say
        if left or None in placed:
            raise ServiceError(f"publishing a keyed request failed: {left} records not acknowledged in {timeout_s} s")
        answered = answer([p for p in placed if p is not None])
        _produce(producer, self.topic, encode_entry(digest, answered), key.encode(), [], None)
        producer.commit_transaction(timeout_s)
        return digest, answered

    def _producer(self, slot: int, timeout_s: float) -> Producer:
        producer = self._producers.get(slot)
        if producer is None:
            # Taking over the slot's id fences any other instance's writer of it and ends its open transaction.
            producer = Producer({
                **self._kafka.librdkafka_options(), "client.id": f"{self._client_id}-{slot}",
                "transactional.id": f"{INGEST_TRANSACTIONAL_PREFIX}{slot}", "acks": "all",
                "enable.idempotence": True, "linger.ms": 5, "transaction.timeout.ms": TRANSACTION_TIMEOUT_MS,
                "partitioner": KEYED_PARTITIONER, "log_level": 3,
            })
            producer.init_transactions(timeout_s)
            self._producers[slot] = producer
        return producer

    def _give_up(self, slot: int) -> None:
        # A fenced or failed transactional producer is not used again; the next attempt takes over anew.
        producer = self._producers.pop(slot, None)
        if producer is not None:
            with contextlib.suppress(KafkaException):  # a fenced producer raises its fencing from every call
                producer.abort_transaction(5)

    def _reader(self) -> KafkaConsumer:
        # A keyed request waits for the follower to reach the last stable offset; at the default fetch wait (500 ms)
        # the broker could hold a fetch that long after a commit made new records readable.
        return KafkaConsumer(**self._kafka.client_options(), client_id=self._client_id, group_id=None,
                             enable_auto_commit=False, isolation_level="read_committed",
                             fetch_max_wait_ms=FOLLOW_FETCH_WAIT_MS)

    def _catch_up(self, timeout_s: float) -> None:
        """Wait until every record committed so far (the last stable offset, read now) is applied."""
        with self._offsets_lock:
            if self._offsets is None:
                raise ServiceError(f"{self.topic} is not followed: start() first")
            end = end_offset(self._offsets, self._tp)
        with self._cond:
            done = self._cond.wait_for(lambda: self._applied >= end or self._failure is not None, timeout_s)
            if self._failure is not None:
                raise ServiceError(f"following {self.topic} failed: {self._failure}") from self._failure
            if not done:
                raise ServiceError(f"{self.topic} was not caught up to offset {end} within {timeout_s:.0f}s")

    def _follow(self, consumer: KafkaConsumer) -> None:
        try:
            while not self._stopping.is_set():
                batches = consumer.poll(timeout_ms=100).values()
                with self._cond:
                    for batch in batches:
                        for message in batch:
                            if message.key is not None and message.value is not None:
                                self._entries[message.key.decode()] = decode_entry(message.value)
                    self._applied = max(self._applied, int(consumer.position(self._tp)))
                    self._cond.notify_all()
        except BaseException as exc:  # surfaced to writers: a follower that dies must not fail silently
            with self._cond:
                self._failure = exc
                self._cond.notify_all()
            raise
        finally:
            consumer.close()

    def close(self) -> None:
        self._stopping.set()
        if self._thread is not None:
            self._thread.join(timeout=5)
        for slot in list(self._producers):
            with self._locks[slot]:
                producer = self._producers.pop(slot, None)
                if producer is not None:
                    with contextlib.suppress(KafkaException):
                        producer.flush(5)
        with self._offsets_lock:
            if self._offsets is not None:
                self._offsets.close()
                self._offsets = None


def _produce(producer: Producer, topic: str, value: bytes | None, key: bytes | None,
             headers: list[tuple[str, str | bytes | None]],
             on_delivery: Callable[[RdKafkaError | None, Message], None] | None) -> None:
    while True:
        try:
            producer.produce(topic, value=value, key=key, headers=headers, on_delivery=on_delivery)
            return
        except BufferError:  # the local queue is full: let deliveries drain, then send again
            producer.poll(0.05)


_REFUSED = (RdKafkaError.TOPIC_AUTHORIZATION_FAILED, RdKafkaError.TRANSACTIONAL_ID_AUTHORIZATION_FAILED,
            RdKafkaError.CLUSTER_AUTHORIZATION_FAILED)


def _retriable(exc: KafkaException) -> bool:
    """Fenced by another instance's writer of the slot (fatal for this producer: a new one takes over), or a
    transaction the broker asks to abort or allows to retry: try again."""
    error = exc.args[0] if exc.args else None
    if not isinstance(error, RdKafkaError) or error.code() in _REFUSED:
        return False
    return bool(error.fatal() or error.txn_requires_abort() or error.retriable()) or error.code() in (
        RdKafkaError._FENCED, RdKafkaError.PRODUCER_FENCED, RdKafkaError.INVALID_PRODUCER_EPOCH)


def _said(exc: KafkaException) -> str:
    error = exc.args[0] if exc.args else None
    return error.str() if isinstance(error, RdKafkaError) else str(exc)
