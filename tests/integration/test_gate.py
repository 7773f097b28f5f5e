"""The policy gate on the real Kafka, OPA and registry: each subscriber receives exactly its view, live."""

from __future__ import annotations

import threading
import time
import uuid
from collections.abc import Iterator
from typing import Any

import pytest

from broker.adapters.kafka_admin import end_positions, wait_consumed
from broker.adapters.kafka_control import ControlWriter
from broker.adapters.kafka_log import KafkaLog
from broker.config import Settings
from broker.demo.steady_publisher import publish_steadily
from broker.demo.synthetic import national_day, nhs_number, positive_tests
from broker.domain.geography_files import load_la_table
from broker.domain.topics import ingest_topic, quarantine_topic
from broker.local.stack import Endpoints
from broker.runtime.gate import GateThread
from broker.services import policy_changes
from broker.services.ingest import read_quarantine
from tests.conftest import TEST_OPERATOR, control_writer, opa_as
from tests.integration.gate_support import (
    T1,
    Receiver,
    end_offsets,
    partition_ends,
    publish,
    specimen_day,
    start_gate,
    topic_for,
)

LEICESTER_DPH = topic_for("leicester-city-council", "dph")
LEICESTER_ANALYST = topic_for("leicester-city-council", "analyst")
NOTTINGHAM_DPH = topic_for("nottingham-city-council", "dph")
LEICESTERSHIRE_DPH = topic_for("leicestershire-county-council", "dph")
MANCHESTER_ANALYST = topic_for("manchester-city-council", "analyst")
PERSON = nhs_number(1234)  # one person, tested in Manchester twice and once after moving to Leeds
LEEDS_ANALYST = topic_for("leeds-city-council", "analyst")
WATCHED = [LEICESTER_DPH, LEICESTER_ANALYST, NOTTINGHAM_DPH, LEICESTERSHIRE_DPH, MANCHESTER_ANALYST, LEEDS_ANALYST]


@pytest.fixture(scope="module")
def gate(services: Endpoints, applied_catalog: dict[str, Any], tmp_path_factory: pytest.TempPathFactory
         ) -> Iterator[GateThread]:
    runner = start_gate(services, "test-gate", "test-worker-1")
    yield runner
    runner.stop()
    assert runner.failure is None, runner.failure



def _publish(services: Endpoints, records: list[dict[str, Any]]) -> dict[bytes, dict[str, Any]]:
    return publish(services, T1, records)


def _prefix() -> str:
    return f"T{uuid.uuid4().hex[:6].upper()}"


def test_each_subscriber_receives_exactly_its_view(services: Endpoints, gate: GateThread, receiver: Receiver) -> None:
    prefix = _prefix()
    cases = positive_tests(specimen_day(), {"leicester": 4, "nottingham": 3, "blaby": 2, "charnwood": 2,
                                            "manchester": 2}, prefix=prefix)
    start = end_offsets(services.kafka, WATCHED)
    sources = _publish(services, cases)
    ours = {c["specimen_id"]: c for c in cases}

    def mine(record: dict[str, Any], _: dict[str, bytes]) -> bool:
        return str(record.get("specimen_id", "")).startswith(prefix)

    leicester = receiver.records(LEICESTER_DPH, start[LEICESTER_DPH], mine, want=4)
    assert sorted(r["specimen_id"] for r, _ in leicester) == sorted(s for s in ours if "-LEICESTER-" in s)
    for record, headers in leicester:
        # the DPH tier keeps every field, direct identifiers included because the template names them
        assert record == ours[record["specimen_id"]]
        assert headers["accord.source"].startswith(b"ingest.ukhsa.positive-tests/")

    received = receiver.records(LEICESTER_ANALYST, start[LEICESTER_ANALYST], lambda r, h: h["accord.source"] in sources,
                                want=4)
    analyst = [(r, sources[h["accord.source"]]) for r, h in received]
    assert sorted(case["specimen_id"] for _, case in analyst) == sorted(s for s in ours if "-LEICESTER-" in s)
    for record, case in analyst:
        assert set(record) == {"lsoa", "age_band", "sex"}  # LSOA, 5-year age band and sex only
        assert (record["lsoa"], record["sex"]) == (case["lsoa"], case["sex"])
        low, _, high = record["age_band"].partition("-")
        age = (case["specimen_date"] - case["dob"]).days / 365.25
        assert int(low) <= age < int(high or 200) + 1

    nottingham = receiver.records(NOTTINGHAM_DPH, start[NOTTINGHAM_DPH], mine, want=3)
    assert {r["utla"] for r, _ in nottingham} == {"E06000018"} and len(nottingham) == 3

    county = receiver.records(LEICESTERSHIRE_DPH, start[LEICESTERSHIRE_DPH], mine, want=4)
    assert sorted(r["ltla"] for r, _ in county) == ["E07000129"] * 2 + ["E07000130"] * 2
    assert all(r["utla"] == "E10000018" for r, _ in county)


# The councils with a T1 agreement in the shipped catalog and the LADs (ONS December 2023) whose rows are theirs.
T1_COUNCILS = {
    "leicester-city-council": {"E06000016"}, "nottingham-city-council": {"E06000018"},
    "leicestershire-county-council": {f"E07000{n}" for n in range(129, 136)},
    "nottinghamshire-county-council": {f"E07000{n}" for n in range(170, 177)},
    "manchester-city-council": {"E08000003"}, "birmingham-city-council": {"E08000025"},
    "leeds-city-council": {"E08000035"}, "hackney-council": {"E09000012"}, "cornwall-council": {"E06000052"},
    "blackburn-with-darwen-council": {"E06000008"},
}


def test_a_national_day_over_every_english_authority_reaches_each_council_exactly(
        services: Endpoints, gate: GateThread, receiver: Receiver) -> None:
    assert gate.gate is not None
    prefix = _prefix()
    cases = national_day(specimen_day(), load_la_table(), prefix=prefix)
    assert len({case["ltla"] for case in cases}) == len(cases) == 296
    for n, case in enumerate(cases):
        case["nhs_number"] = nhs_number(n)  # Nottinghamshire's agreement requires one
    deliveries = {d.topic: d for d in gate.gate.deliveries[T1]}
    start, since = end_offsets(services.kafka, sorted(deliveries)), end_positions(services.kafka, [ingest_topic(T1)])
    sources = _publish(services, cases)                                   # validated ingest: all 296 accepted
    # Once the gate has committed past them, their deliveries are committed too (one transaction): read to the end.
    wait_consumed(services.kafka, gate.settings.gate_group, since)
    received: dict[str, set[str]] = {}
    for topic, delivery in deliveries.items():
        got = receiver.records(topic, start[topic], lambda r, h: h["accord.source"] in sources, want=0, settle_s=0)
        received[topic] = {sources[h["accord.source"]]["ltla"] for _, h in got}
        assert len(got) == len(received[topic]), f"{topic} received a row twice"
        # no plan in force (grants of other tests included) receives a row outside its areas
        assert received[topic] <= delivery.areas, topic
    for council, lads in T1_COUNCILS.items():
        for role in ("dph", "analyst"):
            assert received[topic_for(council, role)] == lads, (council, role)


def test_pseudonyms_are_stable_within_a_subscriber_and_unlinkable_across(
        services: Endpoints, gate: GateThread, receiver: Receiver) -> None:
    prefix = _prefix()
    cases = positive_tests(specimen_day(), {"manchester": 2, "leeds": 1}, prefix=prefix)
    for case in cases:
        case["nhs_number"] = PERSON
    start = end_offsets(services.kafka, WATCHED)
    sources = _publish(services, cases)
    ours = lambda r, h: h["accord.source"] in sources  # noqa: E731
    manchester = receiver.records(MANCHESTER_ANALYST, start[MANCHESTER_ANALYST], ours, want=2)
    leeds = receiver.records(LEEDS_ANALYST, start[LEEDS_ANALYST], ours, want=1)
    # the shipped analyst tier merged with the linkage tier: the most revealing transform of each field
    assert set(manchester[0][0]) == {"lsoa", "age_band", "sex", "nhs_number", "postcode_district", "name"}
    m_pseudonyms = {r["nhs_number"] for r, _ in manchester}
    assert len(m_pseudonyms) == 1 and PERSON not in m_pseudonyms
    assert leeds[0][0]["nhs_number"] not in m_pseudonyms
    assert all(r["postcode_district"].startswith("M") and r["name"].startswith("****") for r, _ in manchester)


def test_unresolvable_geography_is_quarantined_never_guessed(
        services: Endpoints, gate: GateThread, receiver: Receiver) -> None:
    prefix = _prefix()
    (case,) = positive_tests(specimen_day(), {"leicester": 1}, prefix=prefix)
    case |= {"ltla": None, "utla": None, "lsoa": None}  # a postcode no lookup resolved
    start = end_offsets(services.kafka, WATCHED)
    since = partition_ends(services.kafka, quarantine_topic(T1)).get(0, 0)  # other tests quarantined thousands
    (source,) = _publish(services, [case])
    log = KafkaLog(services.kafka)
    try:
        deadline = time.monotonic() + 15
        entries: list[dict[str, Any]] = []
        while time.monotonic() < deadline and not entries:
            entries = [e for e in read_quarantine(log, T1, limit=100_000, timeout_s=0.5, start_offset=since)
                       if e["source"].get("kind") == "gate" and _source(e) == source]
    finally:
        log.close()
    assert entries, f"no quarantine entry on {quarantine_topic(T1)} for {source!r}"
    (reason,) = entries[0]["reasons"]
    assert reason["rule"] == "jurisdiction-unresolved" and reason["message"]
    for topic in WATCHED:
        got = receiver.records(topic, start[topic], lambda r, h: h["accord.source"] == source,
                               want=1, timeout_s=1, settle_s=0)
        assert got == [], topic


def _source(entry: dict[str, Any]) -> bytes:
    source = entry["source"]
    return f"{source['topic']}/{source['partition']}/{source['offset']}".encode()


def test_expired_agreement_and_unknown_subscriber_receive_nothing(services: Endpoints, gate: GateThread) -> None:
    assert gate.gate is not None
    topics = {d.topic for ds in gate.gate.deliveries.values() for d in ds}
    assert LEICESTER_DPH in topics
    assert not any(t.startswith("deliver.blaby-district-council.") and t.endswith(f".{T1}") for t in topics)
    assert topic_for("blaby-district-council", "benefits", "ukhsa.isolation-notifications") in topics  # T7 in force
    assert not any(t.startswith("deliver.no-such-council.") for t in topics)
    engine = opa_as(services.opa_url)
    try:
        now = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
        expired = engine.evaluate("accord.plans.plan", {"subscriber": "blaby-district-council",
                                                        "role": "environmental-health", "stream": T1,
                                                        "purpose": "outbreak-control", "time": now})
        unknown = engine.evaluate("accord.plans.plan", {"subscriber": "no-such-council", "role": "dph",
                                                        "stream": T1, "purpose": "health-protection", "time": now})
    finally:
        engine.close()
    assert expired["allow"] is False and "expired" in " ".join(expired["reasons"])
    assert unknown["allow"] is False and unknown["fields"] == {}
    # (Blaby's T1 topic itself may hold rows: the dispute scenarios grant it an outbreak subset for a while.)


def test_revocation_stops_delivery_of_records_published_after_it(services: Endpoints, gate: GateThread,
                                                   receiver: Receiver) -> None:
    prefix = _prefix()
    cases = positive_tests(specimen_day(), {"leicester": 400}, prefix=prefix)
    start = end_offsets(services.kafka, WATCHED)
    since = end_positions(services.kafka, [ingest_topic(T1)])
    sent_at: dict[str, float] = {}
    stop = threading.Event()
    # about 200 records/s straight onto the ingest topic, as a Kafka-client publisher would
    publisher = threading.Thread(target=publish_steadily, daemon=True, kwargs={
        "settings": Settings(), "kafka": services.kafka, "registry_url": services.registry_url, "stream": T1,
        "records": cases, "pause_s": 0.005, "key_field": "utla", "sent_at": sent_at, "stop": stop,
        "client_id": "test-publisher"})
    writer = control_writer(services.kafka)
    log = KafkaLog(services.kafka)
    try:
        publisher.start()
        before = receiver.records(LEICESTER_DPH, start[LEICESTER_DPH], lambda r, h: r["specimen_id"].startswith(prefix),
                                  want=20, settle_s=0)
        assert len(before) >= 20, "nothing was delivered before the revocation"
        change = policy_changes.revoke(writer, "t1-leicester", reason="test: DSA withdrawn", by=TEST_OPERATOR)
        # Acknowledged, so appended: anything sent from now on lands after it (its create time is no such bound:
        # a record sent a moment after it may still be appended first).
        acked_at = time.time()
        (status,) = policy_changes.enforcement(log, change, workers=1, timeout_s=5)
        time.sleep(1.0)
        stop.set()
        publisher.join(timeout=30)
        # Consumed under the revocation before the reinstatement, which would rightly deliver what the gate reads
        # after it (the reinstatement, not a leak).
        wait_consumed(services.kafka, gate.settings.gate_group, since)
    finally:
        stop.set()
        policy_changes.reinstate(writer, "t1-leicester", by=TEST_OPERATOR)
        writer.close()
        log.close()
    assert int(status["applied_ms"]) >= change.timestamp_ms  # its latency is `make bench` (f)'s to measure
    delivered = receiver.records(LEICESTER_DPH, start[LEICESTER_DPH], lambda r, h: r["specimen_id"].startswith(prefix),
                                 want=len(cases), timeout_s=3, settle_s=0)
    after = [s for s, t in sent_at.items() if t > acked_at]
    assert after, "no record was published after the revocation"
    leaked = [r["specimen_id"] for r, _ in delivered if sent_at[r["specimen_id"]] > acked_at]
    assert leaked == [], f"{len(leaked)} records published after the revocation were delivered under it"


def test_identifiers_granted_for_one_district_reach_only_that_districts_rows(
        services: Endpoints, gate: GateThread, receiver: Receiver, applied_catalog: dict[str, Any]) -> None:
    """Issue 15, defect 1. Leicestershire's analysts hold the county-wide minimised tier (t1-leicestershire); a grant,
    as a dispute decided in part would make, adds NHS number, name and address for Charnwood's rows only. The rows
    of Blaby, another district of the county, must not carry them."""
    topic = topic_for("leicestershire-county-council", "analyst")
    keep: dict[str, Any] = {"transform": "keep", "method": None, "as": None, "params": {}}
    grant = {**applied_catalog["agreements"]["t1-leicestershire"], "id": f"test-charnwood-{uuid.uuid4().hex[:6]}",
             "template": None, "row_scope": {"areas": ["E07000130"]},
             "tiers": [{"name": "outbreak", "roles": ["analyst"], "other_fields": "drop",
                        "fields": {name: keep for name in ("nhs_number", "name", "address")}}]}
    cases = positive_tests(specimen_day(), {"charnwood": 3, "blaby": 3}, prefix=_prefix())
    for n, case in enumerate(cases):
        case["nhs_number"] = nhs_number(n)  # synthetic cases may lack one; these rows must all carry one
    writer, log = control_writer(services.kafka), KafkaLog(services.kafka)
    try:
        _announce(writer, log, f"grant/{grant['id']}", grant)
        start = end_offsets(services.kafka, [topic])
        sources = _publish(services, cases)
        received = receiver.records(topic, start[topic], lambda r, h: h["accord.source"] in sources, want=6)
    finally:
        _announce(writer, log, f"grant/{grant['id']}", None)
        writer.close()
        log.close()
    assert len(received) == 6
    identifiers = ("nhs_number", "name", "address")
    for record, headers in received:
        case = sources[headers["accord.source"]]
        if case["ltla"] == "E07000130":
            assert tuple(record[name] for name in identifiers) == tuple(case[name] for name in identifiers)
        else:
            assert case["ltla"] == "E07000129"
            assert tuple(record[name] for name in identifiers) == (None, None, None), record
        assert (record["lsoa"], record["sex"]) == (case["lsoa"], case["sex"]) and record["age_band"]


def _announce(writer: ControlWriter, log: KafkaLog, key: str, value: dict[str, Any] | None) -> None:
    """Write a control record and wait until the test's gate worker has applied it."""
    offset, timestamp_ms = writer.append(key, value)
    policy_changes.enforcement(log, policy_changes.Announced(key, offset, timestamp_ms), workers=1, timeout_s=10)


def test_declared_emergency_level_changes_plans_on_the_live_stream(
        services: Endpoints, gate: GateThread, receiver: Receiver) -> None:
    topic = topic_for("leicestershire-county-council", "analyst")
    writer, log = control_writer(services.kafka), KafkaLog(services.kafka)
    try:
        fields = _delivered_fields(gate, topic)
        assert fields == {"lsoa", "age_band", "sex"}
        change = policy_changes.declare_level(writer, "emergency", by=TEST_OPERATOR)
        policy_changes.enforcement(log, change, workers=1, timeout_s=5)
        assert _delivered_fields(gate, topic) == fields | {"postcode_district"}
        (case,) = positive_tests(specimen_day(), {"blaby": 1}, prefix=_prefix())
        start = end_offsets(services.kafka, [topic])
        sources = _publish(services, [case])
        (got,) = receiver.records(topic, start[topic], lambda r, h: h["accord.source"] in sources, want=1)
        assert got[0]["postcode_district"] == case["postcode"].split()[0]
    finally:
        policy_changes.enforcement(log, policy_changes.declare_level(writer, "normal", by=TEST_OPERATOR), timeout_s=5)
        writer.close()
        log.close()
    assert _delivered_fields(gate, topic) == fields


def _delivered_fields(gate: GateThread, topic: str) -> set[str]:
    assert gate.gate is not None
    (delivery,) = [d for ds in gate.gate.deliveries.values() for d in ds if d.topic == topic]
    return {rule.output for rule in delivery.plan.fields}
