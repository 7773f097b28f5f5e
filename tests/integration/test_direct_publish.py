"""No path reaches a subscriber unvalidated: a publisher that writes its ingest topic with its own Kafka client
(skipping the ingest API) gets the API's field rules in the gate: a bad record is quarantined with its reason and
no subscriber sees it, while its good records are delivered as usual."""

from __future__ import annotations

import json
import uuid
from collections.abc import Callable, Iterator
from typing import Any

import pytest

from broker.adapters.kafka_access import KafkaAccess
from broker.adapters.kafka_log import KafkaLog
from broker.adapters.registry_http import HttpSchemaRegistry
from broker.demo.synthetic import positive_tests
from broker.domain.topics import ingest_topic, quarantine_topic
from broker.local.stack import Endpoints
from broker.runtime.gate import GateThread
from broker.services.serde import AvroSerializer, SerializationContext
from tests.conftest import SCHEMAS, service_tokens
from tests.integration.gate_support import T1, Receiver, end_offsets, specimen_day, start_gate, topic_for

LEICESTER_DPH = topic_for("leicester-city-council", "dph")


@pytest.fixture
def gate(services: Endpoints, applied_catalog: dict[str, Any]) -> Iterator[GateThread]:
    runner = start_gate(services, "test-direct", "direct-worker")
    yield runner
    runner.stop()
    assert runner.failure is None, runner.failure


def _publish_as(kafka: KafkaAccess, services: Endpoints, records: list[dict[str, Any]]) -> list[int]:
    """Encode with the registry's schema and write straight onto the ingest topic, as UKHSA's own client would."""
    registry = HttpSchemaRegistry(services.registry_url, token=service_tokens())
    encode = AvroSerializer(registry, (SCHEMAS / f"{T1}.avsc").read_text())
    log = KafkaLog(kafka, client_id="ukhsa-own-client")
    try:
        return [log.publish(ingest_topic(T1), encode(r, SerializationContext(ingest_topic(T1))) or b"",
                            key=str(r["utla"]).encode())[1] for r in records]
    finally:
        log.close()
        registry.close()


def test_a_record_with_an_unknown_la_code_written_straight_to_kafka_is_quarantined_and_delivered_to_no_one(
        services: Endpoints, gate: GateThread, receiver: Receiver,
        kafka_as: Callable[[str], KafkaAccess]) -> None:
    prefix = f"D{uuid.uuid4().hex[:6].upper()}"
    good, bad = positive_tests(specimen_day(), {"leicester": 2}, prefix=prefix)
    bad = bad | {"ltla": "E06999999"}  # well formed, but no such authority: the API would refuse it
    start = end_offsets(services.kafka, [LEICESTER_DPH])
    quarantine_log = KafkaLog(services.kafka)
    before = len(quarantine_log.read(quarantine_topic(T1), max_records=100_000, timeout_s=2))
    _publish_as(kafka_as("ukhsa"), services, [good, bad])

    delivered = receiver.records(LEICESTER_DPH, start[LEICESTER_DPH], lambda r, h: r["specimen_id"].startswith(prefix),
                                 want=2, timeout_s=20)
    assert [r["specimen_id"] for r, _ in delivered] == [good["specimen_id"]]
    entries = [json.loads(r.value or b"{}")
               for r in quarantine_log.read(quarantine_topic(T1), max_records=100_000, timeout_s=5)[before:]]
    quarantine_log.close()
    [entry] = [e for e in entries if e.get("source", {}).get("kind") == "gate"
               and any(r["rule"] == "gss-known" for r in e["reasons"])]
    assert entry["reasons"][0]["field"] == "ltla"
