"""One topic read from positions the reader keeps itself (no consumer group), read_committed: a sink's source."""

from __future__ import annotations

from collections.abc import Mapping

from kafka import KafkaConsumer, TopicPartition
from kafka.errors import KafkaError

from broker.adapters.kafka_access import KafkaAccess
from broker.domain.messages import Record
from broker.errors import ServiceError


class KafkaPartitionReader:
    """All partitions of `topic`, assigned (never subscribed), so only the sink's own stored positions count."""

    def __init__(self, kafka: KafkaAccess, topic: str, client_id: str = "accord-sink") -> None:
        self.topic = topic
        try:
            self._consumer = KafkaConsumer(**kafka.client_options(), client_id=client_id, group_id=None,
                                           isolation_level="read_committed", enable_auto_commit=False,
                                           auto_offset_reset="earliest")
            partitions = sorted(self._consumer.partitions_for_topic(topic) or set())
        except KafkaError as exc:
            raise ServiceError(f"cannot reach Kafka at {kafka}: {exc}") from exc
        if not partitions:
            self._consumer.close()
            raise ServiceError(f"{kafka.principal} sees no topic {topic!r}: it does not exist yet (no delivery was "
                               "made) or this login may not read it")
        self._tps = [TopicPartition(topic, p) for p in partitions]
        self._consumer.assign(self._tps)

    def seek(self, positions: Mapping[int, int]) -> None:
        for tp in self._tps:
            if tp.partition in positions:
                self._consumer.seek(tp, positions[tp.partition])
            else:
                self._consumer.seek_to_beginning(tp)

    def poll(self, max_records: int, timeout_s: float) -> list[Record]:
        try:
            batches = self._consumer.poll(timeout_ms=int(timeout_s * 1000), max_records=max_records)
        except KafkaError as exc:
            raise ServiceError(f"reading {self.topic!r} failed: {exc}") from exc
        return [Record(m.topic, m.partition, m.offset, m.key, m.value, tuple((k, v) for k, v in m.headers))
                for tp in sorted(batches, key=lambda t: t.partition) for m in batches[tp]]

    def positions(self) -> dict[int, int]:
        return {tp.partition: int(self._consumer.position(tp)) for tp in self._tps}

    def end_offsets(self) -> dict[int, int]:
        try:
            ends = self._consumer.end_offsets(self._tps)
        except KafkaError as exc:
            raise ServiceError(f"reading the end of {self.topic!r} failed: {exc}") from exc
        return {tp.partition: int(offset) for tp, offset in ends.items()}

    def close(self) -> None:
        self._consumer.close()
