"""Ingest's record log on librdkafka (confluent-kafka): the same contract as kafka_log.KafkaLog's publishing, with
the per-record work of a send done in C (kafka-python's send cost the API process more than checking the record).

Every record is acknowledged by all in-sync replicas (acks=all) before its position is returned; the idempotent
producer keeps each partition's order across its own retries. Keys are partitioned by murmur2, as kafka-python and
Java clients do, so one area's records land in the same partition whichever client published them.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence

from confluent_kafka import KafkaError, KafkaException, Message, Producer

from broker.adapters.kafka_access import KafkaAccess
from broker.domain.messages import Outgoing
from broker.errors import ServiceError

LINGER_MS = 5
POLL_S = 0.005    # how long a waiting caller lets librdkafka serve acknowledgements before looking at its own again
TIMEOUT_S = 30.0
Acknowledged = Callable[[KafkaError | None, Message], None]


class _Acks:
    """The acknowledgements of one call's records, filled in by librdkafka's callbacks (from whichever thread
    polls: several callers share the producer)."""

    def __init__(self, count: int) -> None:
        self.positions: list[tuple[int, int] | None] = [None] * count
        self.errors: list[str] = []
        # One entry per acknowledgement: list.append is atomic, so a callback needs no lock (a lock taken per record
        # showed in the API's profile).
        self._arrived: list[None] = []
        self._expected = count

    def callback(self, index: int) -> Acknowledged:
        def acknowledged(error: KafkaError | None, message: Message) -> None:
            if error is None:
                self.positions[index] = (int(message.partition() or 0), int(message.offset() or 0))
            else:
                self.errors.append(f"{message.topic()}: {error.str()}")
            self._arrived.append(None)
        return acknowledged

    def sent(self, count: int) -> None:
        """Only `count` records were handed to librdkafka: wait for those alone."""
        self._expected = count
        del self.positions[count:]

    @property
    def done(self) -> bool:
        return len(self._arrived) >= self._expected


class RdkafkaRecordLog:
    """Appends records and waits for their acknowledgements; safe to share between threads."""

    def __init__(self, kafka: KafkaAccess, client_id: str = "accord-ingest", timeout_s: float = TIMEOUT_S) -> None:
        self._timeout_s = timeout_s
        self._producer = Producer({
            **kafka.librdkafka_options(), "client.id": client_id, "acks": "all", "enable.idempotence": True,
            "linger.ms": LINGER_MS, "batch.size": 1024 * 1024, "partitioner": "murmur2_random",
            # A record not acknowledged in time is given up by librdkafka too, so its failure is reported, not left
            # to be delivered after the caller was told it failed.
            "message.timeout.ms": int(timeout_s * 1000), "log_level": 3,
        })

    def publish(self, topic: str, value: bytes, key: bytes | None = None,
                headers: Sequence[tuple[str, bytes]] = ()) -> tuple[int, int]:
        """Append one record and wait for the broker's acknowledgement; returns (partition, offset)."""
        return self.publish_all([Outgoing(topic, value, key, tuple(headers))])[0]

    def publish_all(self, records: Sequence[Outgoing]) -> list[tuple[int, int]]:
        """Append the records as librdkafka batches them and wait for every acknowledgement; returns each one's
        (partition, offset), in order."""
        acks = _Acks(len(records))
        deadline = time.monotonic() + self._timeout_s
        sent = 0
        try:
            for index, record in enumerate(records):
                self._produce(record, acks.callback(index), deadline)
                sent += 1
        except (KafkaException, BufferError) as exc:
            acks.sent(sent)
            self._wait(acks, deadline)
            raise ServiceError(f"publishing {len(records)} records failed after {sent}: {_said(exc)}") from exc
        self._wait(acks, deadline)
        if acks.errors:
            raise ServiceError(f"publishing {len(records)} records failed: {acks.errors[0]}"
                               + (f" (and {len(acks.errors) - 1} more)" if len(acks.errors) > 1 else ""))
        if not acks.done:
            raise ServiceError(f"publishing {len(records)} records failed: not acknowledged within "
                               f"{self._timeout_s:.0f}s")
        return [position for position in acks.positions if position is not None]

    def _produce(self, record: Outgoing, acknowledged: Acknowledged, deadline: float) -> None:
        while True:
            try:
                self._producer.produce(record.topic, value=record.value, key=record.key,
                                       headers=list(record.headers) if record.headers else None,
                                       on_delivery=acknowledged)
                return
            except BufferError:  # librdkafka's local queue is full: let it send, then try again
                if time.monotonic() > deadline:
                    raise
                self._producer.poll(POLL_S * 10)

    def _wait(self, acks: _Acks, deadline: float) -> None:
        while not acks.done and time.monotonic() < deadline:
            self._producer.poll(POLL_S)

    def close(self, timeout_s: float = 5.0) -> None:
        """Send what is queued (for `timeout_s` at most: its callers have been answered already), then stop
        librdkafka's threads, which would otherwise go on reconnecting to a Kafka that is gone."""
        if self._producer.flush(timeout_s):
            self._producer.purge()
            self._producer.poll(0)
        self._producer.close()


def _said(exc: BaseException) -> str:
    error = exc.args[0] if isinstance(exc, KafkaException) and exc.args else None
    return str(error.str() if isinstance(error, KafkaError) else exc)
