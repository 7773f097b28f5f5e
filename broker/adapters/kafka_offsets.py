"""End offsets asked of the partitions' current leaders, also after leadership moved.

kafka-python (3.0) answers NOT_LEADER_OR_FOLLOWER from a ListOffsets request by asking the same broker again,
without looking the leader up, until its metadata's periodic refresh (five minutes by default): after a broker of
a cluster restarts and its partitions' leadership has moved, a long-lived consumer's end offsets then time out.
Each attempt here is short, and between attempts the consumer's metadata is fetched again.
"""

from __future__ import annotations

import time
from collections.abc import Sequence

from kafka import KafkaConsumer, TopicPartition
from kafka.errors import KafkaTimeoutError

ATTEMPT_MS = 2000


def end_offsets(consumer: KafkaConsumer, partitions: Sequence[TopicPartition],
                timeout_s: float = 30.0) -> dict[TopicPartition, int]:
    """`consumer.end_offsets(partitions)` within `timeout_s`; KafkaTimeoutError (a KafkaError) after it."""
    deadline = time.monotonic() + timeout_s
    while True:
        left_ms = int((deadline - time.monotonic()) * 1000)
        try:
            found = consumer.end_offsets(list(partitions), timeout_ms=max(1, min(ATTEMPT_MS, left_ms)))
            return {tp: int(offset) for tp, offset in found.items()}
        except KafkaTimeoutError:
            if time.monotonic() >= deadline:
                raise
        consumer.topics()  # a metadata request: where each partition's leader is now


def end_offset(consumer: KafkaConsumer, partition: TopicPartition, timeout_s: float = 30.0) -> int:
    return end_offsets(consumer, [partition], timeout_s)[partition]
