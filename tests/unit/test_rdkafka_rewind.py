"""The librdkafka gate stage never consumes past an aborted batch, nor from a guessed offset, while the broker cannot
say where its group committed (a broker restarting): it waits and tries again. A fake consumer and producer stand in
for librdkafka; the stage's own logic is what is tested."""

from __future__ import annotations

import threading
from typing import Any, cast

import pytest
from confluent_kafka import OFFSET_INVALID, KafkaError, KafkaException, TopicPartition

from broker.adapters import rdkafka_transactions
from broker.adapters.kafka_access import KafkaAccess
from broker.errors import ServiceError


class _Message:
    def __init__(self, topic: str, offset: int) -> None:
        self._topic, self._offset = topic, offset

    def error(self) -> None:
        return None

    def topic(self) -> str:
        return self._topic

    def partition(self) -> int:
        return 0

    def offset(self) -> int:
        return self._offset

    def key(self) -> bytes:
        return b"k"

    def value(self) -> bytes:
        return b"v%d" % self._offset

    def headers(self) -> list[Any]:
        return []

    def timestamp(self) -> tuple[int, int]:
        return (1, 1_000)


class _Consumer:
    """One partition of ten records; `committed` answers from `committed_at`, or fails while `unreachable` > 0."""

    def __init__(self, config: dict[str, Any]) -> None:
        self.config, self.position, self.committed_at = config, 0, OFFSET_INVALID
        self.unreachable = 0
        self.assigned: list[TopicPartition] = []
        self.paused: set[tuple[str, int]] = set()
        self.on_assign: Any = None
        _made.append(self)

    def subscribe(self, topics: list[str], on_assign: Any = None, **_: Any) -> None:
        self.on_assign = on_assign

    def rebalance(self) -> None:
        self.on_assign(self, [TopicPartition("ingest.t", 0)])

    def committed(self, partitions: list[TopicPartition], timeout: float) -> list[TopicPartition]:
        if self.unreachable:
            self.unreachable -= 1
            raise KafkaException(KafkaError(KafkaError._TIMED_OUT_QUEUE, "Timed out in queue"))
        return [TopicPartition(tp.topic, tp.partition, self.committed_at) for tp in partitions]

    def get_watermark_offsets(self, tp: TopicPartition, timeout: float, cached: bool) -> tuple[int, int]:
        return (0, 10)

    def assign(self, partitions: list[TopicPartition]) -> None:
        self.assigned = list(partitions)
        for tp in partitions:
            if tp.offset >= 0:
                self.position = tp.offset

    def assignment(self) -> list[TopicPartition]:
        return [TopicPartition(tp.topic, tp.partition) for tp in self.assigned]

    def pause(self, partitions: list[TopicPartition]) -> None:
        self.paused |= {(tp.topic, tp.partition) for tp in partitions}

    def resume(self, partitions: list[TopicPartition]) -> None:
        self.paused -= {(tp.topic, tp.partition) for tp in partitions}

    def seek(self, tp: TopicPartition) -> None:
        self.position = tp.offset

    def consume(self, num_messages: int, timeout: float) -> list[_Message]:
        if not self.assigned or self.paused:
            return []
        end = min(10, self.position + num_messages)
        found = [_Message("ingest.t", o) for o in range(self.position, end)]
        self.position = end
        return found

    def consumer_group_metadata(self) -> object:
        return object()

    def close(self) -> None:
        pass


class _Producer:
    def __init__(self, config: dict[str, Any]) -> None:
        self.config = config

    def init_transactions(self, timeout: float) -> None:
        pass

    def begin_transaction(self) -> None:
        pass

    def abort_transaction(self, timeout: float) -> None:
        pass

    def flush(self, timeout: float) -> int:
        return 0


_made: list[_Consumer] = []


Staged = tuple[rdkafka_transactions.RdkafkaTransactionalStage, _Consumer]


@pytest.fixture
def staged(monkeypatch: pytest.MonkeyPatch) -> Staged:
    _made.clear()
    monkeypatch.setattr(rdkafka_transactions, "Consumer", _Consumer)
    monkeypatch.setattr(rdkafka_transactions, "Producer", _Producer)
    made = rdkafka_transactions.RdkafkaTransactionalStage(KafkaAccess("127.0.0.1:9"), "g", ["ingest.t"], "tx-1",
                                                           max_poll_records=4)
    return made, _made[-1]


def test_an_aborted_batch_is_consumed_again_even_when_the_committed_offsets_cannot_be_read_at_once(
        staged: Staged) -> None:
    stage, consumer = staged
    consumer.rebalance()
    consumer.committed_at = 2
    stage._unsettled = True         # as after an assignment: placed at the committed offset first
    assert [r.offset for r in stage.poll(0.0)] == [2, 3, 4, 5]
    stage.begin()
    consumer.unreachable = 3        # the broker restarts: the rewind cannot read where the group committed
    stage.abort()
    for _ in range(2):
        with pytest.raises(ServiceError, match="committed offsets"):
            stage.poll(0.0)
    assert consumer.position == 6, "nothing was consumed while the committed offsets were unknown"
    assert [r.offset for r in stage.poll(0.0)] == [2, 3, 4, 5], "the aborted batch, again, not what followed it"
    assert stage.positions() == {("ingest.t", 0): 6}


def test_an_assignment_whose_committed_offsets_cannot_be_read_is_held_until_they_can(staged: Staged) -> None:
    stage, consumer = staged
    consumer.committed_at = 7
    consumer.unreachable = 1
    consumer.rebalance()            # inside consume(): must not raise, must not start from a guess
    assert consumer.paused == {("ingest.t", 0)}
    assert consumer.position == 0 and stage.positions() == {}
    assert stage.ready(), "placed at the committed offset once it could be read"
    assert consumer.paused == set()
    assert [r.offset for r in stage.poll(0.0)] == [7, 8, 9]


def test_a_partition_with_no_committed_offset_starts_where_it_started_when_assigned(staged: Staged) -> None:
    stage, consumer = staged
    consumer.rebalance()            # nothing committed: the start (earliest) is 0
    assert [r.offset for r in stage.poll(0.0)] == [0, 1, 2, 3]
    stage.begin()
    stage.abort()
    assert [r.offset for r in stage.poll(0.0)] == [0, 1, 2, 3]


class _StuckProducer(_Producer):
    """send_offsets_to_transaction blocks past its timeout, as librdkafka's can while the group coordinator is
    found again after a broker restart."""

    release = threading.Event()

    def send_offsets_to_transaction(self, offsets: Any, metadata: Any, timeout: float) -> None:
        self.release.wait(5.0)
        raise KafkaException(KafkaError(KafkaError._FENCED, "fenced by its replacement"))


def test_a_commit_stuck_past_its_timeout_sets_the_producer_aside_and_the_batch_is_read_again(
        monkeypatch: pytest.MonkeyPatch) -> None:
    _made.clear()
    _StuckProducer.release = threading.Event()
    producers: list[_Producer] = []

    def producer(config: dict[str, Any]) -> _Producer:
        made = _StuckProducer(config) if not producers else _Producer(config)
        producers.append(made)
        return made
    monkeypatch.setattr(rdkafka_transactions, "Consumer", _Consumer)
    monkeypatch.setattr(rdkafka_transactions, "Producer", producer)
    stage = rdkafka_transactions.RdkafkaTransactionalStage(KafkaAccess("127.0.0.1:9"), "g", ["ingest.t"], "tx-1",
                                                           max_poll_records=4)
    stage._wedged_after_s = 0.2
    consumer = _made[-1]
    consumer.rebalance()
    batch = stage.poll(0.0)
    stage.begin()
    try:
        with pytest.raises(ServiceError, match="did not return within"):
            stage.commit(batch)
    finally:
        _StuckProducer.release.set()
    assert len(producers) == 2 and stage._producer is cast(Any, producers[1]), "a new one, which fences the stuck"
    assert stage._set_aside == cast(Any, [producers[0]])
    assert [r.offset for r in stage.poll(0.0)] == [0, 1, 2, 3], "the batch is read again"
