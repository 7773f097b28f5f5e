"""Consume-transform-produce in Kafka transactions: a group consumer plus a transactional producer (KIP-447)."""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from typing import Any

from kafka import KafkaConsumer, KafkaProducer, TopicPartition
from kafka.errors import KafkaError
from kafka.structs import OffsetAndMetadata

from broker.adapters.kafka_access import KafkaAccess
from broker.domain.messages import Record
from broker.errors import ServiceError

log = logging.getLogger(__name__)

RETRY_BACKOFF_MS = 20  # the Java client's backoff for AddPartitionsToTxn refused with CONCURRENT_TRANSACTIONS
# A fetch leaves out partitions whose fetched records are still buffered and only one fetch per broker is in flight,
# so a fetch for partitions with nothing new (the broker holds it up to this long) delays the busy ones behind it;
# at the default 500 ms that added up to half a second to one record in a hundred at 1,000 records/s.
FETCH_MAX_WAIT_MS = 100
METADATA_REFRESH_MS = 10_000  # how soon a subscribed topic unknown to the metadata is looked for again



def transactional_producer(kafka: KafkaAccess, transactional_id: str, what: str, **options: Any) -> KafkaProducer:
    """An idempotent producer with its transactions started: `init_transactions` fences an older producer of the
    same id and finishes (aborts or completes) whatever it left open. `what` names the writer in the error."""
    producer = KafkaProducer(**kafka.client_options(), client_id=transactional_id, transactional_id=transactional_id,
                             acks="all", enable_idempotence=True, retry_backoff_ms=RETRY_BACKOFF_MS,
                             **{"linger_ms": 0, **options})
    try:
        producer.init_transactions()
    except KafkaError as exc:
        producer.close()
        raise ServiceError(f"could not start the {what} {transactional_id!r}: {exc}") from exc
    return producer

def fence_transactions(kafka: KafkaAccess, transactional_id: str) -> None:
    """Fence every earlier producer of `transactional_id` and abort the transaction it left open, at once (a
    producer made for that alone, closed again)."""
    transactional_producer(kafka, transactional_id, "fence").close()


class TransactionalStage:
    """Records consumed by one batch and everything produced for them commit together, or not at all.

    Offsets are committed through the producer with the consumer's group metadata, so a worker that lost its
    partitions in a rebalance is fenced by the broker instead of committing stale offsets.
    """

    def __init__(self, kafka: KafkaAccess, group_id: str, topics: Sequence[str], transactional_id: str,
                 transaction_timeout_ms: int = 10_000, session_timeout_ms: int = 6_000,
                 max_poll_records: int = 500, start_from: str = "earliest") -> None:
        self._start_from = start_from
        self._from_start: set[str] = set()  # topics subscribed to at runtime: they start at their beginning
        self._checked: set[TopicPartition] = set()  # their partitions whose start this worker has fixed
        self._consumer = KafkaConsumer(
            **kafka.client_options(), group_id=group_id, client_id=transactional_id,
            enable_auto_commit=False, isolation_level="read_committed", auto_offset_reset=start_from,
            session_timeout_ms=session_timeout_ms, heartbeat_interval_ms=max(500, session_timeout_ms // 3),
            max_poll_records=max_poll_records, fetch_max_wait_ms=FETCH_MAX_WAIT_MS,
            # A topic subscribed to before the metadata knows it (a stream a catalog apply has just made) is found
            # at the next refresh: every 10 s, not the default of 5 minutes.
            metadata_max_age_ms=METADATA_REFRESH_MS,
        )
        self._consumer.subscribe(list(topics))
        # retry_backoff_ms: the first AddPartitionsToTxn (or AddOffsetsToTxn) after a commit is sometimes refused
        # with CONCURRENT_TRANSACTIONS while the coordinator still completes that commit; kafka-python's sender
        # sleeps retry_backoff_ms (default 100) before each retry, which stalled ~1.5% of commits by 100-200 ms.
        self._producer = transactional_producer(kafka, transactional_id, "transactions",
                                                transaction_timeout_ms=transaction_timeout_ms, linger_ms=5,
                                                batch_size=256 * 1024)
        self._in_transaction = False

    def subscribe(self, topics: Sequence[str], from_start: Sequence[str] = ()) -> None:
        """Consume `topics` from the next poll on (call between transactions: the group rebalances); a partition of
        a topic in `from_start` with no committed offset starts at its beginning (a stream added at runtime)."""
        self._from_start |= set(from_start)
        try:
            self._consumer.subscribe(list(topics))
        except KafkaError as exc:
            raise ServiceError(f"subscribing to {', '.join(topics)} failed: {exc}") from exc

    def poll(self, timeout_s: float, max_records: int | None = None) -> list[Record]:
        try:
            batches = self._consumer.poll(timeout_ms=int(timeout_s * 1000), max_records=max_records)
            if self._from_start and self._start_from != "earliest":
                batches = self._from_their_start(batches)
        except KafkaError as exc:
            raise ServiceError(f"consuming failed: {exc}") from exc
        return [Record(m.topic, m.partition, m.offset, m.key, m.value, tuple(m.headers))
                for batch in batches.values() for m in batch]

    def _from_their_start(self, batches: dict[Any, list[Any]]) -> dict[Any, list[Any]]:
        """A runtime topic's partition newly assigned without a committed offset was placed at its end by the
        consumer's reset policy (`start_from` latest): it goes back to its start, and what this poll read of it is
        dropped (it is read again from there; nothing of it was committed)."""
        assigned = self._consumer.assignment()
        self._checked &= assigned
        rewound = set()
        for tp in assigned:
            if tp.topic in self._from_start and tp not in self._checked:
                self._checked.add(tp)
                if self._consumer.committed(tp) is None:
                    self._consumer.seek_to_beginning(tp)
                    rewound.add(tp)
        return {tp: batch for tp, batch in batches.items() if tp not in rewound}

    def ready(self) -> bool:
        """True once partitions are assigned and their positions resolved (a group starting at `latest` has then
        fixed where it starts, so anything published afterwards is consumed)."""
        assigned = self._consumer.assignment()
        if not assigned:
            return False
        for tp in assigned:
            self._consumer.position(tp)
        return True

    def positions(self) -> dict[tuple[str, int], int]:
        """Each assigned partition's position: where the next batch of it starts."""
        try:
            return {(tp.topic, tp.partition): int(self._consumer.position(tp)) for tp in self._consumer.assignment()}
        except KafkaError as exc:
            raise ServiceError(f"could not read the consumer's positions: {exc}") from exc

    def begin(self) -> None:
        self._producer.begin_transaction()
        self._in_transaction = True

    def send(self, topic: str, value: bytes | None, key: bytes | None = None,
             headers: Sequence[tuple[str, bytes]] = ()) -> Callable[[], tuple[int, int]]:
        """Send within the open transaction; returns what tells (partition, offset) once `flush` has returned."""
        future = self._producer.send(topic, value=value, key=key, headers=list(headers))
        return lambda: _placement(future)

    def flush(self) -> None:
        """Wait until the broker has every record sent so far (their offsets are then known)."""
        try:
            self._producer.flush(timeout=30)
        except KafkaError as exc:
            raise ServiceError(f"producing failed: {exc}") from exc

    def commit(self, consumed: Sequence[Record], fenced: bool = False) -> None:
        """Commit the produced records together with the offsets after `consumed`. `fenced`: also commit every
        assigned partition's position, so that the group fences the commit of a worker that lost them even when
        it consumed nothing (history replayed for a partition must be replayed by its owner only)."""
        offsets: dict[TopicPartition, OffsetAndMetadata] = {}
        if fenced:
            for (topic, partition), position in self.positions().items():
                offsets[TopicPartition(topic, partition)] = OffsetAndMetadata(position, "", -1)
        for record in consumed:
            offsets[TopicPartition(record.topic, record.partition)] = OffsetAndMetadata(record.offset + 1, "", -1)
        try:
            if offsets:
                self._producer.send_offsets_to_transaction(offsets, self._consumer.group_metadata())
            self._producer.commit_transaction()
        except KafkaError as exc:
            self.abort()
            raise ServiceError(f"committing the transaction failed (aborted, will be re-read): {exc}") from exc
        finally:
            self._in_transaction = False

    def abort(self) -> None:
        """Abort the open transaction and rewind to the committed offsets so the batch is consumed again."""
        if self._in_transaction:
            try:
                self._producer.abort_transaction()
            except KafkaError as exc:
                log.warning("aborting the transaction failed: %s", exc)
            self._in_transaction = False
        self._rewind()

    def _rewind(self) -> None:
        for tp in self._consumer.assignment():
            committed: Any = self._consumer.committed(tp)
            if committed is None:
                self._consumer.seek_to_beginning(tp)
            else:
                self._consumer.seek(tp, int(committed))

    def close(self) -> None:
        if self._in_transaction:
            self.abort()
        self._consumer.close()
        self._producer.close()


def _placement(future: Any) -> tuple[int, int]:
    try:
        metadata = future.get(timeout=0)
    except KafkaError as exc:
        raise ServiceError(f"producing to a delivery topic failed: {exc}") from exc
    return int(metadata.partition), int(metadata.offset)
