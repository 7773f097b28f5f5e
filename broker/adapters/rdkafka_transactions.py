"""The gate's consume-transform-produce stage on librdkafka (confluent-kafka): the same contract as
kafka_transactions.TransactionalStage, measured 2-4x faster on the same broker (issue 18), so the data path can run
on either client and each can be measured against the other.

A group consumer (read_committed) and a transactional producer (KIP-447): the records one batch consumed and
everything produced for them commit together, or not at all; offsets go through the producer with the consumer's
group metadata, so a worker that lost its partitions is fenced by the broker. librdkafka serves the group's
rebalances from inside `consume`, so where each assigned partition starts is fixed there (`on_assign`): the
committed offset, else the topic's start or end as `start_from` says (always the start for a topic subscribed to at
runtime, a new stream's); the stage keeps every position itself.
"""

from __future__ import annotations

import contextlib
import logging
import threading
from collections.abc import Callable, Sequence

from confluent_kafka import (
    OFFSET_INVALID,
    TIMESTAMP_NOT_AVAILABLE,
    Consumer,
    KafkaError,
    KafkaException,
    Message,
    Producer,
    TopicPartition,
)

from broker.adapters.kafka_access import KafkaAccess
from broker.domain.messages import Record
from broker.errors import ServiceError, WriterFenced

log = logging.getLogger(__name__)

# With librdkafka's default retry backoff (100 ms) a small transaction's AddPartitionsToTxn refused with
# CONCURRENT_TRANSACTIONS while the coordinator completes the previous commit waited that long: slower than
# kafka-python on small transactions. 10-20 ms was the measured sweet spot (issue 18).
RETRY_BACKOFF_MS = 20
FETCH_WAIT_MAX_MS = 100      # as kafka_transactions.FETCH_MAX_WAIT_MS, and for the same reason
METADATA_REFRESH_MS = 10_000  # as kafka_transactions.METADATA_REFRESH_MS
TIMEOUT_S = 30.0
# send_offsets_to_transaction can block past its timeout while the group coordinator is being found again after a
# broker restart (librdkafka issue 5456: a coordinator request's timeout is never checked). The stage waits this long
# for a commit, then sets the producer aside and takes a new one (which fences it) rather than wait for ever.
WEDGED_AFTER_S = TIMEOUT_S + 15.0


# Fenced by a newer producer of the same transactional id (librdkafka's own code, and the broker's).
FENCED_CODES = frozenset({KafkaError._FENCED, KafkaError.PRODUCER_FENCED, KafkaError.INVALID_PRODUCER_EPOCH})
KEYED_PARTITIONER = "murmur2_random"  # Java's partitioner: murmur2 of the key; a record without one, anywhere


class RdkafkaTransactionalStage:
    """Records consumed by one batch and everything produced for them commit together, or not at all."""

    def __init__(self, kafka: KafkaAccess, group_id: str, topics: Sequence[str], transactional_id: str,
                 transaction_timeout_ms: int = 10_000, session_timeout_ms: int = 6_000,
                 max_poll_records: int = 500, start_from: str = "earliest") -> None:
        if start_from not in ("earliest", "latest"):
            raise ServiceError(f"a gate starts from 'earliest' or 'latest', not {start_from!r}")
        self._start_from, self._max_records = start_from, max_poll_records
        self._from_start: set[str] = set()      # topics subscribed to at runtime: they start at their beginning
        self._positions: dict[tuple[str, int], int] = {}
        self._starts: dict[tuple[str, int], int] = {}     # where each partition started when assigned
        self._pending: list[Record] = []        # consumed while waiting to be ready, handed out by the next poll
        # The assigned partitions must be put back at their committed offsets before anything more is consumed
        # (a batch was aborted, or an assignment came while the committed offsets could not be read).
        self._unsettled = False
        self._consumer = Consumer({
            **kafka.librdkafka_options(), "group.id": group_id, "client.id": transactional_id,
            "enable.auto.commit": False, "enable.auto.offset.store": False, "isolation.level": "read_committed",
            "auto.offset.reset": start_from, "session.timeout.ms": session_timeout_ms,
            "heartbeat.interval.ms": max(500, session_timeout_ms // 3), "fetch.wait.max.ms": FETCH_WAIT_MAX_MS,
            "enable.partition.eof": False, "log_level": 3,
            # A topic subscribed to before the metadata knows it (a stream a catalog apply has just made) is found
            # at the next refresh: every 10 s, not librdkafka's default of 5 minutes.
            "topic.metadata.refresh.interval.ms": METADATA_REFRESH_MS,
        })
        self._consumer.subscribe(list(topics), on_assign=self._assigned, on_revoke=self._revoked,
                                 on_lost=self._revoked)
        self._producer_config = {
            **kafka.librdkafka_options(), "client.id": transactional_id, "transactional.id": transactional_id,
            "retry.backoff.ms": RETRY_BACKOFF_MS,
            "transaction.timeout.ms": transaction_timeout_ms, "linger.ms": 5, "batch.size": 256 * 1024,
            # librdkafka's own default (CRC32) would send a key to another partition than the Java client and
            # kafka-python (murmur2) do: a delivery topic written by workers of both transports would split one
            # area's records over two partitions, and their order with them (domain/partitions.py).
            "partitioner": KEYED_PARTITIONER, "log_level": 3,
        }
        self._broken = False  # the producer had a fatal error: the next transaction takes a new one
        self._set_aside: list[Producer] = []  # producers stuck in a call: kept, never destroyed while they block
        self._wedged_after_s = WEDGED_AFTER_S
        try:
            self._producer = self._new_producer()
        except ServiceError:
            self._consumer.close()
            raise
        self._in_transaction = False

    def _new_producer(self) -> Producer:
        """A transactional producer of this worker's id, its transactions initialised: whatever an earlier producer
        of the id left open is aborted, and that producer is fenced."""
        producer = Producer({**self._producer_config, "acks": "all", "enable.idempotence": True})
        try:
            producer.init_transactions(TIMEOUT_S)
        except KafkaException as exc:
            raise ServiceError(f"could not start the transactions {self._producer_config['transactional.id']!r}: "
                               f"{_said(exc)}") from exc
        return producer

    def _failed(self, exc: KafkaException) -> str:
        """What went wrong, noting a fatal error: such a producer never works again (its transaction left in an
        invalid state, for example because a broker paused past the transaction timeout and the coordinator aborted
        it with a new epoch); the next transaction takes a new producer. Raises WriterFenced when another live
        worker took this worker's transactional id: this worker must stop, not take the id back."""
        error = exc.args[0] if exc.args else None
        if isinstance(error, KafkaError) and error.code() in FENCED_CODES:
            raise WriterFenced(f"another worker took over the transactional id "
                               f"{self._producer_config['transactional.id']!r}: {_said(exc)}") from exc
        if isinstance(error, KafkaError) and error.fatal():
            self._broken = True
        return _said(exc)

    # -- the group's assignment, served from inside consume() ---------------------------------------------------

    def _assigned(self, consumer: Consumer, partitions: list[TopicPartition]) -> None:
        """Fix where each newly assigned partition starts: its committed offset, else the start or end. When the
        committed offsets cannot be read (the broker restarting), the partitions are assigned paused and placed
        before the next batch instead: never consumed from a guessed offset."""
        try:
            consumer.assign(self._placed(consumer, partitions, fresh=True))
        except KafkaException as exc:
            log.warning("the committed offsets of newly assigned partitions could not be read (placed before the "
                        "next batch): %s", _said(exc))
            consumer.assign(partitions)
            consumer.pause(partitions)
            self._unsettled = True

    def _placed(self, consumer: Consumer, partitions: list[TopicPartition], fresh: bool) -> list[TopicPartition]:
        """`partitions` with the offsets to consume them from: each one's committed offset; where there is none,
        where it started when assigned, or (`fresh`, or its start not known) the topic's start or end as
        `start_from` says. Records each position. Raises KafkaException when the broker cannot say."""
        committed = consumer.committed(partitions, timeout=TIMEOUT_S)
        for tp in committed:
            key = (tp.topic, tp.partition)
            offset = tp.offset
            if offset < 0 or offset == OFFSET_INVALID:
                if not fresh and key in self._starts:
                    offset = self._starts[key]
                else:
                    low, high = consumer.get_watermark_offsets(tp, timeout=TIMEOUT_S, cached=False)
                    offset = high if self._start_from == "latest" and tp.topic not in self._from_start else low
            tp.offset = offset
            if fresh or key not in self._starts:
                self._starts[key] = offset
            self._positions[key] = offset
        return committed

    def _revoked(self, consumer: Consumer, partitions: list[TopicPartition]) -> None:
        for tp in partitions:
            self._positions.pop((tp.topic, tp.partition), None)
            self._starts.pop((tp.topic, tp.partition), None)
        self._pending = [r for r in self._pending if (r.topic, r.partition) in self._positions]
        consumer.unassign()

    # -- the Stage port ------------------------------------------------------------------------------------------

    def subscribe(self, topics: Sequence[str], from_start: Sequence[str] = ()) -> None:
        """Consume `topics` from the next poll on (call between transactions: the group rebalances); a partition of
        a topic in `from_start` with no committed offset starts at its beginning (a stream added at runtime)."""
        self._from_start |= set(from_start)
        try:
            self._consumer.subscribe(list(topics), on_assign=self._assigned, on_revoke=self._revoked,
                                     on_lost=self._revoked)
        except KafkaException as exc:
            raise ServiceError(f"subscribing to {', '.join(topics)} failed: {_said(exc)}") from exc

    def poll(self, timeout_s: float, max_records: int | None = None) -> list[Record]:
        wanted = max_records or self._max_records
        records, self._pending = self._pending[:wanted], self._pending[wanted:]
        if len(records) < wanted:
            records += self._consume(wanted - len(records), timeout_s if not records else 0.0)
        return records

    def _consume(self, count: int, timeout_s: float) -> list[Record]:
        if self._unsettled:
            self._settle()
        try:
            # librdkafka's consume() waits until it has `count` messages or the timeout has passed: at a trickle
            # (1,000 records/s) every batch waited out the whole timeout. Wait for the first message alone, then
            # take what is queued already.
            messages = self._consumer.consume(num_messages=1, timeout=timeout_s) if timeout_s > 0 else []
            if len(messages) < count:
                messages += self._consumer.consume(num_messages=count - len(messages), timeout=0)
        except KafkaException as exc:
            raise ServiceError(f"consuming failed: {_said(exc)}") from exc
        records = []
        for m in messages:
            error = m.error()
            if error is not None:
                if error.code() == KafkaError._PARTITION_EOF:
                    continue
                raise ServiceError(f"consuming failed: {error}")
            records.append(_record(m))
            self._positions[(str(m.topic()), int(m.partition() or 0))] = int(m.offset() or 0) + 1
        return records

    def ready(self) -> bool:
        """True once the group has assigned partitions and their starts are fixed (a group starting at `latest`
        has then fixed where it starts, so anything published afterwards is consumed)."""
        if not self._positions or self._unsettled:
            try:
                self._pending += self._consume(self._max_records, 0.1)
            except ServiceError as exc:
                log.warning("not ready yet: %s", exc)
                return False
        return bool(self._positions) and not self._unsettled

    def positions(self) -> dict[tuple[str, int], int]:
        """Each assigned partition's position: where the next batch of it starts (records handed out count)."""
        found = dict(self._positions)
        for record in self._pending:        # consumed but not yet handed out: the position is before them
            key = (record.topic, record.partition)
            found[key] = min(found.get(key, record.offset), record.offset)
        return found

    def begin(self) -> None:
        if self._broken:
            self._producer = self._new_producer()
            self._broken = False
            log.warning("a new transactional producer replaced one that had a fatal error")
        try:
            self._producer.begin_transaction()
        except KafkaException as exc:
            raise ServiceError(f"could not begin a transaction: {self._failed(exc)}") from exc
        self._in_transaction = True

    def send(self, topic: str, value: bytes | None, key: bytes | None = None,
             headers: Sequence[tuple[str, bytes]] = ()) -> Callable[[], tuple[int, int]]:
        """Send within the open transaction; returns what tells (partition, offset) once `flush` has returned."""
        placed = _Placement(topic)
        listed = headers if isinstance(headers, list) else list(headers)
        while True:
            try:
                self._producer.produce(topic, value=value, key=key, headers=listed, on_delivery=placed.delivered)
                break
            except BufferError:         # the local queue is full: let deliveries drain, then send again
                self._producer.poll(0.1)
            except KafkaException as exc:
                raise ServiceError(f"producing to {topic} failed: {self._failed(exc)}") from exc
        return placed

    def flush(self) -> None:
        """Wait until the broker has every record sent so far (their offsets are then known)."""
        try:
            left = self._producer.flush(TIMEOUT_S)
        except SystemError as exc:  # a delivery callback ran with librdkafka's fatal error (a fencing) raised
            cause = exc.__cause__
            said = self._failed(cause) if isinstance(cause, KafkaException) else str(exc)
            raise ServiceError(f"producing failed: {said}") from exc
        except KafkaException as exc:
            raise ServiceError(f"producing failed: {self._failed(exc)}") from exc
        if left:
            raise ServiceError(f"producing failed: {left} records not acknowledged within {TIMEOUT_S:.0f} s")

    def commit(self, consumed: Sequence[Record], fenced: bool = False) -> None:
        """Commit the produced records together with the offsets after `consumed`. `fenced`: also commit every
        assigned partition's position, so that the group fences the commit of a worker that lost them even when
        it consumed nothing."""
        offsets: dict[tuple[str, int], int] = dict(self.positions()) if fenced else {}
        for record in consumed:
            offsets[(record.topic, record.partition)] = record.offset + 1
        producer, metadata = self._producer, self._consumer.consumer_group_metadata()

        def committing() -> None:
            if offsets:
                producer.send_offsets_to_transaction(
                    [TopicPartition(t, p, o) for (t, p), o in sorted(offsets.items())], metadata, TIMEOUT_S)
            producer.commit_transaction(TIMEOUT_S)
        try:
            self._within(committing, "committing the transaction")
        except KafkaException as exc:
            said = self._failed(exc)
            self._in_transaction = True
            self.abort()
            raise ServiceError(f"committing the transaction failed (aborted, will be re-read): {said}") from exc
        except ServiceError:        # stuck: the producer was set aside, its transaction ended by its replacement
            self._rewind()
            raise
        finally:
            self._in_transaction = False

    def _within(self, call: Callable[[], None], what: str) -> None:
        """Run a transactional call that librdkafka may let block past its own timeout; when it has not returned
        `_wedged_after_s` later, the producer is set aside (kept alive: destroying it would block too) and the next
        transaction takes a new one, whose initialisation fences it and aborts what it left open."""
        outcome: list[BaseException] = []
        done = threading.Event()

        def run() -> None:
            try:
                call()
            except BaseException as exc:  # handed to the caller's thread
                outcome.append(exc)
            finally:
                done.set()
        threading.Thread(target=run, name=f"{self._producer_config['client.id']}-txn", daemon=True).start()
        if not done.wait(self._wedged_after_s):
            self._set_aside.append(self._producer)
            self._broken = True
            log.error("%s did not return within %.0f s; that producer is set aside and replaced", what,
                      self._wedged_after_s)
            with contextlib.suppress(ServiceError):    # else the next transaction tries again
                self._producer = self._new_producer()  # fences the stuck one at once: it can commit nothing now
                self._broken = False
            raise ServiceError(f"{what} did not return within {self._wedged_after_s:.0f} s (the transaction is "
                               "aborted by the producer that replaces it, and the batch re-read)")
        if outcome:
            raise outcome[0]

    def abort(self) -> None:
        """Abort the open transaction and rewind to the committed offsets so the batch is consumed again."""
        if self._in_transaction and not self._broken:  # a broken producer's transaction ends with its replacement
            try:
                self._producer.abort_transaction(TIMEOUT_S)
            except KafkaException as exc:
                log.warning("aborting the transaction failed: %s", self._failed(exc))
        self._in_transaction = False
        self._rewind()

    def _rewind(self) -> None:
        """Back to the committed offsets (where a partition has none yet: where it started when assigned). When
        they cannot be read now, nothing more is consumed until they can: the next poll tries again, and raises
        until it succeeds, so an aborted batch is never skipped."""
        self._pending = []
        self._unsettled = True
        try:
            self._settle()
        except ServiceError as exc:
            log.warning("%s; tried again before the next batch", exc)

    def _settle(self) -> None:
        """Put every assigned partition at its committed offset, and consume it again from there."""
        assigned = self._consumer.assignment()
        if not assigned:
            self._unsettled = False
            return
        try:
            placed = self._placed(self._consumer, assigned, fresh=False)
        except KafkaException as exc:
            raise ServiceError(f"could not read the committed offsets to rewind to: {_said(exc)}") from exc
        try:
            for tp in placed:
                self._consumer.seek(tp)
        except KafkaException:      # a partition not fetched yet cannot be sought: assign the offsets instead
            self._consumer.assign(placed)
        self._consumer.resume(placed)
        self._unsettled = False

    def close(self) -> None:
        try:
            if self._in_transaction:
                self.abort()
        except WriterFenced as exc:     # its transaction is the newer worker's to end
            log.warning("closing: %s", exc)
        finally:
            self._consumer.close()
            with contextlib.suppress(KafkaException):  # a broken producer raises its fatal error again
                self._producer.flush(TIMEOUT_S)


def _record(m: Message) -> Record:
    found = m.headers() or []
    pairs = found.items() if isinstance(found, dict) else found
    headers = tuple((str(k), v.encode() if isinstance(v, str) else bytes(v or b"")) for k, v in pairs)
    key, value = m.key(), m.value()
    kind, timestamp = m.timestamp()
    return Record(str(m.topic()), int(m.partition() or 0), int(m.offset() or 0),
                  key.encode() if isinstance(key, str) else key, value.encode() if isinstance(value, str) else value,
                  headers, timestamp_ms=timestamp if kind != TIMESTAMP_NOT_AVAILABLE else None)


class _Placement:
    """Where one sent record landed, as its delivery report tells (one small object per record: a gate sends one
    per delivery, 24 per record at the widest fan-out)."""

    __slots__ = ("_outcome", "_topic")

    def __init__(self, topic: str) -> None:
        self._topic = topic
        self._outcome: tuple[int, int] | KafkaError | None = None

    def delivered(self, error: KafkaError | None, message: Message) -> None:
        self._outcome = error if error is not None else (int(message.partition() or 0), int(message.offset() or 0))

    def __call__(self) -> tuple[int, int]:
        outcome = self._outcome
        if outcome is None:
            raise ServiceError(f"producing to {self._topic} failed: no acknowledgement yet (flush first)")
        if isinstance(outcome, KafkaError):
            raise ServiceError(f"producing to {self._topic} failed: {outcome}")
        return outcome


def _said(exc: KafkaException) -> str:
    error = exc.args[0] if exc.args else None
    return str(error.str() if isinstance(error, KafkaError) else exc)
