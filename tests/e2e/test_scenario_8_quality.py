"""Domain scenario 8, a quality refusal, on the real Kafka, OPA and gate.

Nottinghamshire County Council accepts only rows it can trace: its T1 agreement names postcode and NHS number as
required fields. Rows of its districts missing an NHS number are not delivered to it; each goes to the stream's
quarantine naming the county and the missing field, where the publisher reads which rows failed. A row with a blank
postcode is refused for everyone at ingest, and the publisher is told in the publish response. Nothing is dropped
silently: every row published is either delivered or in quarantine with a reason.
"""

from __future__ import annotations

import time
from typing import Any

from broker.adapters.kafka_log import KafkaLog
from broker.config import Settings
from broker.demo.synthetic import positive_tests
from broker.domain.topics import delivery_topic
from broker.local.stack import Endpoints
from broker.runtime.api import open_ingest
from broker.runtime.gate import GateThread
from broker.services.ingest import read_quarantine
from tests.e2e.scenario_support import from_sources, publish
from tests.integration.gate_support import T1, Receiver, end_offsets, specimen_day

COUNTY = "nottinghamshire-county-council"
COUNTY_DPH = delivery_topic(COUNTY, "dph", T1)


def test_rows_missing_a_required_field_go_to_quarantine_naming_the_subscriber(
        services: Endpoints, gate: GateThread, receiver: Receiver) -> None:
    cases = positive_tests(specimen_day(), {"ashfield": 6}, prefix="QUAL", seed=8)
    for case in cases[:2]:
        case["nhs_number"] = None
    start = end_offsets(services.kafka, [COUNTY_DPH])[COUNTY_DPH]

    sources = publish(services, T1, cases)  # the publisher's own rules accept a row without an NHS number

    complete = [source for source, row in sources.items() if row["nhs_number"] is not None]
    received = receiver.records(COUNTY_DPH, start, from_sources(sources), want=len(complete))  # then settles
    assert sorted(headers["accord.source"] for _, headers in received) == sorted(complete)
    refused = {source for source in sources if source not in complete}
    entries = _quarantined(services, refused)
    assert {_source(entry) for entry in entries} == refused
    for entry in entries:
        assert entry["refused_by"]["subscriber"] == COUNTY and entry["refused_by"]["agreements"] == [
            "t1-nottinghamshire"]
        [reason] = entry["reasons"]
        assert (reason["rule"], reason["field"]) == ("subscriber-required", "nhs_number")
        assert "accepts only rows with nhs_number, postcode" in reason["message"]


def test_a_row_with_a_blank_postcode_is_refused_at_ingest_with_its_reason(services: Endpoints) -> None:
    [case] = positive_tests(specimen_day(), {"ashfield": 1}, prefix="QUAL", seed=9)
    with open_ingest(services.kafka, services.registry_url, Settings()) as (ingest, _):
        [outcome] = ingest.publish(T1, [{**case, "postcode": "  "}], source="test")
    assert outcome.status == "quarantined"
    assert [(r.field, r.rule) for r in outcome.reasons] == [("postcode", "required")]


def _quarantined(services: Endpoints, sources: set[bytes], timeout_s: float = 10.0) -> list[dict[str, Any]]:
    """The publisher's view: quarantine entries of T1 for these source records, once all have arrived."""
    log = KafkaLog(services.kafka, client_id="test-publisher")
    try:
        deadline = time.monotonic() + timeout_s
        while True:
            found = [e for e in read_quarantine(log, T1, limit=1_000_000, timeout_s=1.0)
                     if e["source"].get("kind") == "gate" and _source(e) in sources]
            if {_source(e) for e in found} >= sources or time.monotonic() > deadline:
                return found
            time.sleep(0.2)
    finally:
        log.close()


def _source(entry: dict[str, Any]) -> bytes:
    source = entry["source"]
    return f"{source['topic']}/{source['partition']}/{source['offset']}".encode()
