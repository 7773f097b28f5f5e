"""T5 rows name an NHS trust, not a council: on the real Kafka, OPA and registry the gate routes each to the councils
of the trust's footprint (catalog/geography/nhs-trust-lad.csv) and quarantines a trust the lookup does not know."""

from __future__ import annotations

import time
import uuid
from collections.abc import Iterator
from typing import Any

import pytest

from broker.adapters.kafka_log import KafkaLog
from broker.config import Settings
from broker.demo.synthetic import hospital_sitreps
from broker.domain.geography import LaTable
from broker.domain.geography_files import load_la_table
from broker.domain.topics import ingest_topic, quarantine_topic
from broker.local.stack import Endpoints
from broker.runtime.gate import GateEndpoints, GateThread, open_gate
from broker.services.ingest import read_quarantine
from tests.integration.gate_support import (
    T5,
    Receiver,
    end_offsets,
    partition_ends,
    publish,
    specimen_day,
    start_gate,
    topic_for,
)

LEICESTER = topic_for("leicester-city-council", "dph", T5)
NOTTINGHAM = topic_for("nottingham-city-council", "dph", T5)
UHL, NUH = "RWE", "RX1"     # University Hospitals of Leicester; Nottingham University Hospitals


@pytest.fixture(scope="module")
def gate(services: Endpoints, applied_catalog: dict[str, Any]) -> Iterator[GateThread]:
    runner = start_gate(services, "test-gate-trusts", "test-trusts-worker")
    yield runner
    runner.stop()
    assert runner.failure is None, runner.failure


def test_a_trusts_report_reaches_the_councils_it_serves_and_no_other(
        services: Endpoints, gate: GateThread, receiver: Receiver) -> None:
    start = end_offsets(services.kafka, [LEICESTER, NOTTINGHAM])
    leicester_rows = publish(services, T5, hospital_sitreps(specimen_day(), UHL, 2, seed=51))
    nottingham_rows = publish(services, T5, hospital_sitreps(specimen_day(), NUH, 1, seed=52))
    ours = leicester_rows | nottingham_rows

    def mine(_: dict[str, Any], headers: dict[str, bytes]) -> bool:
        return headers.get("accord.source") in ours

    at_leicester = receiver.records(LEICESTER, start[LEICESTER], mine, want=2)
    at_nottingham = receiver.records(NOTTINGHAM, start[NOTTINGHAM], mine, want=1)
    assert {h["accord.source"] for _, h in at_leicester} == set(leicester_rows)
    assert {h["accord.source"] for _, h in at_nottingham} == set(nottingham_rows)
    for record, headers in at_leicester:    # T5's template keeps every field
        sent = leicester_rows[headers["accord.source"]]
        assert (record["trust_ods_code"], record["covid_inpatients"], record["staff_absences"]) == \
            (UHL, sent["covid_inpatients"], sent["staff_absences"])


def test_a_trust_the_lookup_does_not_know_is_quarantined_and_delivered_nowhere(
        services: Endpoints, gate: GateThread, receiver: Receiver) -> None:
    start = end_offsets(services.kafka, [LEICESTER, NOTTINGHAM])
    since = partition_ends(services.kafka, quarantine_topic(T5)).get(0, 0)
    (source,) = publish(services, T5, hospital_sitreps(specimen_day(), "ZZ9Q", 1, seed=53))
    log = KafkaLog(services.kafka)
    try:
        deadline = time.monotonic() + 30
        entries: list[dict[str, Any]] = []
        while time.monotonic() < deadline and not entries:
            entries = [e for e in read_quarantine(log, T5, limit=100_000, timeout_s=0.5, start_offset=since)
                       if e["source"].get("kind") == "gate" and _source(e) == source]
    finally:
        log.close()
    assert entries, f"no quarantine entry on {quarantine_topic(T5)} for {source!r}"
    (reason,) = entries[0]["reasons"]
    assert reason["rule"] == "jurisdiction-unresolved" and reason["field"] == "trust_ods_code"
    assert "'ZZ9Q' is no NHS trust of the trust-to-area lookup" in reason["message"]
    for topic in (LEICESTER, NOTTINGHAM):
        assert receiver.records(topic, start[topic], lambda _, h: h.get("accord.source") == source,
                                want=1, timeout_s=2, settle_s=0) == [], topic


def _source(entry: dict[str, Any]) -> bytes:
    where = entry["source"]
    return f"{where['topic']}/{where['partition']}/{where['offset']}".encode()


def test_a_gate_given_its_own_la_table_starts_without_the_shipped_trust_lookup(services: Endpoints) -> None:
    # The benchmark compares the ONS table with a small one; the shipped lookup names districts the small one lacks.
    small = LaTable([authority for authority in load_la_table() if authority.code == "E06000016"], "Leicester alone")
    settings = Settings(gate_group=f"test-gate-small-table-{uuid.uuid4().hex[:8]}", gate_start_from="latest",
                        opa_token_file=services.opa_token_file)
    with open_gate(GateEndpoints(services.kafka, services.opa_url, services.registry_url), settings,
                   "test-small-table-worker", la_table=small) as gate:
        gate.start()
        assert ingest_topic(T5) in gate.topics
