"""The governance HTTP API over a real Governance with in-memory topics: routes, who may act, and error mapping."""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass, field
from typing import Any

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from fastapi.testclient import TestClient

from broker.adapters.webhooks import WebhookDelivery
from broker.api.governance_app import create_governance_app
from broker.domain.webhooks import signing_secret
from broker.services.governance import Governance
from tests.unit.auth_fakes import NO_TOKEN, SERVICE, FakeAuthz, bearer, guard, now, token
from tests.unit.governance_catalog import LEICESTER, MANCHESTER, T1, catalog
from tests.unit.governance_fakes import FakeClock, FakeControl, MemoryGovernanceLog
from tests.unit.notifier_fakes import MASTER, RecordingNotifier

DPH = bearer(LEICESTER, "dph", "ivan@leicester.test")
UKHSA_IG = bearer("ukhsa", "ig-lead", "jo@ukhsa.test")
REFUSAL: dict[str, Any] = {
    "kind": "refusal", "stream": T1, "role": "dph", "purpose": "health-protection",
    "justification": "Cases are rising in Leicester and we need the line list to act.",
    "fields": ["name", "lsoa", "specimen_date"], "decision_id": "plan-refused", "urgency": "urgent"}
GRANTED = {"outcome": "granted", "reason": "The need is made out."}


def acting(body: str, role: str) -> dict[str, str]:
    return bearer(body, role)


def board(body: str) -> dict[str, str]:
    return acting(body, "governance-board")


def delivery(body: str, outcome: Any = "delivered") -> WebhookDelivery:
    return WebhookDelivery(delivery_id=f"w-{body}", body=body, url=f"https://{body}.test/hook", event_id="e-1",
                           type="raised", attempts=1, outcome=outcome, status_code=200, error=None,
                           first_attempt_at=1.0, last_attempt_at=1.0)


@dataclass
class Api:
    client: TestClient
    governance: Governance
    log: MemoryGovernanceLog
    control: FakeControl
    clock: FakeClock
    deliveries: list[WebhookDelivery] = field(default_factory=list)

    def raise_refusal(self, headers: dict[str, str] = DPH, **changes: Any) -> dict[str, Any]:
        response = self.client.post("/disputes", json={**REFUSAL, **changes}, headers=headers)
        assert response.status_code == 201, response.text
        body: dict[str, Any] = response.json()
        return body

    def decided_at_tier_1(self) -> str:
        """A refusal the publisher refused again on reconsideration, now enforced and open to appeal."""
        ident = str(self.raise_refusal()["id"])
        refused = {"outcome": "refused", "reason": "Names are not needed for this."}
        assert self.client.post(f"/disputes/{ident}/decision", json=refused, headers=UKHSA_IG).status_code == 200
        return ident


def make_api(doc: dict[str, Any] | None = None, metrics: bool = False, engine: FakeAuthz | None = None) -> Api:
    log, control, clock = MemoryGovernanceLog(), FakeControl(doc), FakeClock()
    notifier = RecordingNotifier({"intranet.test": "10.1.2.3"})
    governance = Governance(log, control, control, clock, notifier)
    governance.start()
    deliveries: list[WebhookDelivery] = []
    scrape = (lambda: b"accord_disputes_open 1\n") if metrics else None
    app = create_governance_app(governance, lambda: deliveries, scrape, guard=guard(engine))
    # Reads go as Accord's service identity unless a test says who calls.
    return Api(TestClient(app, headers=SERVICE), governance, log, control, clock, deliveries)


@pytest.fixture
def api() -> Api:
    return make_api(catalog())


def test_health_and_metrics() -> None:
    with_metrics = make_api(catalog(), metrics=True).client
    assert with_metrics.get("/health").json() == {"status": "ok"}
    scraped = with_metrics.get("/metrics")
    assert scraped.status_code == 200 and scraped.text == "accord_disputes_open 1\n"
    assert scraped.headers["content-type"].startswith("text/plain")
    assert make_api(catalog()).client.get("/metrics").status_code == 404


def test_openapi_lists_every_route_and_no_claimed_identity_headers(api: Api) -> None:
    spec = api.client.get("/openapi.json").json()
    assert spec["info"]["title"] == "Accord governance"
    assert set(spec["paths"]) == {
        "/health", "/disputes", "/disputes/{ident}", "/disputes/{ident}/comments", "/disputes/{ident}/decision",
        "/disputes/{ident}/approvals", "/disputes/{ident}/appeal", "/emergency", "/emergency/lift", "/break-glass",
        "/webhooks", "/webhooks/deliveries", "/misroutes", "/misroutes/{ident}", "/misroutes/{ident}/deletion",
        "/requests", "/requests/{ident}", "/requests/{ident}/approvals", "/requests/{ident}/refusal",
        "/receipt-keys", "/receipt-keys/{ident}/retire", "/reviews", "/reviews/{task}/completion", "/drill-reports"}
    headers = {p["name"] for p in spec["paths"]["/disputes"]["post"].get("parameters", []) if p["in"] == "header"}
    assert headers == set()


@pytest.mark.parametrize(("authorization", "why"), [
    ("", "send `Authorization: Bearer <token>`"), ("Basic dXNlcjpwdw==", "must be `Bearer <token>`"),
    ("Bearer not-a-jwt", "not a JWT"),
    (f"Bearer {token(LEICESTER, 'dph', at=now() - dt.timedelta(hours=2))}", "expired"),
    (f"Bearer {token(LEICESTER, 'dph', key=Ed25519PrivateKey.generate())}", "no longer Accord's")])
def test_a_call_without_a_valid_token_is_401_and_writes_nothing(api: Api, authorization: str, why: str) -> None:
    response = api.client.post("/disputes", json=REFUSAL, headers={"Authorization": authorization})
    assert response.status_code == 401
    assert response.headers["www-authenticate"].startswith('Bearer realm="accord"')
    assert why in response.json()["error"]
    assert api.log.events == []


def test_the_actor_is_the_tokens_and_opa_is_asked_with_the_route_template() -> None:
    engine = FakeAuthz()
    api = make_api(catalog(), engine=engine)
    ident = api.raise_refusal()["id"]
    api.client.post(f"/disputes/{ident}/decision", json=GRANTED, headers=UKHSA_IG)
    asked = engine.asked[-1]
    assert (asked["service"], asked["method"], asked["route"], asked["params"]) == (
        "governance", "POST", "/disputes/{ident}/decision", {"ident": ident})
    assert asked["identity"] == {"body": "ukhsa", "role": "ig-lead", "person": "jo@ukhsa.test"}
    dispute = asked["resource"]["dispute"]
    assert (dispute["parties"], dispute["tier"], dispute["deciders"]) == (
        sorted({LEICESTER, "ukhsa"}), 0, {"bodies": ["ukhsa"], "roles": ["ig-lead"], "party": "publisher"})


def test_opa_refusing_is_403_with_its_reason_and_opa_down_is_503() -> None:
    refused = make_api(catalog(), engine=FakeAuthz(lambda _: False))
    response = refused.client.post("/disputes", json=REFUSAL, headers=DPH)
    assert response.status_code == 403 and "the fake policy says no" in response.json()["error"]
    down = make_api(catalog(), engine=FakeAuthz(down=True)).client.get("/disputes")
    assert down.status_code == 503
    assert refused.log.events == []


def test_health_needs_no_token(api: Api) -> None:
    assert api.client.get("/health", headers=NO_TOKEN).status_code == 200


@pytest.mark.parametrize("body", [b"{not json", b"\xff\xfe", b"[]", b'{"kind": 7}'])
def test_no_token_is_401_before_the_body_is_read(body: bytes) -> None:
    engine = FakeAuthz()
    api = make_api(catalog(), engine=engine)
    response = api.client.post("/disputes", content=body, headers=NO_TOKEN | {"Content-Type": "application/json"})
    assert response.status_code == 401, response.text
    assert response.json()["error"].startswith("not authenticated")  # the service's own error shape
    assert engine.asked == [] and api.log.events == []


def test_no_token_is_401_for_paths_that_do_not_exist_and_the_openapi_is_public(api: Api) -> None:
    for path in ("/nowhere", "/disputes/x/y/z", "/health/", "//health"):
        assert api.client.get(path, headers=NO_TOKEN).status_code == 401, path
    assert api.client.get("/nowhere", headers=SERVICE).status_code == 404
    assert api.client.get("/openapi.json", headers=NO_TOKEN).status_code == 200
    assert api.client.head("/health", headers=NO_TOKEN).status_code in (200, 405)


def test_without_the_authentication_middleware_every_guarded_route_is_refused() -> None:
    from fastapi import FastAPI

    from broker.api.auth import authorise

    app = FastAPI(dependencies=[authorise(guard(), "governance")])

    @app.get("/anything")
    def anything() -> dict[str, str]:
        return {"leaked": "yes"}

    assert TestClient(app).get("/anything", headers=SERVICE).status_code == 401


def test_the_write_routes_all_need_an_actor(api: Api) -> None:
    ident = api.raise_refusal()["id"]
    writes = [("/disputes/{}/comments", {"text": "hi"}), ("/disputes/{}/decision", GRANTED),
              ("/disputes/{}/approvals", GRANTED), ("/disputes/{}/appeal", {"reason": "no"}),
              ("/emergency", {"level": "emergency", "reason": "r"}), ("/emergency/lift", {"reason": "r"}),
              ("/break-glass", {"stream": T1, "purpose": "health-protection", "justification": "j"})]
    statuses = {path: api.client.post(path.format(ident), json=body, headers=NO_TOKEN).status_code
                for path, body in writes}
    statuses["/webhooks"] = api.client.put("/webhooks", json={"url": None}, headers=NO_TOKEN).status_code
    assert set(statuses.values()) == {401}, statuses


def test_a_role_the_body_does_not_hold_is_403(api: Api) -> None:
    response = api.client.post("/disputes", json=REFUSAL, headers=acting(LEICESTER, "arbiter"))
    assert response.status_code == 403
    assert response.json() == {"error": f"{LEICESTER} has no role 'arbiter'"}


def test_a_body_that_is_not_a_decider_of_the_tier_is_403(api: Api) -> None:
    ident = api.raise_refusal()["id"]
    response = api.client.post(f"/disputes/{ident}/decision", json=GRANTED, headers=board("nhse"))
    assert response.status_code == 403
    assert "is not one of its deciders" in response.json()["error"]
    assert api.governance.dispute(ident).state == "awaiting"


def test_appeal_moves_to_the_board_where_a_party_may_not_decide(api: Api) -> None:
    ident = api.decided_at_tier_1()
    assert api.client.get(f"/disputes/{ident}").json()["state"] == "enforced"
    appealed = api.client.post(f"/disputes/{ident}/appeal", json={"reason": "Names are needed to trace contacts."},
                               headers=DPH)
    assert appealed.status_code == 200
    assert (appealed.json()["state"], appealed.json()["tier"]) == ("awaiting", 1)
    # UKHSA sits on the board but published the stream in dispute.
    party = api.client.post(f"/disputes/{ident}/decision", json=GRANTED, headers=board("ukhsa"))
    assert party.status_code == 403
    assert party.json() == {"error": f"ukhsa is a party to dispute {ident} and cannot decide it"}


def test_two_of_the_board_decide_and_the_response_says_when(api: Api) -> None:
    ident = api.decided_at_tier_1()
    api.client.post(f"/disputes/{ident}/appeal", json={"reason": "Names are needed."}, headers=DPH)
    first = api.client.post(f"/disputes/{ident}/approvals", json=GRANTED, headers=board("nhse"))
    assert first.status_code == 200
    assert first.json()["decided"] is False
    assert first.json()["dispute"]["state"] == "awaiting"
    assert len(first.json()["dispute"]["approvals"]) == 1
    second = api.client.post(f"/disputes/{ident}/decision", json=GRANTED, headers=board("dhsc"))
    assert second.json()["decided"] is True
    assert second.json()["dispute"]["state"] == "enforced"
    assert second.json()["dispute"]["decision"]["outcome"] == "granted"
    assert [key for key, _ in api.control.writes("grant/")] == [f"grant/dispute-{ident}"]


def test_bad_moves_are_409(api: Api) -> None:
    ident = api.raise_refusal()["id"]
    no_reason = api.client.post(f"/disputes/{ident}/decision", json={"outcome": "granted", "reason": " "},
                                headers=UKHSA_IG)
    assert no_reason.status_code == 409
    assert no_reason.json() == {"error": "a decision needs a written reason"}
    api.client.post(f"/disputes/{ident}/decision", json=GRANTED, headers=UKHSA_IG)
    api.clock.advance(dt.timedelta(days=15))   # past the appeal window
    api.governance.tick()
    assert api.client.get(f"/disputes/{ident}").json()["state"] == "closed"
    again = api.client.post(f"/disputes/{ident}/decision", json=GRANTED, headers=UKHSA_IG)
    assert again.status_code == 409
    assert again.json() == {"error": f"dispute {ident} is closed; only a dispute awaiting a decision is decided"}


def test_an_unknown_dispute_is_404(api: Api) -> None:
    assert api.client.get("/disputes/d-nope").status_code == 404
    for path, body in [("decision", GRANTED), ("approvals", GRANTED), ("comments", {"text": "hello"}),
                       ("appeal", {"reason": "why"})]:
        response = api.client.post(f"/disputes/d-nope/{path}", json=body, headers=DPH)
        assert response.status_code == 404, path
        assert response.json()["error"].startswith("no dispute 'd-nope'")


@pytest.mark.parametrize(("body", "problem"), [
    ({**REFUSAL, "colour": "red"}, "body.colour: Extra inputs are not permitted"),
    ({key: value for key, value in REFUSAL.items() if key != "justification"}, "body.justification: Field required"),
    ({**REFUSAL, "until": "2026-04-01T00:00:00"}, "body.until: Input should have timezone info"),
    ({**REFUSAL, "fields": "name"}, "body.fields: Input should be a valid list"),
])
def test_a_malformed_body_is_422_naming_the_field(api: Api, body: dict[str, Any], problem: str) -> None:
    response = api.client.post("/disputes", json=body, headers=DPH)
    assert response.status_code == 422
    assert response.json() == {"error": problem}
    assert api.log.events == []


def test_list_filters_and_leaves_out_timelines(api: Api) -> None:
    leicester = api.raise_refusal()["id"]
    api.clock.advance(dt.timedelta(hours=1))
    manchester = api.raise_refusal(acting(MANCHESTER, "dph"), urgency="routine")["id"]
    api.client.post(f"/disputes/{leicester}/decision", json=GRANTED, headers=UKHSA_IG)

    def ids(**params: str) -> list[str]:
        response = api.client.get("/disputes", params=params)
        assert response.status_code == 200, response.text
        return [d["id"] for d in response.json()["disputes"]]

    everything = api.client.get("/disputes").json()["disputes"]
    assert [d["id"] for d in everything] == [leicester, manchester]
    assert all("timeline" not in d for d in everything)
    assert ids(state="awaiting") == [manchester]
    assert ids(state="enforced") == [leicester]
    assert ids(body=LEICESTER) == [leicester]
    assert ids(body="ukhsa") == [leicester, manchester]
    assert ids(stream="some.other-stream") == []
    deadline = api.governance.dispute(manchester).deadline
    assert deadline is not None
    assert ids(deadline_before=(deadline + dt.timedelta(seconds=1)).isoformat()) == [manchester]
    assert ids(deadline_before=deadline.isoformat()) == []


def test_parties_comment_and_others_may_not(api: Api) -> None:
    ident = api.raise_refusal()["id"]
    response = api.client.post(f"/disputes/{ident}/comments", json={"text": "Evidence attached."}, headers=DPH)
    assert response.status_code == 200
    assert response.json()["timeline"][-1]["data"] == {"text": "Evidence attached."}
    stranger = api.client.post(f"/disputes/{ident}/comments", json={"text": "Me too."},
                               headers=acting(MANCHESTER, "dph"))
    assert stranger.status_code == 403


def test_declare_and_lift_an_emergency(api: Api) -> None:
    assert api.client.get("/emergency").json() == {"levels": {}}
    refused = api.client.post("/emergency", json={"level": "emergency", "reason": "surge"}, headers=DPH)
    assert refused.status_code == 403
    declared = api.client.post("/emergency", json={"scope": "E12000004", "level": "emergency", "reason": "surge"},
                               headers=board("dhsc"))
    assert declared.json() == {"scope": "E12000004", "level": "emergency"}
    levels = api.client.get("/emergency").json()["levels"]
    assert levels["E12000004"]["level"] == "emergency" and levels["E12000004"]["reason"] == "surge"
    assert api.control.writes("emergency/")[-1][1] is not None
    bad = api.client.post("/emergency", json={"level": "extreme", "reason": "r"}, headers=board("dhsc"))
    assert bad.status_code == 409
    lifted = api.client.post("/emergency/lift", json={"scope": "E12000004", "reason": "over"}, headers=board("ukhsa"))
    assert lifted.json() == {"scope": "E12000004", "level": "normal"}
    assert api.client.get("/emergency").json() == {"levels": {}}
    assert api.control.writes("emergency/")[-1] == ("emergency/E12000004", None)


def test_break_glass_needs_a_declared_emergency_then_opens_a_review(api: Api) -> None:
    glass = {"stream": T1, "purpose": "health-protection", "justification": "Outbreak in a care home tonight."}
    assert api.client.post("/break-glass", json=glass, headers=DPH).status_code == 403
    api.client.post("/emergency", json={"level": "emergency", "reason": "surge"}, headers=board("dhsc"))
    response = api.client.post("/break-glass", json=glass, headers=DPH)
    assert response.status_code == 201
    review = response.json()
    assert (review["kind"], review["state"], review["subscriber"]) == ("break-glass-review", "awaiting", LEICESTER)
    assert [key for key, _ in api.control.writes("grant/")] == [f"grant/break-glass-{review['id']}"]


def test_a_second_break_glass_while_the_first_is_under_review_is_409(api: Api) -> None:
    glass = {"stream": T1, "purpose": "health-protection", "justification": "Outbreak in a care home tonight."}
    api.client.post("/emergency", json={"level": "emergency", "reason": "surge"}, headers=board("dhsc"))
    first = api.client.post("/break-glass", json=glass, headers=DPH).json()
    second = api.client.post("/break-glass", json=glass, headers=DPH)
    assert second.status_code == 409
    assert second.json()["error"].startswith(f"{LEICESTER} already broke glass on {T1}: its review {first['id']} "
                                             "is awaiting at tier 1")
    assert [key for key, _ in api.control.writes("grant/")] == [f"grant/break-glass-{first['id']}"]


def test_webhooks_are_registered_for_the_acting_body_and_deliveries_filtered(api: Api) -> None:
    response = api.client.put("/webhooks", json={"url": "https://ukhsa.test/hook"}, headers=UKHSA_IG)
    answer = response.json()
    assert (answer["body"], answer["url"], answer["signature"]["header"]) == (
        "ukhsa", "https://ukhsa.test/hook", "X-Accord-Signature")
    registration = api.governance.state.registrations["ukhsa"]
    assert answer["secret"] == signing_secret(MASTER, "ukhsa", registration)
    assert api.governance.state.webhooks == {"ukhsa": "https://ukhsa.test/hook"}
    again = api.client.put("/webhooks", json={"url": "https://ukhsa.test/hook"}, headers=UKHSA_IG).json()
    assert again["secret"] != answer["secret"]          # registering again rotates the secret
    assert api.client.put("/webhooks", json={"url": "ftp://ukhsa.test"}, headers=UKHSA_IG).status_code == 409
    for internal in ("http://127.0.0.1:9000/hook", "http://[::1]/hook", "http://169.254.169.254/latest",
                     "https://intranet.test/hook"):
        refused = api.client.put("/webhooks", json={"url": internal}, headers=UKHSA_IG)
        assert refused.status_code == 409 and "private or internal" in refused.json()["error"], internal
    assert api.governance.state.webhooks == {"ukhsa": "https://ukhsa.test/hook"}
    assert api.client.put("/webhooks", json={}, headers=UKHSA_IG).status_code == 422
    removed = api.client.put("/webhooks", json={"url": None}, headers=UKHSA_IG).json()
    assert removed["secret"] is None and api.governance.state.webhooks == {}
    api.deliveries.extend([delivery("ukhsa"), delivery(LEICESTER, "gave-up")])
    everyone = api.client.get("/webhooks/deliveries").json()["deliveries"]
    assert [d["body"] for d in everyone] == ["ukhsa", LEICESTER]
    mine = api.client.get("/webhooks/deliveries", params={"body": LEICESTER}).json()["deliveries"]
    assert mine == [{**everyone[1], "outcome": "gave-up"}]


def test_no_catalog_applied_is_503() -> None:
    response = make_api(None).client.post("/disputes", json=REFUSAL, headers=DPH)
    assert response.status_code == 503
    assert "no catalog has been applied" in response.json()["error"]


def test_a_misrouted_row_is_reported_and_its_deletion_confirmed_over_http() -> None:
    doc = catalog()
    doc["agreements"]["t1-leicester"] = {**doc["agreements"]["t1-manchester"], "subscriber": LEICESTER}
    api = make_api(doc)
    report = {"stream": T1, "recipient": MANCHESTER, "belongs_to": "E06000016",
              "source": {"topic": f"ingest.{T1}", "partition": 0, "offset": 7},
              "reason": "the resident lives in Leicester; tested in Manchester"}

    assert api.client.post("/misroutes", json=report, headers=NO_TOKEN).status_code == 401
    bad = api.client.post("/misroutes", json={**report, "source": {"topic": "t", "partition": -1, "offset": 0}},
                          headers=UKHSA_IG)
    assert bad.status_code == 422 and "body.source.partition" in bad.json()["error"]
    created = api.client.post("/misroutes", json=report, headers=UKHSA_IG)
    assert created.status_code == 201, created.text
    ident = created.json()["id"]
    assert created.json()["rightful"] == [LEICESTER] and created.json()["state"] == "awaiting-deletion"

    not_recipient = api.client.post(f"/misroutes/{ident}/deletion", json={"statement": "gone"}, headers=DPH)
    assert not_recipient.status_code == 403
    confirmed = api.client.post(f"/misroutes/{ident}/deletion", json={"statement": "deleted from the case list"},
                                headers=acting(MANCHESTER, "dph"))
    assert confirmed.status_code == 200 and confirmed.json()["state"] == "deleted"
    assert [m["id"] for m in api.client.get("/misroutes", params={"body": LEICESTER}).json()["misroutes"]] == [ident]
    assert api.client.get("/misroutes/m-none").status_code == 404
    assert api.client.post("/misroutes/m-none/deletion", json={"statement": "x"},
                           headers=acting(MANCHESTER, "dph")).status_code == 404
