"""Pseudonym key rotation on the real Kafka, OPA, registry, governance API and gate (issue 21 part 5).

Manchester's analysts receive NHS numbers pseudonymised (t1-test-manchester-linkage). The operator makes key
version n and announces it with a day's notice: deliveries go on under the old key (header and pseudonym alike).
When the rotation takes effect (here: announced again with no notice), the header names version n and the
pseudonym changes; the old key is still derivable for a re-identification, from the secrets directory.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Iterator
from secrets import token_bytes
from typing import Any

import pytest
from fastapi.testclient import TestClient

from broker.api.auth import Guard
from broker.api.governance_app import create_governance_app
from broker.config import Settings
from broker.demo.synthetic import nhs_number, positive_tests
from broker.domain.audit import new_signing_key
from broker.domain.pseudonyms import Pseudonymiser, subscriber_key
from broker.local.stack import Endpoints
from broker.runtime.gate import GateThread
from broker.security.api_tokens import verifier_for
from broker.security.secrets import new_pseudonym_master, pseudonym_master, pseudonym_secret
from tests.conftest import SCHEMAS, bearer, control_writer, governance_service, opa_as
from tests.integration.gate_support import T1, Receiver, end_offsets, publish, specimen_day, start_gate, topic_for

MANCHESTER = "manchester-city-council"
ANALYSTS = topic_for(MANCHESTER, "analyst")
ROTATE = "/pseudonym-keys/rotate"


@pytest.fixture(scope="module")
def gate(services: Endpoints, applied_catalog: dict[str, Any]) -> Iterator[GateThread]:
    runner = start_gate(services, "test-rotation", "test-rotation-worker")
    yield runner
    runner.stop()
    assert runner.failure is None, runner.failure


@pytest.fixture(scope="module")
def api(services: Endpoints, applied_catalog: dict[str, Any]) -> Iterator[TestClient]:
    run = uuid.uuid4().hex[:8]
    service = governance_service(services, audit_key=new_signing_key(), webhook_secret=token_bytes(32),
                                 schemas_dir=SCHEMAS, tick_s=3600.0, transactional_id=f"test-rotation-{run}",
                                 topic=f"_accord.governance.test-rotation-{run}",
                                 audit_topic=f"_accord.audit.test-rotation-{run}").start()
    guard = Guard(verifier_for(Settings().secrets_dir).verify, opa_as(services.opa_url, "reader"))
    app = create_governance_app(service.governance, service.notifier.log, guard=guard, changes=service.changes)
    try:
        with TestClient(app) as client:
            yield client
    finally:
        service.stop()


@pytest.fixture
def rotation_undone(services: Endpoints) -> Iterator[None]:
    yield
    writer = control_writer(services.kafka, client_id="test-rotation-cleanup")
    try:
        writer.append(f"pseudonym-key/{MANCHESTER}", None)
    finally:
        writer.close()


def _applied_past(gate: GateThread, offset: int, timeout_s: float = 10.0) -> None:
    deadline = time.monotonic() + timeout_s
    while gate.gate is None or gate.gate.state.offset <= offset:
        assert time.monotonic() < deadline, f"the gate did not read control offset {offset}"
        time.sleep(0.05)


def _delivered(services: Endpoints, receiver: Receiver, nhs_number: str) -> tuple[str, bytes]:
    """Publish one Manchester case of this person; its pseudonym and key header as the analysts receive them."""
    case = positive_tests(specimen_day(), {"manchester": 1}, prefix=f"K{uuid.uuid4().hex[:6].upper()}")[0]
    start = end_offsets(services.kafka, [ANALYSTS])[ANALYSTS]
    sources = publish(services, T1, [{**case, "nhs_number": nhs_number}])
    got = receiver.records(ANALYSTS, start, lambda _, h: h["accord.source"] in sources, want=1)
    assert len(got) == 1
    value, headers = got[0]
    return str(value["nhs_number"]), headers["accord.pseudonym-key"]


def test_a_rotation_is_announced_and_pseudonyms_change_only_once_it_takes_effect(
        services: Endpoints, gate: GateThread, api: TestClient, receiver: Receiver, rotation_undone: None) -> None:
    secrets_dir = Settings().secrets_dir
    person = nhs_number(uuid.uuid4().int)
    before, key_before = _delivered(services, receiver, person)
    assert key_before == b"v1"

    version = new_pseudonym_master(secrets_dir)
    body = {"version": version, "subscriber": MANCHESTER, "notice_s": 86_400}
    refused = api.post(ROTATE, json=body, headers=bearer("manchester-city-council", "dph"))
    assert refused.status_code == 403, refused.text
    announced = api.post(ROTATE, json=body, headers=bearer("accord", "operator", "Ops"))
    assert announced.status_code == 200, announced.text
    _applied_past(gate, announced.json()["control"]["offset"])
    assert _delivered(services, receiver, person) == (before, b"v1"), "announced for tomorrow: nothing changes yet"

    now = api.post(ROTATE, json={**body, "notice_s": 0}, headers=bearer("accord", "operator", "Ops"))
    assert now.status_code == 200, now.text
    _applied_past(gate, now.json()["control"]["offset"])
    after, key_after = _delivered(services, receiver, person)
    assert key_after == f"v{version}".encode() and after != before
    assert after == Pseudonymiser(subscriber_key(pseudonym_master(secrets_dir, version), MANCHESTER, version),
                                  T1)("nhs_number", person)
    # the old key is still derivable, so a pseudonym delivered before the rotation can be traced back
    assert before == Pseudonymiser(subscriber_key(pseudonym_secret(None, secrets_dir), MANCHESTER), T1)(
        "nhs_number", person)
    stale = api.post(ROTATE, json=body, headers=bearer("accord", "operator", "Ops"))  # the version now in force
    assert stale.status_code == 409 and "later version" in stale.text
