"""Access requests end to end on the real Kafka, OPA and gate, through the governance HTTP API and its client.

Cornwall's DPH asks for T6 (vaccination uptake) from its template; the National Immunisation System's IG lead and
its Caldicott guardian approve; the template is instantiated as a grant signed by their verified identities and put
on the control topic; the gate delivers Cornwall's cells without a restart, and the governance service measures
approval to first record from the gate's delivery batch. A request by one body is invisible to another. An
unanswered request (on a fake clock) climbs every tier of the ladder and ends by the decisive default.
"""

from __future__ import annotations

import datetime as dt
import time
import uuid
from collections.abc import Iterator
from secrets import token_bytes
from typing import Any

import httpx
import pytest
from fastapi.testclient import TestClient

from broker.adapters.governance_http import AccessRequests, GovernanceApiError, GovernanceClient
from broker.api.auth import Guard
from broker.api.governance_app import create_governance_app
from broker.config import Settings
from broker.demo.synthetic import vaccination_cells
from broker.domain.audit import new_signing_key
from broker.domain.disputes import parse_stamp
from broker.domain.topics import delivery_topic
from broker.local.stack import Endpoints
from broker.runtime.gate import GateThread
from broker.runtime.governance import GovernanceService
from broker.security.api_tokens import issue, signing_key, verifier_for
from tests.conftest import SCHEMAS, control_writer, governance_service, opa_as
from tests.e2e.scenario_support import Cleanup, FakeClock
from tests.integration.gate_support import Receiver, end_offsets, publish, specimen_day, start_gate
from tests.integration.governance_process import GovernanceProcess, wait_for

T6 = "nis.vaccination-uptake"
CORNWALL = "cornwall-council"
HACKNEY = "hackney-council"
CORNWALL_DPH = delivery_topic(CORNWALL, "dph", T6)
CELL = ["as_at_date", "lsoa", "utla", "age_band", "ethnicity_group", "dose", "vaccinated_n", "eligible_n"]
WAIT_S = 60.0       # a bound for failing, never a measurement


def token(body: str, role: str, person: str) -> str:
    return issue(signing_key(Settings().secrets_dir), body, role, person, dt.timedelta(hours=1),
                 dt.datetime.now(dt.UTC))


def form(**changes: Any) -> dict[str, Any]:
    return {"template": "t6-vaccination-uptake", "purpose": "health-protection", "duration": "P30D",
            "backfill": "P28D", "fields": CELL,
            "justification": "Uptake lags in three Cornish LSOAs; we need cells by ethnic group to target outreach.",
            **changes}


def api_for(services: Endpoints, service: GovernanceService) -> TestClient:
    """The governance API as `accord governance serve` builds it: the session's token key and the real OPA."""
    guard = Guard(verifier_for(Settings().secrets_dir).verify, opa_as(services.opa_url, "reader"))
    return TestClient(create_governance_app(service.governance, service.notifier.log, guard=guard,
                                            changes=service.changes))


def started(services: Endpoints, name: str, clock: Any = None, run: str | None = None,
            tick_s: float = 3600.0) -> GovernanceService:
    """A governance service on its own governance topic (`run` names it: the same run is a restart); its deadlines
    fire every `tick_s` (by default, not within a test)."""
    run = run or uuid.uuid4().hex[:8]
    options: dict[str, Any] = {} if clock is None else {"clock": clock}
    return governance_service(services, audit_key=new_signing_key(), webhook_secret=token_bytes(32),
                              schemas_dir=SCHEMAS, tick_s=tick_s, transactional_id=f"test-{name}-{run}",
                              topic=f"_accord.governance.test-{name}-{run}",
                              audit_topic=f"_accord.audit.test-{name}-{run}", **options).start()


@pytest.fixture(scope="module")
def gate(services: Endpoints, applied_catalog: dict[str, Any]) -> Iterator[GateThread]:
    runner = start_gate(services, "test-requests", "test-requests-worker")
    yield runner
    runner.stop()
    assert runner.failure is None, runner.failure


@pytest.fixture
def cleanup(services: Endpoints) -> Iterator[Cleanup]:
    writer = control_writer(services.kafka, client_id="test-requests-cleanup")
    undo = Cleanup(writer)
    yield undo
    undo.run()
    writer.close()


def _applied_past(gate: GateThread, offset: int) -> None:
    deadline = time.monotonic() + WAIT_S
    while gate.gate is None or gate.gate.state.offset <= offset:
        assert time.monotonic() < deadline, f"the gate did not read control offset {offset}"
        time.sleep(0.05)


def test_two_roles_approve_and_the_requester_receives_its_first_record_without_a_restart(
        services: Endpoints, gate: GateThread, receiver: Receiver, cleanup: Cleanup) -> None:
    run = uuid.uuid4().hex[:8]
    service = started(services, "requests", run=run)
    try:
        with api_for(services, service) as http, GovernanceClient(client=http) as client:
            requests = AccessRequests(client)
            dph = token(CORNWALL, "dph", "dph@cornwall.test")
            made = requests.create(dph, form())
            cleanup.grants([f"request-{made['id']}"])
            assert (made["state"], made["publisher"], made["backfill"]) == ("awaiting", "nis", "P28D")
            assert made["reviewers"]["one_of_each"] == ["caldicott-guardian", "ig-lead"]

            with pytest.raises(GovernanceApiError) as refused:
                requests.approve(dph, made["id"], "we approve ourselves")
            assert refused.value.status == 403
            ig_lead = token("nis", "ig-lead", "ig-lead@nis.test")
            assert requests.approve(ig_lead, made["id"], "Need and purpose made out.")["state"] == "awaiting"
            with pytest.raises(GovernanceApiError, match="already reviewed"):
                requests.approve(ig_lead, made["id"], "twice")
            caldicott = token("nis", "caldicott-guardian", "caldicott@nis.test")
            live = requests.approve(caldicott, made["id"], "Proportionate; restricted channel only.")
            assert live["state"] == "live"
            grant = live["decision"]["grant"]
            assert [(s["body"], s["role"], s["name"]) for s in grant["signatories"]] == [
                ("nis", "ig-lead", "ig-lead@nis.test"), ("nis", "caldicott-guardian", "caldicott@nis.test")]
            assert grant["backfill"] == "P28D" and grant["template"] == "t6-vaccination-uptake"

            enforced = next(e for e in live["timeline"] if e["type"] == "request-enforced")
            [written] = enforced["data"]["control"]
            assert written["key"] == f"grant/request-{made['id']}"
            _applied_past(gate, int(written["offset"]))

            start = end_offsets(services.kafka, [CORNWALL_DPH])[CORNWALL_DPH]
            sources = publish(services, T6, vaccination_cells(specimen_day(), {"cornwall": 3}, seed=17))
            got = receiver.records(CORNWALL_DPH, start, lambda _, h: h.get("accord.source") in sources, want=3,
                                   timeout_s=WAIT_S)
            assert len(got) == 3 and all(set(value) == set(CELL) for value, _ in got)

            deadline = time.monotonic() + WAIT_S
            while (shown := requests.show(dph, made["id"]))["first_delivery"] is None:
                assert time.monotonic() < deadline, "the governance service never saw the first delivery"
                service.governance.tick()
                time.sleep(0.2)
            first = shown["first_delivery"]
            assert first["topic"] == CORNWALL_DPH
            assert parse_stamp(first["at"]) >= parse_stamp(shown["approved_at"])
            print(f"\napproval to first record delivered: {shown['approval_to_first_record_s']:.3f} s "
                  f"(request {made['id']}, approved {shown['approved_at']}, first batch {first['at']})")

            # Another body neither lists nor reads it; the publisher's reviewer does.
            other = token(HACKNEY, "dph", "dph@hackney.test")
            assert made["id"] not in [r["id"] for r in requests.listed(other)]
            with pytest.raises(GovernanceApiError) as hidden:
                requests.show(other, made["id"])
            assert hidden.value.status == 403 and "seen only by cornwall-council" in str(hidden.value)
            assert made["id"] in [r["id"] for r in requests.listed(ig_lead)]
            assert made["id"] in [r["id"] for r in requests.listed(dph)]
            before = service.governance.request(made["id"]).to_json()
        # A restarted service rebuilds the request from the governance topic: approvers, grant, first record.
        service.stop()
        service = started(services, "requests", run=run)
        assert service.governance.request(made["id"]).to_json() == before
    finally:
        service.stop()


def test_a_request_that_does_not_fit_its_template_is_refused_with_a_400(
        services: Endpoints, applied_catalog: dict[str, Any]) -> None:
    service = started(services, "requests-invalid")
    try:
        with api_for(services, service) as http, GovernanceClient(client=http) as client:
            requests = AccessRequests(client)
            dph = token(CORNWALL, "dph", "dph@cornwall.test")
            with pytest.raises(GovernanceApiError) as bad:
                requests.create(dph, form(fields=["lsoa", "nhs_number"]))
            assert bad.value.status == 400 and "does not give nhs_number" in str(bad.value)
            with pytest.raises(GovernanceApiError) as beyond:
                requests.create(dph, form(areas=["E06000016"]))
            assert beyond.value.status == 400 and "cannot ask for rows of E06000016" in str(beyond.value)
    finally:
        service.stop()


def test_an_unanswered_request_climbs_the_ladder_and_ends_by_its_decisive_default(
        services: Endpoints, applied_catalog: dict[str, Any]) -> None:
    clock = FakeClock(dt.datetime.now(dt.UTC))
    service = started(services, "requests-ladder", clock)
    try:
        with api_for(services, service) as http, GovernanceClient(client=http) as client:
            requests = AccessRequests(client)
            dph = token(HACKNEY, "dph", "dph@hackney.test")
            made = requests.create(dph, form(justification="Hackney's uptake gaps by ethnic group."))
            made_at = parse_stamp(made["made_at"])
            for tier in (2, 3):       # nobody answers: each deadline passes in turn
                clock.to(parse_stamp(requests.show(dph, made["id"])["deadline"]))
                service.governance.tick()
                assert requests.show(dph, made["id"])["tier"] + 1 == tier
            # The board now reviews it, the publisher (a party) no longer.
            board = token("dhsc", "governance-board", "board@dhsc.test")
            assert made["id"] in [r["id"] for r in requests.listed(board)]
            with pytest.raises(GovernanceApiError) as not_now:
                requests.approve(token("nis", "ig-lead", "ig-lead@nis.test"), made["id"], "late")
            assert not_now.value.status == 403

            clock.to(parse_stamp(requests.show(dph, made["id"])["deadline"]))
            service.governance.tick()
            ended = requests.show(dph, made["id"])
            assert ended["state"] == "defaulted" and ended["decision"]["outcome"] == "refused"
            assert "decisive default" in ended["decision"]["reason"]
            assert [e["type"] for e in ended["timeline"]] == [
                "request-made", "request-tier-opened", "request-tier-opened", "request-defaulted"]
            bound = service.governance.context().ladder.bound("normal")
            assert parse_stamp(ended["decided_at"]) - made_at == bound
    finally:
        service.stop()


def test_the_governance_process_as_its_own_kafka_user_measures_approval_to_first_record(
        services: Endpoints, gate: GateThread, receiver: Receiver, cleanup: Cleanup, local_settings: Settings,
        tmp_path: Any) -> None:
    process = GovernanceProcess(services, local_settings, tmp_path / "governance")
    url = process.start()
    try:
        with GovernanceClient(client=httpx.Client(base_url=url, timeout=30.0, trust_env=False)) as client:
            requests = AccessRequests(client)
            dph = token(CORNWALL, "dph", "dph@cornwall.test")
            # Short, so that the shared governance topic's next service ends it soon after this test.
            made = requests.create(dph, form(duration="PT5M", justification="Cornish outreach, process run."))
            cleanup.grants([f"request-{made['id']}"])
            requests.approve(token("nis", "ig-lead", "ig-lead@nis.test"), made["id"], "made out")
            live = requests.approve(token("nis", "caldicott-guardian", "cg@nis.test"), made["id"], "proportionate")
            assert live["state"] == "live", live
            enforced = next(e for e in live["timeline"] if e["type"] == "request-enforced")
            _applied_past(gate, max(int(c["offset"]) for c in enforced["data"]["control"]))

            start = end_offsets(services.kafka, [CORNWALL_DPH])[CORNWALL_DPH]
            sources = publish(services, T6, vaccination_cells(specimen_day(), {"cornwall": 2}, seed=23))
            got = receiver.records(CORNWALL_DPH, start, lambda _, h: h.get("accord.source") in sources, want=2,
                                   timeout_s=WAIT_S)
            assert len(got) == 2
            wait_for(lambda: requests.show(dph, made["id"])["first_delivery"] is not None,
                     "the governance process to record the first delivery")
            shown = requests.show(dph, made["id"])
            assert shown["first_delivery"]["topic"] == CORNWALL_DPH
            print(f"\napproval to first record delivered (governance process): "
                  f"{shown['approval_to_first_record_s']:.3f} s")
    finally:
        process.stop()
