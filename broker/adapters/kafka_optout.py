"""The National Data Opt-out list on Kafka: a compacted topic keyed by each NHS number's keyed hash (value
`{"opted_out": true}`; a tombstone takes one off), written by the opt-out user and read by gate workers."""

from __future__ import annotations

import json
from collections.abc import Iterable

from kafka import KafkaProducer
from kafka.errors import KafkaError

from broker.adapters.kafka_access import KafkaAccess
from broker.adapters.kafka_control import ControlReader, ensure_optout_topic
from broker.domain.topics import OPTOUT_TOPIC
from broker.errors import ServiceError


class KafkaOptOutLog:
    def __init__(self, kafka: KafkaAccess, topic: str = OPTOUT_TOPIC) -> None:
        self._kafka, self._topic = kafka, topic
        ensure_optout_topic(kafka)

    def current(self) -> set[str]:
        reader = ControlReader(self._kafka, client_id="accord-optout-load", topic=self._topic)
        try:
            found: set[str] = set()
            for record in reader.read_to(reader.end_offset(), timeout_s=60.0):
                if record.payload is None:
                    found.discard(record.key)
                else:
                    found.add(record.key)
            return found
        finally:
            reader.close()

    def write(self, add: Iterable[str], remove: Iterable[str]) -> None:
        producer = KafkaProducer(**self._kafka.client_options(), acks="all", client_id="accord-optout-load")
        try:
            value = json.dumps({"opted_out": True}).encode()
            futures = [producer.send(self._topic, key=d.encode(), value=value) for d in add]
            futures += [producer.send(self._topic, key=d.encode(), value=None) for d in remove]
            producer.flush()
            for future in futures:
                future.get(timeout=30)
        except KafkaError as exc:
            raise ServiceError(f"writing the opt-out list to {self._topic} failed: {exc}") from exc
        finally:
            producer.close()
