"""Reads the quarantine topics for the governance service, from where its own events say it stopped."""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable, Mapping
from typing import Any

from kafka import KafkaConsumer, TopicPartition
from kafka.errors import KafkaError

from broker.adapters.kafka_access import KafkaAccess
from broker.domain.topics import quarantine_topic
from broker.errors import ServiceError


class KafkaQuarantineFeed:
    """One consumer over every partition of `quarantine.<stream>` for `streams`; no consumer group, because the
    position that counts is the one recorded in the governance topic (which survives a restart with the state).
    `streams` may be asked each read (a catalog applied since may name new ones)."""

    def __init__(self, kafka: KafkaAccess, streams: Iterable[str] | Callable[[], Iterable[str]],
                 client_id: str = "accord-governance-quarantine") -> None:
        fixed = None if callable(streams) else list(streams)
        self._streams: Callable[[], Iterable[str]] = streams if callable(streams) else lambda: fixed or ()
        self._topics: list[str] = []
        self._consumer = KafkaConsumer(**kafka.client_options(), client_id=client_id, group_id=None,
                                       enable_auto_commit=False, isolation_level="read_committed")
        self._assigned: list[TopicPartition] = []
        self._positioned = False

    def read_new(self, positions: Mapping[str, int], timeout_s: float = 0.2) -> list[dict[str, Any]]:
        try:
            topics = sorted({quarantine_topic(stream) for stream in self._streams()})
            if topics != self._topics:
                self._topics, self._positioned = topics, False  # a new stream's topic: placed from `positions`
            if not self._positioned:
                self._assign(positions)
            if not self._assigned:
                return []
            entries: list[dict[str, Any]] = []
            for batch in self._consumer.poll(timeout_ms=int(timeout_s * 1000), max_records=1000).values():
                entries.extend(_entry(m) for m in batch if m.value is not None)
            return sorted(entries, key=lambda e: (e["position"]["topic"], e["position"]["partition"],
                                                  e["position"]["offset"]))
        except KafkaError as exc:
            raise ServiceError(f"reading the quarantine topics failed: {exc}") from exc

    def _assign(self, positions: Mapping[str, int]) -> None:
        found = [TopicPartition(topic, p) for topic in self._topics
                 for p in sorted(self._consumer.partitions_for_topic(topic) or ())]
        if found != self._assigned:
            self._consumer.assign(found)
            self._assigned = found
        for tp in found:
            self._consumer.seek(tp, positions.get(f"{tp.topic}/{tp.partition}", 0))
        # A topic created later is picked up on the next read; once all exist, the positions are the consumer's.
        self._positioned = len(found) == len(self._topics) or not self._topics

    def close(self) -> None:
        self._consumer.close()


def _entry(message: Any) -> dict[str, Any]:
    try:
        body = json.loads(message.value)
    except ValueError:
        body = {}
    position = {"topic": message.topic, "partition": message.partition, "offset": message.offset}
    return {**(body if isinstance(body, dict) else {}), "position": position}
