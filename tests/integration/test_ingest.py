"""Validated ingest on the real Kafka and registry: good rows to ingest.<stream>, bad rows quarantined with reasons."""

from __future__ import annotations

import json
import uuid
from typing import Any

import httpx
import pytest
from kafka import KafkaProducer

from broker.adapters.kafka_log import KafkaLog
from broker.adapters.metrics import ingest_count
from broker.adapters.registry_http import HttpSchemaRegistry
from broker.config import Settings
from broker.domain.topics import ingest_topic, quarantine_topic
from broker.local.stack import Endpoints
from broker.runtime.api import open_ingest
from broker.services.ingest import read_quarantine, screen_topic
from broker.services.serde import AvroDeserializer, AvroSerializer, SerializationContext
from tests.conftest import bearer, service_tokens

STREAM = "ukhsa.positive-tests"


def _case(**overrides: Any) -> dict[str, Any]:
    case = {
        "specimen_id": f"LEI-{uuid.uuid4().hex[:10]}", "nhs_number": None, "name": "Alex Example",
        "dob": "1984-03-07", "sex": "FEMALE", "ethnicity": None, "address": "1 Example Road, Leicester",
        "postcode": "LE1 1AA", "occupation": None, "specimen_date": "2020-06-22", "lab_report_date": "2020-06-23",
        "test_type": "PCR", "pillar": "PILLAR_2", "lsoa": "E01013627", "msoa": "E02002807",
        "ltla": "E06000016", "utla": "E06000016",
    }
    return case | overrides


def _end_offset(log: KafkaLog, topic: str, partition: int = 0) -> int:
    records = log.read(topic, max_records=100_000, timeout_s=1.0, partitions=[partition])
    return records[-1].offset + 1 if records else 0


def test_http_publish_reports_each_record_and_quarantines_the_bad(services: Endpoints,
                                                                 applied_catalog: dict[str, Any]) -> None:
    before_accepted = ingest_count(STREAM, "accepted")
    good, future, unknown_la, no_postcode = (
        _case(), _case(specimen_date="2099-01-01"), _case(ltla="E06999999", utla="E06999999"), _case(postcode=""))
    response = httpx.post(f"{services.api_url}/streams/{STREAM}/records",
                          json={"records": [good, future, unknown_la, no_postcode, "not an object"]}, timeout=30,
                          headers=bearer("ukhsa", "ig-lead"))
    assert response.status_code == 200, response.text
    body = response.json()
    assert (body["accepted"], body["quarantined"]) == (1, 4)
    statuses = [(o["index"], o["status"], [r["rule"] for r in o["reasons"]]) for o in body["outcomes"]]
    assert statuses == [
        (0, "accepted", []),
        (1, "quarantined", ["date-not-future"]),
        (2, "quarantined", ["gss-known", "gss-known"]),
        (3, "quarantined", ["required"]),
        (4, "quarantined", ["schema-fit"]),
    ]
    # The accepted record is on ingest.<stream>, Confluent-framed, and decodes to what was sent.
    accepted = body["outcomes"][0]
    log = KafkaLog(services.kafka)
    registry = HttpSchemaRegistry(services.registry_url, token=service_tokens())
    try:
        [record] = log.read(ingest_topic(STREAM), max_records=1, start_offset=accepted["offset"],
                            partitions=[accepted["partition"]])
        decoded = AvroDeserializer(registry)(record.value, SerializationContext(ingest_topic(STREAM)))
        assert decoded is not None and decoded["specimen_id"] == good["specimen_id"]
        assert record.key == b"E06000016"
        # "Why was my row not delivered?": the quarantine names field, rule and offset, with the row kept whole.
        mine = [e for e in read_quarantine(log, STREAM, 100_000)
                if e["source"]["kind"] == "http" and e["record"] in (future, unknown_la, no_postcode)]
    finally:
        registry.close()
        log.close()
    assert sorted(e["reasons"][0]["field"] for e in mine) == ["ltla", "postcode", "specimen_date"]
    via_api = httpx.get(f"{services.api_url}/streams/{STREAM}/quarantine", params={"limit": 100_000},
                        headers=bearer("ukhsa", "ig-lead")).json()
    # Other tests' entries may be any JSON (hostile bodies, excerpts of huge records): select this test's own.
    assert {e["record"].get("specimen_id") for e in via_api["entries"]
            if isinstance(e.get("record"), dict) and isinstance(e["record"].get("specimen_id"), str)} >= {
        future["specimen_id"], unknown_la["specimen_id"], no_postcode["specimen_id"]}
    metrics = httpx.get(f"{services.api_url}/metrics", headers=bearer()).text
    assert f'accord_ingest_records_total{{outcome="quarantined",stream="{STREAM}"}}' in metrics
    assert ingest_count(STREAM, "accepted") == before_accepted  # counted in the API process, not this one


def test_a_code_retired_in_2023_is_quarantined_naming_its_successor(services: Endpoints) -> None:
    # A publisher's reference data from before April 2023: Allerdale district in Cumbria county.
    allerdale, cumberland = _case(ltla="E07000026", utla="E10000006"), _case(ltla="E06000063", utla="E06000063")
    response = httpx.post(f"{services.api_url}/streams/{STREAM}/records", json={"records": [allerdale, cumberland]},
                          timeout=30, headers=bearer("ukhsa", "ig-lead"))
    assert response.status_code == 200, response.text
    first, second = response.json()["outcomes"]
    assert (first["status"], second["status"]) == ("quarantined", "accepted")
    assert [(r["field"], r["rule"]) for r in first["reasons"]] == [("ltla", "gss-retired"), ("utla", "gss-retired")]
    assert first["reasons"][0]["message"] == ("ltla: E07000026 (Allerdale) was abolished on 2023-04-01; its successor "
                                              "is E06000063 (Cumberland) (ONS December 2023)")
    assert "E06000063 (Cumberland) and E06000064 (Westmorland and Furness)" in first["reasons"][1]["message"]


def test_quarantine_headers_say_why(services: Endpoints) -> None:
    with open_ingest(services.kafka, services.registry_url, Settings()) as (ingest, log):
        [outcome] = ingest.publish(STREAM, [_case(lsoa="E0101357")])
        [record] = log.read(quarantine_topic(STREAM), max_records=1, start_offset=outcome.offset)
    headers = dict(record.headers)
    assert headers["accord.quarantine.rule"] == b"gss-format"
    assert headers["accord.quarantine.field"] == b"lsoa"
    assert json.loads(record.value or b"{}")["reasons"][0]["value_excerpt"] == "E0101357"


def test_bad_requests(services: Endpoints, applied_catalog: dict[str, Any]) -> None:
    ukhsa = bearer("ukhsa", "ig-lead")
    records = f"{services.api_url}/streams/{STREAM}/records"
    unknown = httpx.post(f"{services.api_url}/streams/ukhsa.no-such-stream/records", json={"records": []},
                         headers=ukhsa)
    assert unknown.status_code == 404 and "ukhsa.positive-tests" in unknown.json()["error"]
    # another body's stream (existing or not) is refused before anything is said about it
    assert httpx.post(f"{services.api_url}/streams/nhsd.shielded-patients/records", json={"records": []},
                      headers=ukhsa).status_code == 403
    assert httpx.post(records, json={"records": []}).status_code == 401
    assert httpx.post(records, content=b"{oops", headers=ukhsa).status_code == 422
    assert httpx.post(records, json=[1], headers=ukhsa).status_code == 422
    for hostile in (b'{"records": [{"pillar": NaN}]}', b'{"records": [' + b"9" * 5000 + b"]}"):
        refused = httpx.post(f"{services.api_url}/streams/{STREAM}/records", content=hostile, headers=ukhsa)
        assert refused.status_code == 422 and "not JSON" in refused.json()["error"]
    huge = httpx.post(f"{services.api_url}/streams/{STREAM}/records", content=b" " * 2_000_000, headers=ukhsa)
    assert huge.status_code == 413


def test_garbage_on_the_ingest_topic_is_quarantined_and_screening_goes_on(services: Endpoints) -> None:
    with open_ingest(services.kafka, services.registry_url, Settings()) as (ingest, log):
        start = _end_offset(log, ingest_topic(STREAM))
        registry = HttpSchemaRegistry(services.registry_url, token=service_tokens())
        schema = json.dumps(ingest.schema(STREAM))
        from broker.domain.json_avro import from_json

        good, _ = from_json(ingest.schema(STREAM), _case())
        wrong_area, _ = from_json(ingest.schema(STREAM), _case(utla="E10000018"))
        encode = AvroSerializer(registry, schema)
        producer = KafkaProducer(**services.kafka.client_options(), acks="all")
        for value in (encode(good, SerializationContext(ingest_topic(STREAM))), b"\x00garbage", b'{"json": 1}',
                      encode(wrong_area, SerializationContext(ingest_topic(STREAM)))):
            producer.send(ingest_topic(STREAM), value=value, partition=0)
        producer.flush()
        producer.close()
        registry.close()
        outcomes = screen_topic(ingest, log, STREAM, start_offset=start, max_records=4)
    assert [o.status for o in outcomes] == ["accepted", "quarantined", "quarantined", "quarantined"]
    assert [o.reasons[0].rule for o in outcomes[1:]] == ["avro-decode", "avro-decode", "utla-consistent"]
    assert "magic byte" in outcomes[2].reasons[0].message


@pytest.fixture(autouse=True)
def _api_is_up(services: Endpoints) -> None:
    assert httpx.get(f"{services.api_url}/health").status_code == 200
