"""Who reads a dispute in full over the governance API (the service's own line, behind OPA's): its parties, the
deciders of every tier and auditors; any other member sees only the outcome, and is refused the dispute itself."""

from __future__ import annotations

from typing import Any

import pytest

from broker.domain.adjudication import Decision
from broker.domain.ladder import Actor
from tests.unit.auth_fakes import bearer
from tests.unit.governance_catalog import LEICESTER, MANCHESTER, catalog
from tests.unit.test_governance_api import REFUSAL, Api, make_api

OUTCOME_KEYS = {"id", "stream", "state", "outcome", "raised_at", "decided_at", "summary"}


@pytest.fixture
def api() -> Api:
    doc = catalog()
    auditor = dict(doc["bodies"]["ukhsa"], name="Office of the National Data Guardian", roles=["auditor"])
    doc["bodies"]["ndg"] = auditor
    return make_api(doc)


def _raised(api: Api) -> str:
    return str(api.raise_refusal(justification="A named outbreak in a Leicester care home needs the line list.")["id"])


def _listed(api: Api, headers: dict[str, str]) -> dict[str, Any]:
    response = api.client.get("/disputes", headers=headers)
    assert response.status_code == 200, response.text
    [listed] = response.json()["disputes"]
    return dict(listed)


@pytest.mark.parametrize(("body", "role"), [
    (LEICESTER, "dph"), (LEICESTER, "analyst"),         # the raising body, whichever of its roles reads
    ("ukhsa", "ig-lead"),                               # the publisher
    ("nhse", "governance-board"), ("accord-arbiter", "arbiter"),   # deciders of later tiers
    ("ndg", "auditor"), ("accord", "service"),
])
def test_parties_deciders_and_auditors_read_the_dispute_in_full(api: Api, body: str, role: str) -> None:
    ident = _raised(api)
    headers = bearer(body, role)
    assert _listed(api, headers)["justification"].startswith("A named outbreak")
    response = api.client.get(f"/disputes/{ident}", headers=headers)
    assert response.status_code == 200 and response.json()["purpose"] == REFUSAL["purpose"]


@pytest.mark.parametrize(("body", "role"), [(MANCHESTER, "dph"), ("nhse", "ig-lead")])
def test_any_other_member_sees_only_the_outcome(api: Api, body: str, role: str) -> None:
    ident = _raised(api)
    api.governance.decide(ident, Actor("ukhsa", "ig-lead", "jo"),
                          Decision(outcome="refused", reason="Names are not needed."))
    headers = bearer(body, role)
    listed = _listed(api, headers)
    assert set(listed) == OUTCOME_KEYS
    assert (listed["id"], listed["state"], listed["outcome"]) == (ident, "enforced", "refused")
    detail = api.client.get(f"/disputes/{ident}", headers=headers)
    assert detail.status_code == 403 and "outbreak" not in detail.text
    assert "read in full only by its parties" in detail.json()["error"]


def test_claiming_a_role_the_catalog_does_not_give_reads_nothing(api: Api) -> None:
    ident = _raised(api)
    pretender = bearer(MANCHESTER, "auditor")
    assert api.client.get("/disputes", headers=pretender).status_code == 403
    assert api.client.get(f"/disputes/{ident}", headers=pretender).status_code == 403
