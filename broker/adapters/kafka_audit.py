"""The audit chain on Kafka: raw audit records are chained, hashed and signed onto `<audit topic>.chain`.

Each batch of entries is written in one Kafka transaction and every entry names the raw record it came from, so
after a crash the chainer resumes after the last record the chain holds: each record is chained exactly once.
A transactional id derived from the chain topic fences a second chainer of the same chain.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import time
from collections.abc import Callable, Iterator
from typing import Any

from kafka import KafkaConsumer, TopicPartition
from kafka.errors import KafkaError

from broker.adapters.kafka_access import KafkaAccess
from broker.adapters.kafka_admin import create_topics
from broker.adapters.kafka_transactions import transactional_producer
from broker.domain.audit import CHECKPOINT, DEFAULT_INTERVAL, Chain, Entry, Signer, from_json_line, to_json_line
from broker.domain.audit_records import Resume, Source, raw_entry, resume_from_tail
from broker.domain.control import rfc3339
from broker.domain.topics import AUDIT_TOPIC, CHAIN_TOPIC, chain_topic_of
from broker.errors import ServiceError

READ_TIMEOUT_S = 30.0


def ensure_chain_topic(kafka: KafkaAccess, chain_topic: str = CHAIN_TOPIC) -> None:
    # One partition keeps one order; the trail is kept for ever, like the governance topic it vouches for.
    create_topics(kafka, [chain_topic], partitions=1,
                  configs={"retention.ms": "-1", "retention.bytes": "-1", "min.insync.replicas": "1"})


def _utc_now() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


class AuditChainer:
    """Chains what is new on the raw audit topic (partition 0, its only one) whenever `step` is called."""

    def __init__(self, kafka: KafkaAccess, signer: Signer, audit_topic: str = AUDIT_TOPIC, *,
                 clock: Callable[[], dt.datetime] = _utc_now, interval: int = DEFAULT_INTERVAL,
                 checkpoint_every_s: float = 60.0, max_batch: int = 500,
                 monotonic: Callable[[], float] = time.monotonic) -> None:
        self.chain_topic = chain_topic_of(audit_topic)
        ensure_chain_topic(kafka, self.chain_topic)
        self._raw_tp, self._chain_tp = TopicPartition(audit_topic, 0), TopicPartition(self.chain_topic, 0)
        self._signer, self._interval, self._clock = signer, interval, clock
        self._every_s, self._max_batch, self._monotonic = checkpoint_every_s, max_batch, monotonic
        transactional_id = f"accord-audit-chainer-{self.chain_topic}"
        self._raw = _reader(kafka, f"{transactional_id}-raw", self._raw_tp)
        self._tail = _reader(kafka, f"{transactional_id}-tail", self._chain_tp)
        # Fences an older chainer and finishes what it left (aborting an open transaction, waiting for a commit's
        # markers), so the tail read next, read_committed, is the whole committed chain.
        self._producer = transactional_producer(kafka, transactional_id, "audit chainer", linger_ms=5)
        self._chain = self._resume()
        self._stale = False
        self._last_checkpoint = monotonic()

    def _resume(self) -> Chain:
        resume = _read_resume(self._tail, self._chain_tp, self._interval)
        self._raw.seek(self._raw_tp, resume.next_offset)
        return Chain.resume(resume.last, self._signer, interval=self._interval, unsigned=resume.unsigned)

    @property
    def next_seq(self) -> int:
        return self._chain.next_seq

    def step(self) -> int:
        """Chain the raw records committed since the last step, and checkpoint if the timer is due; entries written."""
        self._catch_up()
        records = _read_until_end(self._raw, self._raw_tp, self._max_batch)
        at = rfc3339(self._clock())
        entries = [entry for record in records for entry in self._append(record, at)]
        if self._monotonic() - self._last_checkpoint >= self._every_s:
            entries.extend(self._checkpoint(at))
        self._write(entries)
        return len(entries)

    def seal(self) -> int:
        """Sign the chain now if anything is unsigned (on shutdown, so the trail ends with a checkpoint)."""
        self._catch_up()
        entries = self._checkpoint(rfc3339(self._clock()))
        self._write(entries)
        return len(entries)

    def _catch_up(self) -> None:
        if self._stale:
            self._chain = self._resume()
            self._stale = False

    def _append(self, record: Any, at: str) -> list[Entry]:
        kind, body = raw_entry(record.key, record.value, Source(record.topic, record.partition, record.offset))
        return self._chain.append(kind, at, body)

    def _checkpoint(self, at: str) -> list[Entry]:
        entry = self._chain.checkpoint(at)
        return [] if entry is None else [entry]

    def _write(self, entries: list[Entry]) -> None:
        if not entries:
            return
        try:
            self._producer.begin_transaction()
            for entry in entries:
                self._producer.send(self.chain_topic, value=to_json_line(entry).encode("utf-8"))
            self._producer.commit_transaction()
        except KafkaError as exc:
            with contextlib.suppress(KafkaError):
                self._producer.abort_transaction()
            # The in-memory chain ran ahead of what was committed; the next step starts again from the topic.
            self._stale = True
            raise ServiceError(f"writing {len(entries)} audit entries to {self.chain_topic} failed, none were "
                               f"written; they are chained again on the next step: {exc}") from exc
        if any(entry.kind == CHECKPOINT for entry in entries):
            self._last_checkpoint = self._monotonic()

    def close(self) -> None:
        self._raw.close()
        self._tail.close()
        self._producer.close()


def read_chain(kafka: KafkaAccess, chain_topic: str = CHAIN_TOPIC) -> Iterator[str]:
    """Every committed line of the chain topic, in order (the topic is read to its end as of the call)."""
    tp = TopicPartition(chain_topic, 0)
    consumer = _reader(kafka, "accord-audit-export", tp)
    try:
        consumer.seek_to_beginning(tp)
        for message in _read_until_end(consumer, tp, None):
            yield message.value.decode("utf-8")
    finally:
        consumer.close()


def _reader(kafka: KafkaAccess, client_id: str, tp: TopicPartition) -> Any:
    consumer = KafkaConsumer(**kafka.client_options(), client_id=client_id, group_id=None,
                             enable_auto_commit=False, isolation_level="read_committed")
    consumer.assign([tp])
    return consumer


def _read_resume(consumer: Any, tp: TopicPartition, interval: int) -> Resume:
    """Read back from the chain's end until the tail says where to resume (usually within one checkpoint)."""
    try:
        first = int(consumer.beginning_offsets([tp])[tp])
        end = int(consumer.end_offsets([tp])[tp])
    except KafkaError as exc:
        raise ServiceError(f"reading the end of {tp.topic} failed: {exc}") from exc
    window = 2 * interval + 2
    while True:
        start = max(first, end - window)
        consumer.seek(tp, start)
        lines = [m.value.decode("utf-8") for m in _read_until_end(consumer, tp, None)]
        tail = [from_json_line(line, n) for n, line in enumerate(lines, start=1)]
        resume = resume_from_tail(tail, whole=start == first)
        if resume is not None:
            return resume
        window *= 4


def _read_until_end(consumer: Any, tp: TopicPartition, limit: int | None) -> list[Any]:
    """Committed records from the consumer's position up to the partition's end now, at most `limit` of them."""
    try:
        end = int(consumer.end_offsets([tp])[tp])
        records: list[Any] = []
        deadline = time.monotonic() + READ_TIMEOUT_S
        while consumer.position(tp) < end and (limit is None or len(records) < limit):
            if time.monotonic() > deadline:
                raise ServiceError(f"{tp.topic} was not read to offset {end} within {READ_TIMEOUT_S:.0f}s")
            want = None if limit is None else limit - len(records)
            for batch in consumer.poll(timeout_ms=50, max_records=want).values():
                records.extend(m for m in batch if m.value is not None)
        return records
    except KafkaError as exc:
        raise ServiceError(f"reading {tp.topic} failed: {exc}") from exc
