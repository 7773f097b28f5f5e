"""The API guard against the real OPA and the shipped authz policy: who gets 401, 403 and 503, and why."""

from __future__ import annotations

import datetime as dt
from typing import Any, cast

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from fastapi.testclient import TestClient

from broker.api.app import create_api_app
from broker.api.auth import Guard
from broker.api.governance_app import create_governance_app
from broker.local.stack import Endpoints
from broker.security.api_tokens import TokenVerifier
from broker.services.governance import Governance
from broker.services.ingest import Ingest
from tests.conftest import opa_as
from tests.unit.auth_fakes import KEY, bearer, now, token
from tests.unit.governance_catalog import LEICESTER, T1, catalog
from tests.unit.governance_fakes import FakeClock, FakeControl, MemoryGovernanceLog
from tests.unit.notifier_fakes import RecordingNotifier

REFUSAL: dict[str, Any] = {
    "kind": "refusal", "stream": T1, "role": "dph", "purpose": "health-protection", "justification": "rising",
    "fields": ["lsoa"], "decision_id": "plan-refused", "urgency": "urgent"}
GRANTED = {"outcome": "granted", "reason": "made out"}


def _guard(opa_url: str) -> Guard:
    return Guard(TokenVerifier(KEY.public_key, dict, now).verify, opa_as(opa_url, "reader"))


@pytest.fixture
def governance_api(services: Endpoints, applied_catalog: dict[str, Any]) -> tuple[TestClient, FakeClock, Governance]:
    control, clock = FakeControl(catalog()), FakeClock()
    governance = Governance(MemoryGovernanceLog(), control, control, clock, RecordingNotifier())
    governance.start()
    app = create_governance_app(governance, list, guard=_guard(services.opa_url))
    return TestClient(app), clock, governance


def _raised(client: TestClient) -> str:
    response = client.post("/disputes", json=REFUSAL, headers=bearer(LEICESTER, "dph"))
    assert response.status_code == 201, response.text
    return str(response.json()["id"])


def test_no_token_is_401_with_a_challenge(governance_api: tuple[TestClient, FakeClock, Governance]) -> None:
    client, _, _ = governance_api
    response = client.get("/disputes")
    assert response.status_code == 401
    assert response.headers["www-authenticate"].startswith("Bearer")
    assert client.get("/health").status_code == 200


@pytest.mark.parametrize("bad", [
    token(LEICESTER, "dph", at=now() - dt.timedelta(hours=3)),
    token(LEICESTER, "dph")[:-4] + "AAAA",
    token(LEICESTER, "dph", key=Ed25519PrivateKey.generate()),
], ids=["expired", "tampered", "wrong-key"])
def test_a_bad_token_is_401(governance_api: tuple[TestClient, FakeClock, Governance], bad: str) -> None:
    client, _, _ = governance_api
    assert client.get("/disputes", headers={"Authorization": f"Bearer {bad}"}).status_code == 401


def test_a_subscriber_deciding_is_403(governance_api: tuple[TestClient, FakeClock, Governance]) -> None:
    client, _, _ = governance_api
    ident = _raised(client)
    outsider = bearer("nottingham-city-council", "dph")
    response = client.post(f"/disputes/{ident}/decision", json=GRANTED, headers=outsider)
    assert response.status_code == 403
    assert "is not one of its deciders" in response.json()["error"]


def test_a_decider_of_another_tier_is_403(governance_api: tuple[TestClient, FakeClock, Governance]) -> None:
    client, _, _ = governance_api
    ident = _raised(client)
    response = client.post(f"/disputes/{ident}/decision", json=GRANTED, headers=bearer("dhsc", "governance-board"))
    assert response.status_code == 403
    assert "tier 1" in response.json()["error"]


def test_a_party_never_decides_its_own_dispute(governance_api: tuple[TestClient, FakeClock, Governance]) -> None:
    client, clock, governance = governance_api
    ident = _raised(client)
    clock.advance(dt.timedelta(days=6))      # past the publisher's tier: the board decides now
    governance.tick()
    assert governance.dispute(ident).tier == 1
    response = client.post(f"/disputes/{ident}/decision", json=GRANTED, headers=bearer("ukhsa", "governance-board"))
    assert response.status_code == 403
    assert "is a party to dispute" in response.json()["error"]
    allowed = client.post(f"/disputes/{ident}/approvals", json=GRANTED, headers=bearer("dhsc", "governance-board"))
    assert allowed.status_code == 200, allowed.text


def test_a_publisher_publishing_another_bodys_stream_is_403(services: Endpoints,
                                                            applied_catalog: dict[str, Any]) -> None:
    # Refused before the route runs, so no ingest is needed behind it.
    app = create_api_app(cast(Ingest, None), lambda stream, limit: [], guard=_guard(services.opa_url))
    client = TestClient(app)
    response = client.post("/streams/nhse.hospital-sitrep/records", json={"records": []},
                           headers=bearer("ukhsa", "ig-lead"))
    assert response.status_code == 403
    assert "its own streams only" in response.json()["detail"]


def test_opa_down_is_503(governance_api: tuple[TestClient, FakeClock, Governance]) -> None:
    _, _, governance = governance_api
    app = create_governance_app(governance, list, guard=_guard("http://127.0.0.1:9"))
    response = TestClient(app).get("/disputes", headers=bearer(LEICESTER, "dph"))
    assert response.status_code == 503
