"""Domain scenario 4, a jurisdiction mismatch, on the real Kafka, OPA, gate and governance service.

A row whose district (Blaby, in Leicestershire) and upper tier (Leicester City) disagree reaches the gate from a
Kafka-client publisher. The gate guesses neither: the row is quarantined and delivered to no one, and governance
tells both councils and the publisher by webhook. Then a row that did reach Leicester is found to belong to a
Blaby resident: UKHSA reports it, both councils are told, Leicester must delete it by the ladder's deadline and
confirms that it did; the confirmation is on the governance topic and the audit trail. A second report that
nobody confirms turns overdue at its deadline and the governance board is told. By ONS's LSOA-to-LAD lookup (shipped,
on by default), the resident's LSOA decides the council even when the row's LA codes name the testing site's.
"""

from __future__ import annotations

import datetime as dt
import json
import time
from typing import Any, cast

from kafka import KafkaProducer

from broker.adapters.kafka_log import KafkaLog
from broker.adapters.registry_http import HttpSchemaRegistry
from broker.config import Settings
from broker.demo.synthetic import positive_tests
from broker.domain.misroute_rules import MisrouteReport
from broker.domain.topics import delivery_topic, ingest_topic
from broker.local.stack import Endpoints
from broker.runtime.gate import GateThread
from broker.runtime.governance import GovernanceService
from broker.services.ingest import load_stream_schemas
from broker.services.serde import AvroSerializer, SerializationContext
from tests.conftest import service_tokens
from tests.e2e.scenario_support import FakeClock, as_, from_sources, publish
from tests.integration.gate_support import T1, Receiver, end_offsets, specimen_day

LEICESTER, COUNTY, BLABY = "leicester-city-council", "leicestershire-county-council", "blaby-district-council"
LEICESTER_DPH, COUNTY_DPH = delivery_topic(LEICESTER, "dph", T1), delivery_topic(COUNTY, "dph", T1)
BLABY_LA, LEICESTER_LA = "E07000129", "E06000016"
BLABY_LSOA = "E01025610"
Inbox = tuple[str, list[tuple[str, dict[str, Any]]]]


def test_a_row_either_council_could_claim_is_quarantined_and_both_are_told(
        services: Endpoints, gate: GateThread, governance: GovernanceService, receiver: Receiver,
        inbox: Inbox) -> None:
    url, received = inbox
    gov = governance.governance
    for body, role in ((LEICESTER, "dph"), (COUNTY, "dph"), ("ukhsa", "ig-lead"), (BLABY, "ig-lead")):
        gov.register_webhook(as_(body, role), f"{url}/{body}")
    [case] = positive_tests(specimen_day(), {"blaby": 1}, prefix="JUR", seed=4)
    start = end_offsets(services.kafka, [LEICESTER_DPH, COUNTY_DPH])

    # ltla says Blaby, utla says Leicester, and no LSOA says where the resident lives
    source = _produce(services, case | {"utla": LEICESTER_LA, "lsoa": None})

    told = _told_of(governance, received, source)
    assert sorted(told) == [LEICESTER, COUNTY, "ukhsa"]             # Blaby receives no T1, so it is not told
    query = told[LEICESTER]["event"]["data"]
    assert query["candidates"] == [LEICESTER_LA, BLABY_LA, "E10000018"]
    assert "ltla E07000129 is in E10000018 but utla says E06000016" in query["reason"]
    for topic in (LEICESTER_DPH, COUNTY_DPH):
        assert receiver.records(topic, start[topic], from_sources({source: case}), want=1, timeout_s=1) == []


def test_a_misrouted_row_is_deleted_by_its_recipient_and_the_deletion_is_logged(
        services: Endpoints, gate: GateThread, governance: GovernanceService, receiver: Receiver,
        clock: FakeClock, inbox: Inbox) -> None:
    url, received = inbox
    gov = governance.governance
    for body, role in ((LEICESTER, "dph"), (COUNTY, "dph"), ("dhsc", "governance-board")):
        gov.register_webhook(as_(body, role), f"{url}/{body}")
    [case] = positive_tests(specimen_day(), {"leicester": 1}, prefix="MIS", seed=4)
    start = end_offsets(services.kafka, [LEICESTER_DPH])[LEICESTER_DPH]
    sources = publish(services, T1, [case])
    [(_, headers)] = receiver.records(LEICESTER_DPH, start, from_sources(sources), want=1)
    topic, partition, offset = headers["accord.source"].decode().rsplit("/", 2)
    where = {"topic": topic, "partition": int(partition), "offset": int(offset)}

    misroute = gov.report_misroute(as_("ukhsa", "ig-lead"), MisrouteReport(
        stream=T1, recipient=LEICESTER, belongs_to=BLABY_LA, source=where,
        reason="the lab keyed the testing site's council; the resident lives in Blaby"))
    assert misroute.rightful == (COUNTY,) and misroute.state == "awaiting-deletion"
    assert misroute.deadline == clock() + dt.timedelta(days=2)
    confirmed = gov.confirm_deletion(misroute.id, as_(LEICESTER, "dph", "Exercise IG Officer"),
                                     "deleted from the case management system and the analyst extract")
    assert confirmed.state == "deleted"

    late = gov.report_misroute(as_(LEICESTER, "dph"), MisrouteReport(
        stream=T1, recipient=LEICESTER, belongs_to=BLABY_LA, source=where, reason="found on review"))
    clock.to(late.deadline)
    gov.tick()
    assert gov.misroute(late.id).state == "overdue"

    assert governance.notifier.wait_idle(10)
    by_body = _types_by_body(received, {misroute.id, late.id})
    assert by_body[LEICESTER] == by_body[COUNTY] == [
        "misroute-reported", "deletion-confirmed", "misroute-reported", "deletion-overdue"]
    assert by_body["dhsc"] == ["deletion-overdue"]                    # the board hears of an overdue deletion only
    audit = _audit_events(services, governance)
    assert [(e["type"], e["data"]["misroute"]) for e in audit if e["type"] == "deletion-confirmed"] == [
        ("deletion-confirmed", misroute.id)]


def test_the_residents_lsoa_decides_the_council_by_the_shipped_ons_lookup(
        services: Endpoints, gate: GateThread, receiver: Receiver) -> None:
    [case] = positive_tests(specimen_day(), {"leicester": 1}, prefix="RES", seed=4)
    start = end_offsets(services.kafka, [LEICESTER_DPH, COUNTY_DPH])
    # Tested in Leicester, so the lab keyed Leicester; the residence LSOA lies in Blaby (ONS: "Blaby 008A").
    sources = publish(services, T1, [case | {"ltla": LEICESTER_LA, "utla": LEICESTER_LA, "lsoa": BLABY_LSOA}])
    [(row, _)] = receiver.records(COUNTY_DPH, start[COUNTY_DPH], from_sources(sources), want=1)
    assert row["lsoa"] == BLABY_LSOA
    assert receiver.records(LEICESTER_DPH, start[LEICESTER_DPH], from_sources(sources), want=1, timeout_s=1) == []


def _produce(services: Endpoints, case: dict[str, Any]) -> bytes:
    """Write a row onto the ingest topic as a Kafka-client publisher does (no HTTP ingest screening)."""
    schema = load_stream_schemas(Settings().schemas_dir)[T1]
    registry = HttpSchemaRegistry(services.registry_url, token=service_tokens())
    producer = KafkaProducer(**services.kafka.client_options(), acks="all")
    try:
        payload = AvroSerializer(registry, json.dumps(schema))(case, SerializationContext(ingest_topic(T1)))
        sent = producer.send(ingest_topic(T1), value=payload, key=b"jurisdiction-test").get(timeout=30)
        return f"{sent.topic}/{sent.partition}/{sent.offset}".encode()
    finally:
        producer.close()
        registry.close()


def _told_of(governance: GovernanceService, received: list[tuple[str, dict[str, Any]]], source: bytes,
             timeout_s: float = 20.0) -> dict[str, dict[str, Any]]:
    """Each body's jurisdiction-query notification about `source`, ticking the service until they came."""
    deadline = time.monotonic() + timeout_s
    while True:
        governance.governance.tick()
        governance.notifier.wait_idle(5)
        told = {path.strip("/"): payload for path, payload in list(received)
                if payload["type"] == "jurisdiction-query" and _source(payload["event"]["data"]["source"]) == source}
        if len(told) >= 3 or time.monotonic() > deadline:
            return told
        time.sleep(0.3)


def _types_by_body(received: list[tuple[str, dict[str, Any]]], misroutes: set[str]) -> dict[str, list[str]]:
    found: dict[str, list[str]] = {}
    for path, payload in received:
        if (payload["event"].get("data") or {}).get("misroute") in misroutes:
            found.setdefault(path.strip("/"), []).append(payload["type"])
    return found


def _audit_events(services: Endpoints, governance: GovernanceService) -> list[dict[str, Any]]:
    log = KafkaLog(services.kafka, client_id="test-audit-reader")
    try:
        records = log.read(governance.audit_topic, max_records=100_000, timeout_s=2.0)
        return [json.loads(cast(bytes, r.value)) for r in records]
    finally:
        log.close()


def _source(source: dict[str, Any]) -> bytes:
    return f"{source['topic']}/{source['partition']}/{source['offset']}".encode()
