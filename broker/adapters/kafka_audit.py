"""The audit chain on Kafka: raw audit records are chained, hashed and signed onto `<audit topic>.chain`, and the
chain's checkpoints are anchored on the governance log.

Each batch of entries is written in one Kafka transaction and every entry names the raw record it came from, so
after a crash the chainer resumes after the last record the chain holds: each record is chained exactly once.
A transactional id derived from the chain topic fences a second chainer of the same chain. An anchor (a signed
copy of a checkpoint's seq and hash) goes to the governance log in the same transaction as the checkpoint, at most
once per checkpoint period and at once for an export: a copy of the chain that stops before the newest anchor was
cut, even when it stops exactly at a checkpoint.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import json
import time
import uuid
from collections.abc import Callable, Iterator
from typing import Any

from kafka import KafkaConsumer, KafkaProducer, TopicPartition
from kafka.errors import KafkaError

from broker.adapters.kafka_access import KafkaAccess
from broker.adapters.kafka_admin import TRAIL_TOPIC_CONFIG, create_topics
from broker.adapters.kafka_transactions import transactional_producer
from broker.domain.audit import (
    CHECKPOINT,
    DEFAULT_INTERVAL,
    EXPORT,
    Anchor,
    Chain,
    Entry,
    Signer,
    from_json_line,
    to_json_line,
)
from broker.domain.audit_records import (
    ANCHOR,
    Resume,
    Source,
    anchor_event,
    anchor_from_event,
    export_request,
    raw_entry,
    resume_from_tail,
    sealed_at,
)
from broker.domain.control import rfc3339
from broker.domain.topics import AUDIT_TOPIC, CHAIN_TOPIC, GOVERNANCE_TOPIC, audit_topic_of, chain_topic_of
from broker.errors import ServiceError

READ_TIMEOUT_S = 30.0
# How long the chain may run unsigned, and unanchored, while anything is being added (ACCORD_AUDIT_CHECKPOINT_EVERY_S).
DEFAULT_CHECKPOINT_EVERY_S = 10.0


def ensure_chain_topic(kafka: KafkaAccess, chain_topic: str = CHAIN_TOPIC) -> None:
    # One partition keeps one order; the trail is kept for ever, like the governance topic it vouches for.
    create_topics(kafka, [chain_topic], partitions=1, configs=TRAIL_TOPIC_CONFIG)


def _utc_now() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


class AuditChainer:
    """Chains what is new on the raw audit topic (partition 0, its only one) whenever `step` is called, and anchors
    its checkpoints on `governance_topic`."""

    def __init__(self, kafka: KafkaAccess, signer: Signer, audit_topic: str = AUDIT_TOPIC, *,
                 governance_topic: str = GOVERNANCE_TOPIC, clock: Callable[[], dt.datetime] = _utc_now,
                 interval: int = DEFAULT_INTERVAL, checkpoint_every_s: float = DEFAULT_CHECKPOINT_EVERY_S,
                 max_batch: int = 500, monotonic: Callable[[], float] = time.monotonic) -> None:
        self.chain_topic, self.governance_topic = chain_topic_of(audit_topic), governance_topic
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
        # The newest checkpoint not yet anchored, and when the last anchor was written (None: not by this chainer).
        self._unanchored: Entry | None = None
        self._last_anchor: float | None = None
        self._chain = self._resume()
        self._stale = False
        self._last_checkpoint = monotonic()

    def _resume(self) -> Chain:
        resume = _read_resume(self._tail, self._chain_tp, self._interval)
        self._raw.seek(self._raw_tp, resume.next_offset)
        if resume.last is not None and resume.last.kind == CHECKPOINT:
            # A crash may have come between signing it and anchoring it; anchoring it twice is harmless.
            self._unanchored = resume.last
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
        self._write(entries, self._anchor_due(entries), at)
        return len(entries)

    def seal(self) -> int:
        """Sign and anchor the chain now if anything is unsigned or unanchored (on shutdown, so the trail ends with
        an anchored checkpoint); entries written."""
        self._catch_up()
        at = rfc3339(self._clock())
        entries = self._checkpoint(at)
        self._write(entries, self._newest_checkpoint(entries), at)
        return len(entries)

    def _newest_checkpoint(self, entries: list[Entry]) -> Entry | None:
        checkpoints = [entry for entry in entries if entry.kind == CHECKPOINT]
        return checkpoints[-1] if checkpoints else self._unanchored

    def _anchor_due(self, entries: list[Entry]) -> Entry | None:
        """The checkpoint to anchor with this write: an export's at once (its exporter verifies against it), any
        other at most once per checkpoint period, so a busy chain does not crowd the governance log."""
        newest = self._newest_checkpoint(entries)
        due = self._last_anchor is None or self._monotonic() - self._last_anchor >= self._every_s
        return newest if due or any(entry.kind == EXPORT for entry in entries) else None

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

    def _write(self, entries: list[Entry], anchored: Entry | None, at: str) -> None:
        if not entries and anchored is None:
            return
        try:
            self._producer.begin_transaction()
            for entry in entries:
                self._producer.send(self.chain_topic, value=to_json_line(entry).encode("utf-8"))
            if anchored is not None:
                event = anchor_event(self._signer.anchor(self.chain_topic, anchored), uuid.uuid4().hex, at)
                self._producer.send(self.governance_topic, key=ANCHOR.encode(),
                                    value=json.dumps(event, sort_keys=True).encode("utf-8"))
            self._producer.commit_transaction()
        except KafkaError as exc:
            with contextlib.suppress(KafkaError):
                self._producer.abort_transaction()
            # The in-memory chain ran ahead of what was committed; the next step starts again from the topic.
            self._stale = True
            raise ServiceError(f"writing {len(entries)} audit entries to {self.chain_topic} failed, none were "
                               f"written; they are chained again on the next step: {exc}") from exc
        self._written(entries, anchored)

    def _written(self, entries: list[Entry], anchored: Entry | None) -> None:
        now = self._monotonic()
        if any(entry.kind == CHECKPOINT for entry in entries):
            self._last_checkpoint = now
        if anchored is None:
            self._unanchored = self._newest_checkpoint(entries)
        else:
            self._last_anchor, self._unanchored = now, None

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


def _read_until_end(consumer: Any, tp: TopicPartition, limit: int | None, end: int | None = None) -> list[Any]:
    """Committed records from the consumer's position up to `end` (default: the partition's end now), at most
    `limit` of them."""
    try:
        if end is None:
            end = int(consumer.end_offsets([tp])[tp])
        records: list[Any] = []
        deadline = time.monotonic() + READ_TIMEOUT_S
        while consumer.position(tp) < end and (limit is None or len(records) < limit):
            if time.monotonic() > deadline:
                raise ServiceError(f"{tp.topic} was not read to offset {end} within {READ_TIMEOUT_S:.0f}s")
            want = None if limit is None else limit - len(records)
            for batch in consumer.poll(timeout_ms=50, max_records=want).values():
                records.extend(m for m in batch if m.value is not None and m.offset < end)
        return records
    except KafkaError as exc:
        raise ServiceError(f"reading {tp.topic} failed: {exc}") from exc


# -- exports and anchors, for `accord audit` ------------------------------------------------------------------------
def read_sealed_chain(kafka: KafkaAccess, chain_topic: str = CHAIN_TOPIC, governance_topic: str = GOVERNANCE_TOPIC,
                      timeout_s: float = READ_TIMEOUT_S) -> Iterator[str]:
    """The chain up to a checkpoint the chainer signs on request: every line, in order, ending with that checkpoint.

    Asks by writing an export request (naming this client's Kafka principal) to the raw audit topic, so the export
    is itself audited, the signing key stays with the chainer and the chain keeps one writer. Nothing is yielded
    until that checkpoint is signed and its anchor readable on `governance_topic` (so a verification right after
    checks against it); ServiceError when that takes longer than `timeout_s` (is the governance service up?).
    """
    tp = TopicPartition(chain_topic, 0)
    consumer = _reader(kafka, "accord-audit-export", tp)
    try:
        deadline = time.monotonic() + timeout_s
        start = _end_offset(consumer, tp)
        request = uuid.uuid4().hex
        _request_export(kafka, audit_topic_of(chain_topic), request)
        consumer.seek(tp, start)
        sealed = _await_seal(consumer, tp, request, deadline)
        _await_anchor(kafka, chain_topic, governance_topic, sealed, deadline)
        consumer.seek_to_beginning(tp)
        for message in _read_until_end(consumer, tp, None):
            line = message.value.decode("utf-8")
            yield line
            if _seq_of(line) == sealed:
                return
    finally:
        consumer.close()


def _request_export(kafka: KafkaAccess, audit_topic: str, request: str) -> None:
    producer = KafkaProducer(**kafka.client_options(), client_id="accord-audit-export", acks="all",
                             enable_idempotence=True, linger_ms=0)
    try:
        value = export_request(request, kafka.principal, rfc3339(_utc_now()))
        producer.send(audit_topic, key=EXPORT.encode(), value=json.dumps(value, sort_keys=True).encode()).get(
            timeout=READ_TIMEOUT_S)
    except KafkaError as exc:
        raise ServiceError(f"asking for a signed export on {audit_topic} failed: {exc}") from exc
    finally:
        producer.close()


def _await_seal(consumer: Any, tp: TopicPartition, request: str, deadline: float) -> int:
    last: list[Entry] = []
    while time.monotonic() < deadline:
        try:
            batches = consumer.poll(timeout_ms=200).values()
        except KafkaError as exc:
            raise ServiceError(f"reading {tp.topic} failed: {exc}") from exc
        new = [from_json_line(m.value.decode("utf-8"), m.offset) for batch in batches for m in batch
               if m.value is not None]
        # The request and its checkpoint may arrive in different polls, so the previous poll's last entry is kept.
        sealed = sealed_at([*last, *new], request)
        if sealed is not None:
            return sealed
        last = (last + new)[-1:]
    raise ServiceError("the audit chainer did not sign the export in time: is the governance service running, or "
                       "still chaining a backlog (then --wait longer)? `accord audit export --no-seal` exports the "
                       "chain as it stands, whose newest entries may be unsigned")


def _await_anchor(kafka: KafkaAccess, chain_topic: str, governance_topic: str, seq: int, deadline: float) -> None:
    # The anchor is committed with the checkpoint, but a transaction's markers reach each topic separately.
    while True:
        anchor = newest_anchor(kafka, chain_topic, governance_topic)
        if anchor is not None and anchor.seq >= seq:
            return
        if time.monotonic() > deadline:
            raise ServiceError(f"checkpoint {seq} of {chain_topic} was signed but its anchor did not appear on "
                               f"{governance_topic} in time: is the chainer anchoring to another governance topic?")
        time.sleep(0.1)


def _seq_of(line: str) -> int | None:
    with contextlib.suppress(ValueError, AttributeError):
        seq = json.loads(line).get("seq")
        return seq if isinstance(seq, int) else None
    return None


def newest_anchor(kafka: KafkaAccess, chain_topic: str = CHAIN_TOPIC,
                  governance_topic: str = GOVERNANCE_TOPIC) -> Anchor | None:
    """The newest anchor of `chain_topic` on the governance log (read back from its end), None if it has none."""
    tp = TopicPartition(governance_topic, 0)
    consumer = _reader(kafka, "accord-audit-verify", tp)
    try:
        first, stop, window = _beginning_offset(consumer, tp), _end_offset(consumer, tp), 256
        while stop > first:
            start = max(first, stop - window)
            consumer.seek(tp, start)
            for message in reversed(_read_until_end(consumer, tp, None, end=stop)):
                anchor = anchor_from_event(_json_or_none(message.value), chain_topic)
                if anchor is not None:
                    return anchor
            stop, window = start, window * 4
        return None
    finally:
        consumer.close()


def _json_or_none(value: bytes) -> Any:
    try:
        return json.loads(value)
    except ValueError:
        return None  # not an anchor; the governance service reports events it cannot read


def _beginning_offset(consumer: Any, tp: TopicPartition) -> int:
    try:
        return int(consumer.beginning_offsets([tp])[tp])
    except KafkaError as exc:
        raise ServiceError(f"reading the start of {tp.topic} failed: {exc}") from exc


def _end_offset(consumer: Any, tp: TopicPartition) -> int:
    try:
        return int(consumer.end_offsets([tp])[tp])
    except KafkaError as exc:
        raise ServiceError(f"reading the end of {tp.topic} failed: {exc}") from exc
