"""The control topic on Kafka: one partition, every record kept and stamped by the broker, JSON values signed by the
governance service; read to its end before every gate batch."""

from __future__ import annotations

import json
import logging
import threading
import time
from typing import Any, Protocol

from kafka import KafkaConsumer, KafkaProducer, TopicPartition
from kafka.errors import KafkaError

from broker.adapters.kafka_access import KafkaAccess
from broker.adapters.kafka_admin import align_topic_config, create_topics
from broker.adapters.kafka_governance import ensure_audit_topic
from broker.adapters.kafka_offsets import end_offset
from broker.adapters.metrics import count_control_refused
from broker.domain.control import PolicyState, admit
from broker.domain.control_signing import KeyLookup, Signature
from broker.domain.messages import ControlRecord
from broker.domain.topics import CONTROL_TOPIC, OPTOUT_TOPIC, STATUS_TOPIC
from broker.errors import PolicyEngineError, ServiceError

log = logging.getLogger(__name__)

LOG_APPEND_TIME = 1  # a record's timestamp type when the broker stamped it
# Kept whole rather than compacted: on a compacted topic any writer could erase a signed record (a revocation)
# by appending an unsigned record under its key, which gates refuse but the cleaner honours. The broker stamps
# each record, so a gate can tell an old record appended again from a fresh one (domain/control_signing.py).
CONTROL_TOPIC_CONFIG = {"cleanup.policy": "delete", "retention.ms": "-1", "retention.bytes": "-1",
                        "message.timestamp.type": "LogAppendTime"}


def ensure_control_topics(kafka: KafkaAccess, align: bool = False) -> None:
    """The control, status and audit topics; with `align` (an administrator), a control topic made by an older
    version gets the configuration above."""
    create_topics(kafka, [CONTROL_TOPIC], partitions=1, configs=CONTROL_TOPIC_CONFIG)
    if align:
        align_topic_config(kafka, CONTROL_TOPIC, CONTROL_TOPIC_CONFIG)
    create_topics(kafka, [STATUS_TOPIC], partitions=1, configs=STATUS_TOPIC_CONFIG)
    ensure_audit_topic(kafka)  # every control change is audited there, by whoever announces it


# The opt-out list is a table (one record per keyed hash, a tombstone when a patient opts back in), so compacted:
# the topic holds the list in force, never a history of who opted out when.
STATUS_TOPIC_CONFIG = {"retention.ms": str(24 * 3600 * 1000)}     # gate acknowledgements: a day is plenty
OPTOUT_TOPIC_CONFIG = {"cleanup.policy": "compact"}


def ensure_optout_topic(kafka: KafkaAccess) -> None:
    create_topics(kafka, [OPTOUT_TOPIC], partitions=1, configs=OPTOUT_TOPIC_CONFIG)


class ControlReader:
    """Reads the control topic from the beginning; `end_offset()` asks the partition's current leader
    (kafka_offsets.py), in 30 s at most: a gate whose fence cannot be read fails its batch rather than waiting on a
    paused broker for ever."""

    def __init__(self, kafka: KafkaAccess, client_id: str = "accord-control", topic: str = CONTROL_TOPIC,
                 start: int = 0) -> None:
        """`start`: the offset to read from (a drill looking for what it just caused); 0, the beginning."""
        self._tp = TopicPartition(topic, 0)
        self._consumer = KafkaConsumer(**kafka.client_options(), client_id=client_id, group_id=None,
                                       enable_auto_commit=False, isolation_level="read_committed")
        self._consumer.assign([self._tp])
        if start:
            self._consumer.seek(self._tp, start)
        else:
            self._consumer.seek_to_beginning(self._tp)

    def end_offset(self) -> int:
        try:
            return end_offset(self._consumer, self._tp)
        except KafkaError as exc:
            raise ServiceError(f"could not read the end of {self._tp.topic}: {exc}") from exc

    def read_to(self, end: int, timeout_s: float = 10.0) -> list[ControlRecord]:
        """Every record before offset `end` not read yet; all or nothing: if the end is not reached in time (or Kafka
        fails) the reader goes back to where it was, so the next call returns these records again. (Dropping them
        would lose a revocation for good: the caller's state would move past it.)"""
        records: list[ControlRecord] = []
        deadline = time.monotonic() + timeout_s
        start = self._consumer.position(self._tp)
        try:
            while self._consumer.position(self._tp) < end:
                if time.monotonic() > deadline:
                    raise ServiceError(f"{self._tp.topic} was not read to offset {end} within {timeout_s:.0f}s")
                for batch in self._consumer.poll(timeout_ms=50).values():
                    records.extend(
                        ControlRecord(m.offset, m.key.decode("utf-8", "replace") if m.key is not None else "",
                                      m.value, int(m.timestamp), self._tp.topic,
                                      tuple((name, bytes(value)) for name, value in m.headers or ()),
                                      m.timestamp_type == LOG_APPEND_TIME)
                        for m in batch)
        except KafkaError as exc:
            self._consumer.seek(self._tp, start)
            raise ServiceError(f"reading {self._tp.topic} failed: {exc}") from exc
        except ServiceError:
            self._consumer.seek(self._tp, start)
            raise
        return records

    def close(self) -> None:
        self._consumer.close()


def control_end(kafka: KafkaAccess, client_id: str = "accord-control-end") -> int:
    """The control topic's end offset now: where the next control record will be written."""
    reader = ControlReader(kafka, client_id=client_id)
    try:
        return reader.end_offset()
    finally:
        reader.close()


def control_record(kafka: KafkaAccess, key: str, since: int, timeout_s: float,
                   client_id: str = "accord-control-find") -> ControlRecord | None:
    """The first control record under `key` at offset `since` or later, waiting up to `timeout_s` for it to be
    written; None when it was not."""
    reader = ControlReader(kafka, client_id=client_id, start=since)
    deadline = time.monotonic() + timeout_s
    try:
        while True:
            found = next((r for r in reader.read_to(reader.end_offset()) if r.key == key), None)
            if found is not None or time.monotonic() > deadline:
                return found
            time.sleep(0.2)
    finally:
        reader.close()


class ControlWriter:
    """Appends control (or status, or audit) records with an idempotent producer; returns (offset, timestamp_ms).

    With a `signer`, records for the signer's topic carry its signature; signing and sending happen under one lock,
    so records reach the broker in the order of their signed-at times.
    """

    def __init__(self, kafka: KafkaAccess, client_id: str = "accord-control-writer",
                 signer: ControlSigning | None = None) -> None:
        self._producer = KafkaProducer(**kafka.client_options(), client_id=client_id, acks="all",
                                       enable_idempotence=True, linger_ms=0)
        self._signer = signer
        self._lock = threading.Lock()

    def append(self, key: str, value: dict[str, Any] | None, topic: str = CONTROL_TOPIC,
               timeout_s: float = 30.0) -> tuple[int, int]:
        payload = None if value is None else json.dumps(value, sort_keys=True).encode()
        try:
            with self._lock:
                headers = [] if self._signer is None or topic != self._signer.topic else \
                    self._signer.sign(key, payload).headers()
                future = self._producer.send(topic, key=key.encode(), value=payload, headers=headers)
            meta = future.get(timeout=timeout_s)
        except KafkaError as exc:
            raise ServiceError(f"writing {key!r} to {topic} failed: {exc}") from exc
        return int(meta.offset), int(meta.timestamp)

    def close(self) -> None:
        self._producer.close()


class ControlSigning(Protocol):
    """What the writer needs of a signer (security/control_keys.ControlSigner)."""

    topic: str

    def sign(self, key: str, value: bytes | None) -> Signature: ...


class ControlView:
    """The control topic folded into a PolicyState, read to its end each time `current()` is asked; records no
    trusted key signed are refused (logged and counted), never folded in."""

    def __init__(self, kafka: KafkaAccess, keys: KeyLookup, client_id: str = "accord-control-view",
                 reader: str = "governance") -> None:
        self._reader = ControlReader(kafka, client_id=client_id)
        self._keys, self._name = keys, reader  # `reader` labels its refusals in the counter
        self._state = PolicyState()
        self._lock = threading.Lock()

    def current(self) -> PolicyState:
        with self._lock:
            for record in self._reader.read_to(self._reader.end_offset()):
                try:
                    self._state, refused = admit(self._state, record, self._keys)
                except PolicyEngineError as exc:
                    log.error("control record skipped: %s", exc)
                    continue
                if refused is not None:
                    log.error("control record %d (%s) REFUSED, not applied: %s", record.offset, record.key,
                              refused.detail)
                    count_control_refused(self._name, refused.reason)
            return self._state

    def close(self) -> None:
        self._reader.close()
