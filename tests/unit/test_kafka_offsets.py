"""End offsets looked up again at the leader after NOT_LEADER answers (kafka-python retries the old broker)."""

from __future__ import annotations

from typing import Any

import pytest
from kafka import TopicPartition
from kafka.errors import KafkaTimeoutError

from broker.adapters.kafka_offsets import end_offset

TP = TopicPartition("_accord.schemas", 0)


class StaleConsumer:
    """Times out (asking a broker that is no longer the leader) until its metadata is fetched again."""

    def __init__(self, refreshes_needed: int = 1) -> None:
        self.refreshes = 0
        self.needed = refreshes_needed
        self.timeouts: list[int] = []

    def end_offsets(self, partitions: list[TopicPartition], timeout_ms: int) -> dict[TopicPartition, int]:
        if self.refreshes < self.needed:
            self.timeouts.append(timeout_ms)
            raise KafkaTimeoutError("Failed to get offsets by timestamps")
        return {tp: 42 for tp in partitions}

    def topics(self) -> set[str]:
        self.refreshes += 1
        return {TP.topic}


def test_a_stale_leader_is_looked_up_again_instead_of_waiting_out_the_whole_timeout() -> None:
    consumer: Any = StaleConsumer()
    assert end_offset(consumer, TP, timeout_s=30) == 42
    assert consumer.refreshes == 1
    assert consumer.timeouts == [2000]  # one short attempt, not the whole 30 s


def test_it_still_times_out_when_no_leader_answers() -> None:
    consumer: Any = StaleConsumer(refreshes_needed=10**9)
    with pytest.raises(KafkaTimeoutError):
        end_offset(consumer, TP, timeout_s=0.05)
