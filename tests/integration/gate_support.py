"""Helpers for gate tests: a test catalog, publishing synthetic T1 days, reading what a subscriber received."""

from __future__ import annotations

import datetime as dt
import shutil
import uuid
from pathlib import Path
from typing import Any, Literal

from kafka import KafkaConsumer, TopicPartition

from broker.adapters.kafka_access import KafkaAccess
from broker.clock import Clock
from broker.config import Settings
from broker.domain.topics import delivery_topic
from broker.local.stack import Endpoints
from broker.local.toolchain import REPO_ROOT
from broker.runtime.api import open_ingest
from broker.runtime.deliveries import DeliveryReader, Select
from broker.runtime.gate import GateEndpoints, GateThread

T1 = "ukhsa.positive-tests"
SIGNATORIES = """signatories:
  - {body: ukhsa, name: Test IG Lead, role: ig-lead}
  - {body: %s, name: Test Signatory, role: %s}
"""
EXTRA_AGREEMENTS = {
    # Blaby's environmental health once had LSOA-level T1 rows for an outbreak; that agreement has expired.
    "t1-test-blaby-expired": ("blaby-district-council", "environmental-health", """agreement: t1-test-blaby-expired
stream: ukhsa.positive-tests
subscriber: blaby-district-council
purpose: outbreak-control
legal_basis: [copi-reg-3-4, uk-gdpr-6-1-e, uk-gdpr-9-2-i]
tiers:
  eh: {roles: [environmental-health], fields: {lsoa: keep, specimen_date: keep}}
valid_from: 2020-06-01T00:00:00Z
valid_until: 2020-12-31T00:00:00Z
review_date: 2020-09-30
"""),
}
# In a declared emergency the county's analysts also see the postcode district (a presumption to share more).
EXTRA_AGREEMENTS["t1-test-leicestershire-surge"] = ("leicestershire-county-council", "dph", """\
agreement: t1-test-leicestershire-surge
stream: ukhsa.positive-tests
subscriber: leicestershire-county-council
purpose: health-protection
legal_basis: [copi-reg-3-4, uk-gdpr-6-1-e, uk-gdpr-9-2-i]
emergency_level_required: emergency
tiers:
  surge:
    roles: [analyst]
    fields:
      postcode: {transform: generalise, method: postcode-district}
valid_from: 2026-01-01T00:00:00Z
valid_until: 2027-12-31T23:59:59Z
review_date: 2027-06-30
""")
for place in ("manchester", "leeds"):
    body = f"{place}-city-council"
    EXTRA_AGREEMENTS[f"t1-test-{place}-linkage"] = (body, "dph", f"""agreement: t1-test-{place}-linkage
stream: ukhsa.positive-tests
subscriber: {body}
purpose: health-protection
legal_basis: [copi-reg-3-4, uk-gdpr-6-1-e, uk-gdpr-9-2-i]
tiers:
  linkage:
    roles: [analyst]
    fields:
      nhs_number: pseudonymise
      postcode: {{transform: generalise, method: postcode-district}}
      name: {{transform: mask, keep_last: 2}}
valid_from: 2026-01-01T00:00:00Z
valid_until: 2027-12-31T23:59:59Z
review_date: 2027-06-30
""")

# Leicestershire's tracing partnership (under its DPH) takes the county's unreached cases: T2's delivery topics have
# several partitions (catalog/streams.yaml), and the county's cases arrive keyed by district (test_partitions.py).
T2 = "nhstt.cases-to-trace"
EXTRA_AGREEMENTS["t2-test-leicestershire"] = ("leicestershire-county-council", "dph", """\
agreement: t2-test-leicestershire
template: t2-cases-to-trace
subscriber: leicestershire-county-council
valid_from: 2026-01-01T00:00:00Z
valid_until: 2027-12-31T23:59:59Z
review_date: 2027-06-30
signatories:
  - {body: nhstt, name: Test IG Lead (NHS Test and Trace), role: ig-lead}
  - {body: leicestershire-county-council, name: Test Signatory, role: dph}
""")


# T5: each city's resilience team takes the situation reports of the NHS trusts serving it (test_gate_trusts.py).
T5 = "nhse.hospital-sitrep"
for place in ("leicester", "nottingham"):
    EXTRA_AGREEMENTS[f"t5-test-{place}"] = (f"{place}-city-council", "dph", f"""\
agreement: t5-test-{place}
template: t5-hospital-sitrep
subscriber: {place}-city-council
valid_from: 2026-01-01T00:00:00Z
valid_until: 2027-12-31T23:59:59Z
review_date: 2027-06-30
signatories:
  - {{body: nhse, name: Test IG Lead (NHS England), role: ig-lead}}
  - {{body: {place}-city-council, name: Test Signatory, role: dph}}
""")

# Leicester's planning analysts receive T1 for service planning under section 251 support, which the National Data
# Opt-out covers (its DPH's T1 under the COPI notice is exempt); the support lapses in PLANNING_BASIS_DAYS days.
PLANNING_ROLE = "planning"
PLANNING_BASIS_DAYS = 20
PLANNING_BASIS_UNTIL = dt.datetime.now(dt.UTC).date() + dt.timedelta(days=PLANNING_BASIS_DAYS)
EXTRA_AGREEMENTS["t1-test-leicester-planning"] = ("leicester-city-council", PLANNING_ROLE, f"""\
agreement: t1-test-leicester-planning
stream: ukhsa.positive-tests
subscriber: leicester-city-council
purpose: service-planning
legal_basis: [copi-reg-5-s251, uk-gdpr-6-1-e, uk-gdpr-9-2-h]
legal_basis_until: {PLANNING_BASIS_UNTIL.isoformat()}
tiers:
  planning:
    roles: [{PLANNING_ROLE}]
    fields:
      nhs_number: pseudonymise
      lsoa: keep
      specimen_date: keep
valid_from: 2026-01-01T00:00:00Z
valid_until: 2027-12-31T23:59:59Z
review_date: 2027-06-30
""")


def make_test_catalog(directory: Path) -> Path:
    """The shipped catalog plus the test agreements above (and the role Leicester's planning agreement names)."""
    target = directory / "catalog"
    shutil.copytree(REPO_ROOT / "catalog", target)
    bodies = target / "bodies.yaml"
    shipped = "roles: [dph, analyst, ig-lead]"
    assert bodies.read_text().count(shipped) == 1, "Leicester's roles moved in bodies.yaml: update the test catalog"
    bodies.write_text(bodies.read_text().replace(shipped, f"roles: [dph, analyst, ig-lead, {PLANNING_ROLE}]"))
    for name, (body, role, text) in EXTRA_AGREEMENTS.items():
        signed = text if "signatories:" in text else text + SIGNATORIES % (body, role)
        (target / "agreements" / f"{name}.yaml").write_text(signed)
    return target


def specimen_day() -> dt.date:
    return dt.datetime.now(dt.UTC).date() - dt.timedelta(days=3)


def end_offsets(kafka: KafkaAccess, topics: list[str]) -> dict[str, int]:
    """The end offset of partition 0 of each topic (T1's delivery topics have one partition: catalog/streams.yaml);
    0 if it has none yet."""
    consumer = KafkaConsumer(**kafka.client_options(), group_id=None, isolation_level="read_committed")
    try:
        found: dict[str, int] = {}
        for topic in topics:
            if consumer.partitions_for_topic(topic):
                tp = TopicPartition(topic, 0)
                found[topic] = int(consumer.end_offsets([tp])[tp])
            else:
                found[topic] = 0
        return found
    finally:
        consumer.close()


def partition_ends(kafka: KafkaAccess, topic: str) -> dict[int, int]:
    """Each partition's end offset now (read_committed), to read only what comes after: the session's ingest and
    quarantine topics hold a million rows of the file source's test, too many to read whole within a timeout."""
    consumer = KafkaConsumer(**kafka.client_options(), group_id=None, isolation_level="read_committed")
    try:
        tps = [TopicPartition(topic, p) for p in sorted(consumer.partitions_for_topic(topic) or ())]
        return {tp.partition: int(offset) for tp, offset in consumer.end_offsets(tps).items()} if tps else {}
    finally:
        consumer.close()


class Receiver(DeliveryReader):
    """A subscriber's view of its delivery topics, as (value, headers) pairs."""

    def records(self, topic: str, start: int, keep: Select, want: int, timeout_s: float = 20.0,
                settle_s: float = 1.5) -> list[tuple[dict[str, Any], dict[str, bytes]]]:
        return [(d.value, d.headers) for d in self.read(topic, start, keep, want, timeout_s, settle_s)]


def start_gate(services: Endpoints, group_prefix: str, worker: str, clock: Clock | None = None,
               transport: Literal["kafka-python", "librdkafka"] | None = None) -> GateThread:
    """A gate worker thread of the session's deployment (its secrets) in a fresh consumer group that starts at the
    end of the ingest topics; on `clock` when given (time-based behaviour, such as a legal basis ending); on the
    data-path `transport` when given (else the default)."""
    settings = Settings(gate_group=f"{group_prefix}-{uuid.uuid4().hex[:8]}",
                        gate_start_from="latest", opa_token_file=services.opa_token_file)
    if transport is not None:
        settings = settings.model_copy(update={"gate_transport": transport})
    return GateThread(GateEndpoints(services.kafka, services.opa_url, services.registry_url),
                      settings, worker, clock=clock).start()


def publish(services: Endpoints, stream: str, records: list[dict[str, Any]]) -> dict[bytes, dict[str, Any]]:
    """Publish through validated ingest; each record by the `accord.source` header its deliveries will carry."""
    with open_ingest(services.kafka, services.registry_url, Settings()) as (ingest, _):
        outcomes = ingest.publish(stream, records, source="test")
    assert [o.status for o in outcomes] == ["accepted"] * len(records), [o.reasons for o in outcomes]
    return {f"{o.topic}/{o.partition}/{o.offset}".encode(): records[o.index] for o in outcomes}


def topic_for(subscriber: str, role: str, stream: str = T1) -> str:
    return delivery_topic(subscriber, role, stream)
