"""Access requests over the governance HTTP API on a real Governance with in-memory topics: 400s that say what to
fix, approval by two roles put in force as a signed grant, the list filtered by the policy, the measured approval to
first record, and requests rebuilt from the log after a restart."""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping
from typing import Any

from fastapi.testclient import TestClient

from broker.api.governance_app import create_governance_app
from broker.domain.disputes import stamp
from broker.services.governance import Governance
from tests.unit.auth_fakes import FakeAuthz, bearer, guard
from tests.unit.governance_catalog import LEICESTERSHIRE, MANCHESTER, T1, catalog
from tests.unit.governance_fakes import FakeClock, FakeControl, MemoryGovernanceLog
from tests.unit.notifier_fakes import RecordingNotifier

COUNTY_DPH = bearer(LEICESTERSHIRE, "dph", "dph@leicestershire.test")
IG_LEAD = bearer("ukhsa", "ig-lead", "ruth@ukhsa.test")
CALDICOTT = bearer("ukhsa", "caldicott-guardian", "sam@ukhsa.test")
FORM: dict[str, Any] = {
    "template": "t1-positive-tests", "purpose": "health-protection", "duration": "P30D", "backfill": "P28D",
    "justification": "A cluster in Charnwood: we need the line list.", "fields": ["specimen_id", "lsoa"]}


class Reports:
    """Delivery batches as the gates' audit records would report them."""

    def __init__(self) -> None:
        self.batches: list[dict[str, Any]] = []

    def read_new(self, since: dt.datetime) -> list[dict[str, Any]]:
        new, self.batches = self.batches, []
        return new


class Metrics:
    """What the service reports to Prometheus, recorded."""

    def __init__(self) -> None:
        self.seen: list[tuple[str, Any]] = []

    def decided(self, dispute: Any) -> None:
        self.seen.append(("dispute-decided", dispute.id))

    def enforced(self, dispute: Any, seconds: float) -> None:
        self.seen.append(("dispute-enforced", dispute.id))

    def open_by_tier(self, counts: Mapping[str, int]) -> None:
        pass

    def deadlines_by_tier(self, earliest: Mapping[str, Any]) -> None:
        pass

    def request_decided(self, request: Any) -> None:
        self.seen.append(("request-decided", (request.decision or {}).get("outcome")))

    def first_record(self, request: Any) -> None:
        self.seen.append(("first-record", request.approval_to_first_record_s))


def _doc() -> dict[str, Any]:
    doc = catalog()
    doc["bodies"]["ukhsa"]["roles"] = ["caldicott-guardian", "governance-board", "ig-lead"]
    doc["templates"]["t1-positive-tests"]["approval"] = {
        "approvals": 2, "roles": ["caldicott-guardian", "ig-lead"], "one_of_each": ["caldicott-guardian", "ig-lead"]}
    return doc


def _sees(who: Mapping[str, Any], request: Any) -> bool:
    """The policy's rule, for this fake: the requesting body, and the publisher's reviewers."""
    return bool(who["body"] in (request["body"], *request["reviewers"]["bodies"]))


class World:
    def __init__(self, log: MemoryGovernanceLog | None = None, control: FakeControl | None = None) -> None:
        self.log, self.control, self.clock = log or MemoryGovernanceLog(), control or FakeControl(_doc()), FakeClock()
        self.reports, self.notifier, self.metrics = Reports(), RecordingNotifier({}), Metrics()
        self.governance = Governance(self.log, self.control, self.control, self.clock, self.notifier,
                                     self.metrics, deliveries=self.reports)
        self.governance.start()
        app = create_governance_app(self.governance, list, guard=guard(FakeAuthz(sees=_sees)))
        self.client = TestClient(app)

    def make(self, **changes: Any) -> dict[str, Any]:
        response = self.client.post("/requests", json={**FORM, **changes}, headers=COUNTY_DPH)
        assert response.status_code == 201, response.text
        made: dict[str, Any] = response.json()
        return made


def test_a_request_that_does_not_fit_its_template_is_a_400_saying_why() -> None:
    world = World()
    cases: list[tuple[dict[str, Any], str]] = [({"fields": ["favourite_colour"]}, "does not give favourite_colour"),
                                               ({"template": "t9"}, "unknown template 't9'"),
                                               ({"duration": "a while"}, "not an ISO 8601 duration")]
    for changes, says in cases:
        response = world.client.post("/requests", json={**FORM, **changes}, headers=COUNTY_DPH)
        assert response.status_code == 400 and says in response.json()["error"], response.text
    assert world.client.post("/requests", json={**FORM, "colour": "red"}, headers=COUNTY_DPH).status_code == 422
    assert world.log.events == []
    assert world.client.get("/requests/r-nothing", headers=COUNTY_DPH).status_code == 404


def test_two_roles_approve_over_http_and_the_grant_is_put_in_force_with_their_names() -> None:
    world = World()
    made = world.make()
    assert made["state"] == "awaiting" and made["reviewers"]["one_of_each"] == ["caldicott-guardian", "ig-lead"]
    path = f"/requests/{made['id']}"
    requester_approves = world.client.post(f"{path}/approvals", json={"reason": "ok"}, headers=COUNTY_DPH)
    assert requester_approves.status_code == 403 and "cannot review its own" in requester_approves.json()["error"]
    first = world.client.post(f"{path}/approvals", json={"reason": "Need made out."}, headers=IG_LEAD)
    assert first.status_code == 200 and first.json()["state"] == "awaiting"
    again = world.client.post(f"{path}/approvals", json={"reason": "Again."}, headers=IG_LEAD)
    assert again.status_code == 409 and "already reviewed" in again.json()["error"]
    live = world.client.post(f"{path}/approvals", json={"reason": "Proportionate."}, headers=CALDICOTT).json()
    assert live["state"] == "live" and live["approved_at"] is not None
    [(key, grant)] = world.control.writes("grant/")
    assert key == f"grant/request-{made['id']}" and grant is not None
    assert [s["name"] for s in grant["signatories"]] == ["ruth@ukhsa.test", "sam@ukhsa.test"]
    assert world.control.current().grants[f"request-{made['id']}"]["subscriber"] == LEICESTERSHIRE

    # The gate's first delivery to the requester after approval is measured and shown on the request.
    delivered_at = world.clock() + dt.timedelta(seconds=2.5)
    world.reports.batches.append({"subscriber": LEICESTERSHIRE, "role": "dph", "stream": T1,
                                  "at": stamp(delivered_at), "topic": "deliver.x", "partition": 0,
                                  "first_offset": 41})
    world.governance.tick()
    shown = world.client.get(path, headers=COUNTY_DPH).json()
    assert shown["approval_to_first_record_s"] == 2.5 and shown["first_delivery"]["offset"] == 41
    assert world.metrics.seen == [("request-decided", "approved"), ("first-record", 2.5)]

    # A restarted service rebuilds the request, its approvers and its measurement from the log alone.
    again_world = World(world.log.reader(), world.control)
    assert again_world.governance.request(made["id"]).to_json() == world.governance.request(made["id"]).to_json()


def test_a_refusal_needs_a_reason_and_is_shown_to_the_requester() -> None:
    world = World()
    made = world.make()
    path = f"/requests/{made['id']}/refusal"
    assert world.client.post(path, json={"reason": " "}, headers=IG_LEAD).status_code == 400
    refused = world.client.post(path, json={"reason": "A bespoke DSA first."}, headers=IG_LEAD).json()
    assert refused["state"] == "refused" and refused["decision"]["reason"] == "A bespoke DSA first."
    assert world.control.writes("grant/") == []


def test_the_list_shows_each_body_only_what_the_policy_lets_it_see() -> None:
    world = World()
    made = world.make()
    assert [r["id"] for r in world.client.get("/requests", headers=COUNTY_DPH).json()["requests"]] == [made["id"]]
    assert [r["id"] for r in world.client.get("/requests", headers=IG_LEAD).json()["requests"]] == [made["id"]]
    other = bearer(MANCHESTER, "dph", "dph@manchester.test")
    assert world.client.get("/requests", headers=other).json()["requests"] == []


def test_the_requester_and_the_reviewers_of_its_tier_are_told() -> None:
    world = World()
    made = world.make()
    told = {body for body, note in world.notifier.sent if note["type"] == "request-made"}
    assert told == {LEICESTERSHIRE, "ukhsa"}
    assert all(note["request"]["id"] == made["id"] for _, note in world.notifier.sent)


def test_at_its_end_the_grant_is_withdrawn_on_the_control_topic_and_the_request_kept() -> None:
    world = World()
    made = world.make(duration="PT1H")
    for reviewer in (IG_LEAD, CALDICOTT):
        world.client.post(f"/requests/{made['id']}/approvals", json={"reason": "fine"}, headers=reviewer)
    world.clock.advance(dt.timedelta(hours=1))
    world.governance.tick()
    assert world.control.writes("grant/")[-1] == (f"grant/request-{made['id']}", None)
    assert f"request-{made['id']}" not in world.control.current().grants
    kept = world.client.get(f"/requests/{made['id']}", headers=COUNTY_DPH).json()
    assert kept["state"] == "expired" and kept["decision"]["grant"]["signatories"]
