"""How far the gate workers' consumer group is behind a stream's ingest topic: records published that no gate worker
has processed yet, so no subscriber has been sent (the console's delivery lag)."""

from __future__ import annotations

from kafka import KafkaAdminClient, KafkaConsumer
from kafka.errors import KafkaError

from broker.adapters.kafka_access import KafkaAccess
from broker.domain.topics import ingest_topic
from broker.errors import ServiceError


class GateLag:
    """Reads the gate group's committed offsets and the ingest topic's ends, as `kafka`'s principal."""

    def __init__(self, kafka: KafkaAccess, group: str, client_id: str = "accord-console-lag") -> None:
        self._kafka, self._group, self._client_id = kafka, group, client_id

    def streams(self, streams: list[str]) -> dict[str, int]:
        """Records of each of `streams` not yet through the gate, in one read; streams no gate worker has committed
        on yet are left out."""
        topics = {ingest_topic(stream): stream for stream in streams}
        try:
            admin = KafkaAdminClient(**self._kafka.client_options(), client_id=self._client_id)
            try:
                offsets = admin.list_group_offsets({self._group: None}).get(self._group) or {}
            finally:
                admin.close()
            committed = {tp: int(meta.offset) for tp, meta in offsets.items()
                         if tp.topic in topics and meta.offset >= 0}
            if not committed:
                return {}
            consumer = KafkaConsumer(**self._kafka.client_options(), client_id=self._client_id, group_id=None,
                                     isolation_level="read_committed")
            try:
                ends = consumer.end_offsets(list(committed))
            finally:
                consumer.close()
        except KafkaError as exc:
            raise ServiceError(f"the gate group's positions could not be read: {exc}") from exc
        lag: dict[str, int] = {}
        for tp, offset in committed.items():
            stream = topics[tp.topic]
            lag[stream] = lag.get(stream, 0) + max(0, int(ends[tp]) - offset)
        return lag

    def __call__(self, stream: str) -> int | None:
        """Records of `stream` not yet through the gate; None when no gate worker has committed on it yet."""
        return self.streams([stream]).get(stream)
