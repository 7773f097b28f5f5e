"""Control changes on the real Kafka and OPA: a record without the signing key is never applied by a real gate,
a revocation is an authenticated call OPA authorises, and the audit names the verified person."""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import Iterator
from secrets import token_bytes
from typing import Any

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from fastapi.testclient import TestClient
from kafka import KafkaProducer

from broker.adapters.kafka_admin import align_topic_config, create_topics, describe_topic_config
from broker.adapters.kafka_control import CONTROL_TOPIC_CONFIG, ControlReader, ControlWriter
from broker.adapters.kafka_log import KafkaLog
from broker.adapters.metrics import control_refused_count
from broker.api.auth import Guard
from broker.api.governance_app import create_governance_app
from broker.config import Settings
from broker.demo.synthetic import positive_tests
from broker.domain.audit import new_signing_key
from broker.domain.topics import CONTROL_TOPIC
from broker.local.stack import Endpoints
from broker.runtime.gate import GateThread
from broker.runtime.governance import GovernanceService
from broker.security.api_tokens import verifier_for
from broker.security.control_keys import ControlSigner
from broker.services import policy_changes
from tests.conftest import SCHEMAS, bearer, governance_service, opa_as
from tests.integration.gate_support import T1, Receiver, end_offsets, publish, specimen_day, start_gate, topic_for
from tests.integration.test_audit_coverage import audit_end, audit_records

AGREEMENT = "t1-cornwall"  # ukhsa's stream to Cornwall: no other test watches its deliveries
CORNWALL_DPH = topic_for("cornwall-council", "dph")
REVOKE = f"/agreements/{AGREEMENT}/revoke"
REINSTATE = f"/agreements/{AGREEMENT}/reinstate"


@pytest.fixture(scope="module")
def gate(services: Endpoints, applied_catalog: dict[str, Any]) -> Iterator[GateThread]:
    runner = start_gate(services, "test-control", "test-control-worker")
    yield runner
    runner.stop()
    assert runner.failure is None, runner.failure


@pytest.fixture(scope="module")
def governance(services: Endpoints, applied_catalog: dict[str, Any]) -> Iterator[GovernanceService]:
    run = uuid.uuid4().hex[:8]
    service = governance_service(services, audit_key=new_signing_key(), webhook_secret=token_bytes(32),
                                 schemas_dir=SCHEMAS, tick_s=3600.0,
                                 transactional_id=f"test-control-governance-{run}",
                                 topic=f"_accord.governance.test-control-{run}",
                                 audit_topic=f"_accord.audit.test-control-{run}").start()
    yield service
    service.stop()


@pytest.fixture(scope="module")
def api(services: Endpoints, governance: GovernanceService) -> Iterator[TestClient]:
    """The governance API as `accord governance serve` builds it: the session's token key and the real OPA."""
    guard = Guard(verifier_for(Settings().secrets_dir).verify, opa_as(services.opa_url, "reader"))
    app = create_governance_app(governance.governance, governance.notifier.log, guard=guard,
                                changes=governance.changes)
    with TestClient(app) as client:
        yield client


def _control_end(services: Endpoints) -> int:
    reader = ControlReader(services.kafka, client_id="test-control-end")
    try:
        return reader.end_offset()
    finally:
        reader.close()


def _applied_past(gate: GateThread, offset: int, timeout_s: float = 10.0) -> None:
    """Wait until the gate worker has read the control topic beyond `offset`."""
    deadline = time.monotonic() + timeout_s
    while gate.gate is None or gate.gate.state.offset <= offset:
        assert time.monotonic() < deadline, f"the gate did not read control offset {offset}"
        time.sleep(0.05)


def _cornwall_delivered(services: Endpoints, receiver: Receiver, want: int) -> int:
    """Publish one Cornwall case and count how many of it reach Cornwall's DPH (0 or 1)."""
    start = end_offsets(services.kafka, [CORNWALL_DPH])[CORNWALL_DPH]
    sources = publish(services, T1, positive_tests(specimen_day(), {"cornwall": 1},
                                                   prefix=f"C{uuid.uuid4().hex[:6].upper()}"))
    got = receiver.records(CORNWALL_DPH, start, lambda _, h: h["accord.source"] in sources, want=want,
                           timeout_s=15 if want else 3, settle_s=0 if want else 1.5)
    return len(got)


def test_a_revocation_written_onto_the_topic_without_the_key_is_never_applied(
        services: Endpoints, gate: GateThread, receiver: Receiver) -> None:
    assert _cornwall_delivered(services, receiver, want=1) == 1
    unsigned, foreign = (control_refused_count("gate", reason) for reason in ("unsigned", "unknown-key"))
    revocation = {"kind": "revocation", "agreement": AGREEMENT, "reason": "forged", "by": "mallory"}
    # The admin user may write any topic; it does not hold the governance service's key.
    producer = KafkaProducer(**services.kafka.client_options(), acks="all")
    try:
        producer.send(CONTROL_TOPIC, key=f"revocation/{AGREEMENT}".encode(),
                      value=json.dumps(revocation).encode()).get(timeout=10)
    finally:
        producer.close()
    forger = ControlWriter(services.kafka, client_id="test-forger", signer=ControlSigner(Ed25519PrivateKey.generate()))
    try:
        offset, _ = forger.append(f"revocation/{AGREEMENT}", revocation)
    finally:
        forger.close()

    _applied_past(gate, offset)
    assert gate.gate is not None and AGREEMENT not in gate.gate.state.revoked
    assert control_refused_count("gate", "unsigned") == unsigned + 1
    assert control_refused_count("gate", "unknown-key") == foreign + 1
    assert _cornwall_delivered(services, receiver, want=1) == 1  # deliveries unchanged


@pytest.mark.parametrize(("who", "status"), [
    (None, 401),
    (("cornwall-council", "dph"), 403),                 # the subscriber itself
    (("leicester-city-council", "ig-lead"), 403),       # an IG lead, but not the publisher's
    (("accord", "service"), 403),                       # Accord's own services decide nothing
    (("accord", "operator"), 403),                      # the operator applies catalogs, no more
], ids=["no-token", "subscriber", "another-ig-lead", "service", "operator"])
def test_a_revocation_without_a_token_or_by_someone_not_allowed_changes_nothing(
        services: Endpoints, api: TestClient, gate: GateThread, who: tuple[str, str] | None, status: int) -> None:
    headers = {} if who is None else bearer(*who)  # signed now, with the session's key
    before = _control_end(services)
    response = api.post(REVOKE, json={"reason": "not theirs to revoke"}, headers=headers)
    assert response.status_code == status, response.text
    assert _control_end(services) == before
    assert gate.gate is not None and AGREEMENT not in gate.gate.state.revoked


def test_the_publishers_ig_lead_revokes_and_the_audit_names_the_verified_person(
        services: Endpoints, api: TestClient, gate: GateThread, receiver: Receiver) -> None:
    person = f"UKHSA IG Lead {uuid.uuid4().hex[:6]}"
    ig_lead = bearer("ukhsa", "ig-lead", person)
    start = audit_end(services)
    response = api.post(REVOKE, json={"reason": "DSA withdrawn"}, headers=ig_lead)
    assert response.status_code == 200, response.text
    change = policy_changes.Announced(**response.json()["control"])
    log = KafkaLog(services.kafka, client_id="test-control-status")
    try:
        policy_changes.enforcement(log, change, workers=1, timeout_s=10)
        assert gate.gate is not None and AGREEMENT in gate.gate.state.revoked
        assert _cornwall_delivered(services, receiver, want=0) == 0
        who = {"body": "ukhsa", "role": "ig-lead", "person": person}
        assert gate.gate.state.revoked[AGREEMENT]["by"] == who  # on the signed control record
        found = audit_records(services, start, lambda f: any(r.get("by") == who for r in f), timeout_s=10.0)
        [audited] = [r for r in found if r["kind"] == "catalog-change" and r.get("by") == who]
        assert (audited["change"], audited["agreement"], audited["control"]["offset"]) == (
            "agreement-revoked", AGREEMENT, change.offset)
    finally:
        lifted = api.post(REINSTATE, json={"reason": "DSA signed"}, headers=bearer("dhsc", "governance-board"))
        assert lifted.status_code == 200, lifted.text
        policy_changes.enforcement(log, policy_changes.Announced(**lifted.json()["control"]), timeout_s=10)
        log.close()
    assert AGREEMENT not in gate.gate.state.revoked
    assert _cornwall_delivered(services, receiver, want=1) == 1


def test_only_the_operator_applies_the_catalog(services: Endpoints, api: TestClient,
                                               applied_catalog: dict[str, Any]) -> None:
    before = _control_end(services)
    refused = api.put("/catalog", json={"catalog": applied_catalog}, headers=bearer("dhsc", "governance-board"))
    assert refused.status_code == 403 and _control_end(services) == before
    applied = api.put("/catalog", json={"catalog": applied_catalog}, headers=bearer("accord", "operator", "Ops"))
    assert applied.status_code == 200, applied.text
    assert applied.json()["by"] == {"body": "accord", "role": "operator", "person": "Ops"}
    assert applied.json()["control"]["offset"] >= before


def test_a_control_topic_an_older_version_made_is_given_todays_configuration(services: Endpoints) -> None:
    # As `accord local up` does for `_accord.control`, on a topic of this test made the old way (compacted, the
    # producer's timestamps), on which gates would refuse every record as not broker-stamped.
    old = f"_accord.control.test-align-{uuid.uuid4().hex[:8]}"
    create_topics(services.kafka, [old], configs={"cleanup.policy": "compact"})
    assert describe_topic_config(services.kafka, old).get("message.timestamp.type", "CreateTime") == "CreateTime"
    assert align_topic_config(services.kafka, old, CONTROL_TOPIC_CONFIG)
    effective = describe_topic_config(services.kafka, old)
    assert {name: effective[name] for name in CONTROL_TOPIC_CONFIG} == CONTROL_TOPIC_CONFIG
    assert not align_topic_config(services.kafka, old, CONTROL_TOPIC_CONFIG)  # nothing left to change
