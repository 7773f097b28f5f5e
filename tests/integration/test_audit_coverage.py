"""The raw audit topic on the real Kafka and OPA: a gate's policy decisions carry OPA's decision ids, its delivery
batch records match what the delivery topics hold (its quarantine batches, what the quarantine topic holds), and a
catalog apply leaves a catalog-change record."""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

from kafka import KafkaConsumer, KafkaProducer, TopicPartition

from broker.adapters.kafka_access import KafkaAccess
from broker.adapters.kafka_log import KafkaLog
from broker.demo.synthetic import positive_tests
from broker.domain.audit_records import Source, raw_entry, records_digest
from broker.domain.ladder import Actor
from broker.domain.messages import Record
from broker.domain.topics import AUDIT_TOPIC, ingest_topic, quarantine_topic
from broker.local.stack import Endpoints
from broker.services import policy_changes
from tests.conftest import control_writer, opa_as
from tests.integration.gate_support import T1, Receiver, end_offsets, publish, specimen_day, start_gate, topic_for

LEICESTER_DPH = topic_for("leicester-city-council", "dph")
NOTTINGHAM_DPH = topic_for("nottingham-city-council", "dph")


def audit_end(services: Endpoints) -> int:
    consumer = KafkaConsumer(**services.kafka.client_options(), group_id=None, isolation_level="read_committed")
    try:
        tp = TopicPartition(AUDIT_TOPIC, 0)
        return int(consumer.end_offsets([tp])[tp])
    finally:
        consumer.close()


def audit_records(services: Endpoints, start: int, want: Callable[[list[dict[str, Any]]], bool],
                  timeout_s: float = 20.0) -> list[dict[str, Any]]:
    """The raw audit records from `start` (each body with its `kind`), read until `want` accepts them."""
    log, deadline = KafkaLog(services.kafka, client_id="test-audit-coverage"), time.monotonic() + timeout_s
    while True:
        found = []
        for record in log.read(AUDIT_TOPIC, max_records=1_000_000, timeout_s=1.0, start_offset=start):
            kind, body = raw_entry(record.key, record.value, Source(record.topic, record.partition, record.offset))
            found.append({"kind": kind, **body["event"]})
        if want(found) or time.monotonic() > deadline:
            return found



def test_a_gates_decisions_and_batches_are_audited_as_delivered(
        services: Endpoints, applied_catalog: dict[str, Any], receiver: Receiver, tmp_path: Path) -> None:
    worker, prefix = f"test-audit-{uuid.uuid4().hex[:8]}", f"A{uuid.uuid4().hex[:6].upper()}"
    start_audit = audit_end(services)
    gate = start_gate(services, "test-audit-coverage", worker)
    try:
        start = end_offsets(services.kafka, [LEICESTER_DPH, NOTTINGHAM_DPH])
        sources = publish(services, T1, positive_tests(specimen_day(), {"leicester": 3, "nottingham": 2},
                                                       prefix=prefix))

        def mine(value: dict[str, Any], _: dict[str, bytes]) -> bool:
            return str(value.get("specimen_id", "")).startswith(prefix)

        assert len(receiver.records(LEICESTER_DPH, start[LEICESTER_DPH], mine, want=3, settle_s=0.5)) == 3
        assert len(receiver.records(NOTTINGHAM_DPH, start[NOTTINGHAM_DPH], mine, want=2, settle_s=0.5)) == 2
    finally:
        gate.stop()
    assert gate.failure is None, gate.failure

    def ours(found: list[dict[str, Any]], kind: str) -> list[dict[str, Any]]:
        return [r for r in found if r["kind"] == kind and r.get("worker") == worker]

    found = audit_records(services, start_audit, lambda f: sum(
        r["records"] for r in ours(f, "delivery-batch") if r["topic"] in (LEICESTER_DPH, NOTTINGHAM_DPH)) >= 5)

    decisions = ours(found, "policy-decision")
    assert decisions, "the gate recorded no policy decision"
    assert all(isinstance(d["decision_id"], str) and d["decision_id"] for d in decisions), (
        "OPA answered without decision ids: is its decision logging on (--set decision_logs.console=true)?")
    [leicester] = [d for d in decisions
                   if (d["subscriber"], d["role"], d["stream"]) == ("leicester-city-council", "dph", T1)]
    assert leicester["allow"] and leicester["catalog_revision"] == applied_catalog["revision"]

    published = {int(source.rsplit(b"/", 1)[1]) for source in sources}  # ingest offsets (one partition)
    for topic in (LEICESTER_DPH, NOTTINGHAM_DPH):
        batches = [b for b in ours(found, "delivery-batch") if b["topic"] == topic]
        _check_batches(services, topic, start[topic], worker, batches)
        for batch in batches:
            assert {s["first_offset"] for s in batch["sources"]} | {s["last_offset"] for s in batch["sources"]
                                                                   } <= published, batch["sources"]
            assert sum(s["records"] for s in batch["sources"]) == batch["records"]


def _check_batches(services: Endpoints, topic: str, start: int, worker: str, batches: list[dict[str, Any]]) -> None:
    """Each batch record's digest is recomputed from the records at its offsets, and together the batch records
    cover exactly the records this worker delivered to `topic`."""
    delivered = {r.offset: r for r in KafkaLog(services.kafka, client_id="test-audit-coverage").read(
        topic, max_records=1_000_000, timeout_s=2.0, start_offset=start, partitions=[0])
        if dict(r.headers).get("accord.worker") == worker.encode()}
    covered: list[int] = []
    for batch in batches:
        offsets = [o for first, last in batch["offsets"] for o in range(first, last + 1)]
        records: list[Record] = [delivered[o] for o in offsets]  # KeyError: an offset the worker did not deliver
        assert batch["records_digest"] == records_digest((r.key, r.value) for r in records), batch
        assert (batch["records"], batch["first_offset"], batch["last_offset"]) == (
            len(offsets), offsets[0], offsets[-1])
        covered += offsets
    assert sorted(covered) == sorted(delivered), f"{topic}: audited {covered}, delivered {sorted(delivered)}"
    assert delivered, f"the worker delivered nothing to {topic}"


def test_a_catalog_apply_leaves_a_catalog_change_record(services: Endpoints, applied_catalog: dict[str, Any]) -> None:
    by, start = Actor("accord", "operator", f"test-audit-{uuid.uuid4().hex[:8]}"), audit_end(services)
    engine, writer = opa_as(services.opa_url), control_writer(services.kafka)
    try:
        announced = policy_changes.apply_catalog(writer, engine, applied_catalog, by=by)
    finally:
        engine.close()
        writer.close()

    found = audit_records(services, start, lambda f: any(r.get("by") == by.to_json() for r in f), timeout_s=10.0)
    [change] = [r for r in found if r["kind"] == "catalog-change" and r.get("by") == by.to_json()]
    assert (change["change"], change["revision"], change["control"]) == (
        "catalog-applied", applied_catalog["revision"], {"key": "catalog", "offset": announced.offset})
    assert change["agreements"] == sorted(applied_catalog["agreements"])


def test_rows_the_gate_quarantines_are_audited_as_a_batch_of_the_quarantine_topic(
        services: Endpoints, applied_catalog: dict[str, Any], kafka_as: Callable[[str], KafkaAccess],
        tmp_path: Path) -> None:
    worker = f"test-audit-q-{uuid.uuid4().hex[:8]}"
    start_audit = audit_end(services)
    gate = start_gate(services, "test-audit-quarantine", worker)
    # The publisher writes its own ingest topic with its own Kafka client, bytes that are not Avro at all.
    producer = KafkaProducer(**kafka_as("ukhsa").client_options(), acks="all")
    try:
        sent = [producer.send(ingest_topic(T1), b"not avro " + str(n).encode(), key=b"q").get(timeout=30)
                for n in range(2)]
        found = audit_records(services, start_audit, lambda f: sum(
            r["records"] for r in f if r["kind"] == "quarantine-batch" and r.get("worker") == worker) >= 2)
    finally:
        producer.close()
        gate.stop()
    assert gate.failure is None, gate.failure
    batches = [r for r in found if r["kind"] == "quarantine-batch" and r.get("worker") == worker]
    assert sum(b["records"] for b in batches) == 2 and {b["stream"] for b in batches} == {T1}
    assert {b["topic"] for b in batches} == {quarantine_topic(T1)}
    assert sum(b["rules"].get("avro-decode", 0) for b in batches) == 2
    assert {(s["topic"], s["partition"], o) for b in batches for s in b["sources"]
            for o in (s["first_offset"], s["last_offset"])} <= {(m.topic, m.partition, m.offset) for m in sent}
    log = KafkaLog(services.kafka, client_id="test-audit-coverage")
    for batch in batches:
        held = {r.offset: r for r in log.read(batch["topic"], max_records=1_000_000, timeout_s=2.0,
                                               start_offset=batch["first_offset"], partitions=[batch["partition"]])}
        records = [held[o] for first, last in batch["offsets"] for o in range(first, last + 1)]
        assert batch["records_digest"] == records_digest((r.key, r.value) for r in records), batch
