"""T1's drill checks against a real Governance on in-memory topics, through the governance HTTP API as the people
the drill plays; and the governance route that records a signed report's digest."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from fastapi.testclient import TestClient

from broker.adapters.governance_http import GovernanceClient
from broker.api.governance_app import create_governance_app
from broker.domain.control import CATALOG_KEY
from broker.domain.drills import DRILL_REPORTED
from broker.domain.ladder import Actor
from broker.services.drill_flows import NEEDS_DRILL_STREAMS, drill_body_entry, drills_for, tear_down
from broker.services.drill_runner import DrillRunner
from broker.services.governance import Governance
from tests.unit.auth_fakes import FakeAuthz, bearer, guard, token
from tests.unit.governance_catalog import catalog
from tests.unit.governance_fakes import FakeClock, FakeControl, MemoryGovernanceLog
from tests.unit.notifier_fakes import RecordingNotifier


class Deployment:
    """A governance service and its control topic; the operator's catalog applications land on the control."""

    def __init__(self, document: Mapping[str, Any] | None) -> None:
        self.log, self.control, self.clock = MemoryGovernanceLog(), FakeControl(document), FakeClock()
        self.governance = Governance(self.log, self.control, self.control, self.clock,
                                     RecordingNotifier({}))
        self.governance.start()
        self.client = TestClient(create_governance_app(self.governance, list, guard=guard()))
        self.calls: list[tuple[str, str, Actor]] = []

    def call(self, method: str, path: str, actor: Actor, body: Mapping[str, Any] | None = None) -> dict[str, Any]:
        self.calls.append((method, path, actor))
        if (method, path) == ("PUT", "/catalog"):
            assert body is not None
            self.control.append(CATALOG_KEY, {"document": dict(body["catalog"])})
            return {}
        # The real client, so refusals reach the drill as the GovernanceApiError they are in a deployment.
        answer = GovernanceClient(client=self.client).call(method, path, token(actor.body, actor.role, actor.person),
                                                           body)
        return dict(answer)

    def current(self) -> Mapping[str, Any] | None:
        return self.control.current().catalog


def test_t1_switches_on_from_its_template_and_a_dispute_is_decided_then_the_drill_body_goes() -> None:
    deployment = Deployment(catalog())
    drills, checks = drills_for(["T1", "T2"], "abc123", deployment, deployment)
    report = DrillRunner("unit", deployment.clock).run(["T1", "T2"], checks)
    verdicts = {(c.flow, c.check): c for c in report.checks}
    switch_on = verdicts[("T1", "switch-on")]
    assert switch_on.verdict == "pass", switch_on.reason
    [request] = deployment.governance.requests()
    assert (request.body, request.role, request.state) == ("drill-abc123-t1", "analyst", "live")
    assert request.fields == ("dob", "lsoa", "sex")      # the template's minimised tier, nothing more
    decided = verdicts[("T1", "dispute-decision")]
    assert decided.verdict == "pass", decided.reason
    [dispute] = [d for d in deployment.governance.disputes() if d.kind == "refusal"]
    assert (dispute.challenger.body, dispute.decision and dispute.decision["outcome"]) == ("drill-abc123-t1",
                                                                                           "refused")
    withdrawn = verdicts[("T1", "grant-withdrawn")]
    assert withdrawn.verdict == "pass", withdrawn.reason
    assert withdrawn.reason.endswith("withdrawn by dhsc, nhsd at tier 2")   # tiers counted from 1, as people do
    assert "decided at tier 1 (refused)" in decided.reason
    assert f"request-{request.id}" not in deployment.governance.state.grants
    contest = next(d for d in deployment.governance.disputes() if d.kind == "grant-contested")
    assert (contest.challenger.body, contest.state) == ("ukhsa", "enforced")
    assert [a["actor"]["body"] for a in contest.approvals] == ["dhsc", "nhsd"]    # the board, not a party
    waiting = [c for c in report.checks if c.verdict == "not-run"]
    assert {c.check for c in waiting if c.flow == "T1"} == {
        "approval-to-first-record", "subscriber-view", "revocation", "dispute-default", "break-glass",
        "fail-closed", "misroute"}
    assert all(c.reason for c in waiting)
    # Without the ingest API and the delivery topics there are no drill streams: nothing needing records passes.
    assert all(verdicts[("T1", name)].reason.startswith(NEEDS_DRILL_STREAMS)
               for name in ("approval-to-first-record", "subscriber-view", "revocation"))
    assert verdicts[("T2", "switch-on")].reason == "the applied catalog has no template t2-cases-to-trace"
    assert "drill-abc123-t1" in (deployment.current() or {})["bodies"]

    assert tear_down(drills) == []
    assert deployment.current() == catalog()
    assert [m.what for m in report.timeline][:2] == ["drill body drill-abc123-t1 added to catalog c-test",
                                                     f"request {request.id} made"]


def test_without_an_applied_catalog_nothing_is_switched_on_and_nothing_passes() -> None:
    deployment = Deployment(None)
    drills, checks = drills_for(["T1"], "abc123", deployment, deployment)
    report = DrillRunner("unit", deployment.clock).run(["T1"], checks)
    assert {c.verdict for c in report.checks} == {"not-run"}
    assert report.checks[0].reason.startswith("no catalog is applied")
    assert tear_down(drills) == [] and deployment.calls == []


class Stalled:
    """A deployment whose requests stay awaiting after every approval."""

    def __init__(self) -> None:
        self.document = catalog()

    def call(self, method: str, path: str, actor: Actor, body: Mapping[str, Any] | None = None) -> dict[str, Any]:
        return {"id": "r-1", "state": "awaiting"}

    def current(self) -> Mapping[str, Any] | None:
        return self.document


def test_a_request_that_is_not_live_after_its_approvals_fails_switch_on() -> None:
    stalled = Stalled()
    _, checks = drills_for(["T1"], "abc123", stalled, stalled)
    report = DrillRunner("unit", FakeClock()).run(["T1"], checks[:1])
    [check] = report.checks
    assert check.verdict == "fail" and "request r-1 is 'awaiting'" in check.reason


RECORD = {"run": "drill-20260302T090000Z-abc123", "deployment": "local", "digest": "a" * 64,
          "key_id": "0123456789abcdef", "verdict": "incomplete", "counts": {"pass": 2, "fail": 0, "not-run": 7},
          "finished_at": "2026-03-02T09:03:00Z"}


def test_a_reports_digest_goes_on_the_governance_log_as_the_operator() -> None:
    deployment = Deployment(catalog())
    operator = bearer("accord", "operator", "Accord drill")
    answer = deployment.client.post("/drill-reports", json=RECORD, headers=operator)
    assert answer.status_code == 201, answer.text
    [event] = [e for e in deployment.log.events if e["type"] == DRILL_REPORTED]
    assert event["data"] == RECORD and event["actor"] == {"body": "accord", "role": "operator",
                                                          "person": "Accord drill"}
    bad = deployment.client.post("/drill-reports", json={**RECORD, "digest": "not-hex"}, headers=operator)
    assert bad.status_code == 422 and "body.digest" in bad.json()["error"]


def test_with_opa_down_switch_on_fails_saying_why_and_nothing_is_left_to_undo() -> None:
    deployment = Deployment(catalog())
    deployment.client = TestClient(create_governance_app(deployment.governance, list,
                                                         guard=guard(FakeAuthz(down=True))))
    drills, checks = drills_for(["T1"], "abc123", deployment, deployment)
    report = DrillRunner("unit", deployment.clock).run(["T1"], checks)
    switch_on = report.checks[0]
    assert switch_on.verdict == "fail"
    assert switch_on.reason == ("GovernanceApiError: authorisation is unavailable (the policy engine did not "
                                "answer); nothing is allowed until it does")
    assert deployment.governance.requests() == [] and deployment.governance.disputes() == []
    assert "pass" not in {c.verdict for c in report.checks}      # nothing claims a pass that did not happen
    assert report.verdict == "fail"
    assert tear_down(drills) == [] and deployment.current() == catalog()


def test_a_drill_body_sits_where_no_council_is_served_when_there_is_such_a_place() -> None:
    document = catalog()
    entry = drill_body_entry(document, "drill-x-t1")
    assert entry is not None and entry["areas"] == ["E06000016"]     # every area is a council's: Leicester's
    for national in ("ukhsa", "dhsc"):
        document["bodies"][national]["served_areas"] += ["E06000053", "E07000001", "E06000052"]
    entry = drill_body_entry(document, "drill-x-t1")
    assert entry is not None
    assert (entry["areas"], entry["served_areas"], entry["tier"]) == (["E06000052"], ["E06000052"], "unitary")
    assert (entry["name"], entry["roles"]) == ("Accord drill body drill-x-t1", ["analyst", "dph"])


def test_a_catalog_applied_during_the_drill_is_left_as_it_is() -> None:
    deployment = Deployment(catalog())
    drills, checks = drills_for(["T1"], "abc123", deployment, deployment)
    DrillRunner("unit", deployment.clock).run(["T1"], checks[:1])
    newer = {**catalog(), "revision": "c-newer"}
    deployment.control.append(CATALOG_KEY, {"document": newer})     # an operator applies a catalog meanwhile
    applied = len([c for c in deployment.calls if c[:2] == ("PUT", "/catalog")])
    assert tear_down(drills) == [
        f"T1: grant request-{deployment.governance.requests()[0].id} of drill body drill-abc123-t1 was not "
        "withdrawn; it ends by itself after PT1H"]
    assert deployment.current() == newer
    assert len([c for c in deployment.calls if c[:2] == ("PUT", "/catalog")]) == applied
