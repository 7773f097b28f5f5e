"""`accord request create|list|show|approve|refuse` against the real governance API on in-memory topics."""

from __future__ import annotations

from typing import Any

import pytest
from fastapi.testclient import TestClient
from typer.testing import CliRunner

from broker.adapters.governance_http import GovernanceClient
from broker.api.governance_app import create_governance_app
from broker.cli import app
from broker.cli import governance as cli_governance
from broker.services.governance import Governance
from tests.unit.auth_fakes import guard, token
from tests.unit.governance_catalog import LEICESTERSHIRE, catalog
from tests.unit.governance_fakes import FakeClock, FakeControl, MemoryGovernanceLog
from tests.unit.notifier_fakes import RecordingNotifier


def run(*args: str, acting: str) -> Any:
    return CliRunner().invoke(app, [*args, "--token", acting])


@pytest.fixture
def governance(monkeypatch: pytest.MonkeyPatch) -> Governance:
    doc = catalog()
    doc["bodies"]["ukhsa"]["roles"] = ["caldicott-guardian", "governance-board", "ig-lead"]
    doc["templates"]["t1-positive-tests"]["approval"] = {
        "approvals": 2, "roles": ["caldicott-guardian", "ig-lead"], "one_of_each": ["caldicott-guardian", "ig-lead"]}
    control = FakeControl(doc)
    found = Governance(MemoryGovernanceLog(), control, control, FakeClock(), RecordingNotifier())
    api = create_governance_app(found, lambda: [], guard=guard())
    monkeypatch.delenv("ACCORD_TOKEN", raising=False)
    monkeypatch.setattr(cli_governance, "_client", lambda: GovernanceClient(client=TestClient(api)))
    return found


def test_create_approve_twice_then_show_and_list(governance: Governance) -> None:
    dph = token(LEICESTERSHIRE, "dph", "dph@leicestershire.test")
    made = run("request", "create", "t1-positive-tests", "--purpose", "health-protection", "--justification",
               "cluster in Charnwood", "--field", "lsoa", "--field", "specimen_date", "--duration", "P14D",
               "--backfill", "P28D", acting=dph)
    assert made.exit_code == 0, made.output
    [request] = governance.requests()
    assert made.stdout.startswith(f"made request {request.id}: awaiting at tier 1, deadline ")
    assert (request.fields, request.backfill, request.duration) == (("lsoa", "specimen_date"), "P28D", "P14D")

    ig_lead = token("ukhsa", "ig-lead", "ruth@ukhsa.test")
    assert run("request", "approve", request.id, "--reason", "made out", acting=ig_lead).stdout.strip() == \
        f"request {request.id}: awaiting"
    caldicott = token("ukhsa", "caldicott-guardian", "sam@ukhsa.test")
    assert run("request", "approve", request.id, "--reason", "proportionate", acting=caldicott).stdout.strip() == \
        f"request {request.id}: live"

    shown = run("request", "show", request.id, acting=dph).stdout.splitlines()
    assert shown[0] == f"request {request.id}: live (tier 1, level normal)"
    assert "  duration P14D; history wanted P28D" in shown
    assert [line.split()[1] for line in shown if line.startswith("    ")] == [
        "request-made", "request-reviewed", "request-reviewed", "request-approved", "request-enforced"]
    listed = run("request", "list", acting=dph).stdout.splitlines()
    assert listed[1].split()[:3] == [request.id, "live", "1"]


def test_a_refusal_by_the_requester_is_an_error_with_exit_1(governance: Governance) -> None:
    dph = token(LEICESTERSHIRE, "dph", "dph@leicestershire.test")
    assert run("request", "create", "t1-positive-tests", "--purpose", "health-protection", "--justification", "x",
               "--field", "lsoa", acting=dph).exit_code == 0
    [request] = governance.requests()
    refused = run("request", "refuse", request.id, "--reason", "no", acting=dph)
    assert refused.exit_code == 1
    assert refused.stderr.startswith(f"error: {LEICESTERSHIRE} made request {request.id}; the requesting body")
    bad = run("request", "create", "t1-positive-tests", "--purpose", "marketing", "--justification", "x",
              "--field", "lsoa", acting=token(LEICESTERSHIRE, "analyst", "a@leicestershire.test"))
    assert bad.exit_code == 1 and "is for purpose 'health-protection'" in bad.stderr
