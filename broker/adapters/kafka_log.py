"""Publishing to and reading from Kafka topics with kafka-python (idempotent producer, read_committed reads)."""

from __future__ import annotations

import time
from collections.abc import Mapping, Sequence

from kafka import KafkaConsumer, KafkaProducer, TopicPartition
from kafka.errors import KafkaError, TopicAuthorizationFailedError

from broker.adapters.kafka_access import KafkaAccess
from broker.domain.messages import Outgoing, Record
from broker.errors import DeliveryRefused, ServiceError


class KafkaLog:
    """A small facade over one cluster; callers never see kafka-python's types or errors."""

    def __init__(self, kafka: KafkaAccess, client_id: str = "accord") -> None:
        self.kafka = kafka
        self.client_id = client_id
        self._producer: KafkaProducer | None = None

    def _producer_or_new(self) -> KafkaProducer:
        if self._producer is None:
            self._producer = KafkaProducer(
                **self.kafka.client_options(), client_id=self.client_id,
                acks="all", enable_idempotence=True, linger_ms=5,
            )
        return self._producer

    def publish(
        self, topic: str, value: bytes, key: bytes | None = None,
        headers: Sequence[tuple[str, bytes]] = (), timeout_s: float = 30.0, timestamp_ms: int | None = None,
    ) -> tuple[int, int]:
        """Append one record and wait for the broker's acknowledgement; returns (partition, offset). `timestamp_ms`
        stamps the record (history published after the fact); by default the producer stamps it now."""
        try:
            meta = self._producer_or_new().send(topic, value=value, key=key, headers=list(headers),
                                                timestamp_ms=timestamp_ms)
            result = meta.get(timeout=timeout_s)
        except KafkaError as exc:
            raise ServiceError(f"publishing to {topic!r} failed: {exc}") from exc
        return int(result.partition), int(result.offset)

    def publish_all(self, records: Sequence[Outgoing], timeout_s: float = 30.0) -> list[tuple[int, int]]:
        """Append the records as the producer batches them and wait once for all acknowledgements; returns each
        one's (partition, offset), in order. The idempotent producer keeps each partition's order across retries."""
        try:
            producer = self._producer_or_new()
            futures = [producer.send(r.topic, value=r.value, key=r.key, headers=list(r.headers)) for r in records]
            producer.flush(timeout=timeout_s)
            done = [future.get(timeout=timeout_s) for future in futures]
        except KafkaError as exc:
            raise ServiceError(f"publishing {len(records)} records failed: {exc}") from exc
        return [(int(meta.partition), int(meta.offset)) for meta in done]

    def read(
        self, topic: str, max_records: int, timeout_s: float = 10.0, start_offset: int | Mapping[int, int] = 0,
        partitions: Sequence[int] | None = None,
    ) -> list[Record]:
        """Committed records of `partitions` (default: all) of `topic` from `start_offset` (one offset for every
        partition, or one per partition: a partition not named from 0), up to `max_records`."""
        consumer = KafkaConsumer(
            **self.kafka.client_options(), client_id=self.client_id, group_id=None,
            isolation_level="read_committed", enable_auto_commit=False,
        )
        try:
            chosen = sorted(consumer.partitions_for_topic(topic) or set()) if partitions is None else partitions
            tps = [TopicPartition(topic, p) for p in chosen]
            consumer.assign(tps)
            for tp in tps:
                consumer.seek(tp, start_offset if isinstance(start_offset, int) else start_offset.get(tp.partition, 0))
            records: list[Record] = []
            deadline = time.monotonic() + timeout_s
            while len(records) < max_records and time.monotonic() < deadline:
                for batch in consumer.poll(timeout_ms=200, max_records=max_records).values():
                    records.extend(
                        Record(m.topic, m.partition, m.offset, m.key, m.value,
                               tuple((k, v) for k, v in m.headers))
                        for m in batch
                    )
            return records[:max_records]
        except TopicAuthorizationFailedError as exc:
            raise DeliveryRefused(f"Kafka refuses this login read access to {topic!r} (a fenced delivery topic, "
                                  "or no right to read it)") from exc
        except KafkaError as exc:
            raise ServiceError(f"reading {topic!r} failed: {exc}") from exc
        finally:
            consumer.close()

    def close(self) -> None:
        if self._producer is not None:
            self._producer.close()
            self._producer = None
