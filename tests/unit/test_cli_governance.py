"""`accord dispute|emergency|break-glass|webhook` against a stand-in governance API: who acts, what is sent, what
is printed."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from fastapi.testclient import TestClient
from typer.testing import CliRunner

from broker.adapters.governance_http import GovernanceClient
from broker.api.governance_app import create_governance_app
from broker.cli import app
from broker.cli import governance as cli_governance
from broker.services.governance import Governance
from tests.unit.auth_fakes import guard, token
from tests.unit.governance_catalog import LEICESTER, T1, catalog
from tests.unit.governance_fakes import FakeClock, FakeControl, MemoryGovernanceLog
from tests.unit.notifier_fakes import RecordingNotifier

DISPUTE: dict[str, Any] = {
    "id": "d-0000000001", "kind": "refusal", "state": "awaiting", "stream": "ukhsa.positive-tests",
    "publisher": "ukhsa", "subscriber": "leicester-city-council", "role": "dph", "purpose": "outbreak-control",
    "justification": "cluster in LE1", "urgency": "urgent", "tier": 1, "level": "enhanced",
    "deadline": "2020-06-26T09:00:00.000000Z", "approvals": [], "decision": None,
    "timeline": [
        {"type": "raised", "at": "2020-06-24T09:00:00.000000Z", "dispute": "d-0000000001",
         "actor": {"body": "leicester-city-council", "role": "dph", "person": "ivan"}, "data": {"kind": "refusal"}},
        {"type": "tier-opened", "at": "2020-06-25T09:00:00.000000Z", "dispute": "d-0000000001", "actor": None,
         "data": {"tier": 1, "level": "enhanced", "deadline": "2020-06-26T09:00:00.000000Z",
                  "why": "deadline passed"}},
    ],
}


class FakeApi:
    """Answers each (method, path) with a canned response and records the requests it was sent."""

    def __init__(self) -> None:
        self.answers: dict[tuple[str, str], httpx.Response] = {}
        self.requests: list[httpx.Request] = []

    def __call__(self, request: httpx.Request) -> httpx.Response:
        self.requests.append(request)
        return self.answers.get((request.method, request.url.path), httpx.Response(404, json={"error": "no route"}))

    def sent(self) -> Any:
        return json.loads(self.requests[-1].content)


@pytest.fixture
def api(monkeypatch: pytest.MonkeyPatch) -> Iterator[FakeApi]:
    fake = FakeApi()
    monkeypatch.delenv("ACCORD_TOKEN", raising=False)
    monkeypatch.setattr(cli_governance, "_client",
                        lambda: GovernanceClient(client=httpx.Client(transport=httpx.MockTransport(fake),
                                                                   base_url="http://governance.test")))
    yield fake


def run(*args: str, env: dict[str, str] | None = None) -> Any:
    return CliRunner().invoke(app, list(args), env=env)


def test_a_command_without_an_actor_says_how_to_give_one_and_sends_nothing(api: FakeApi) -> None:
    result = run("dispute", "list")
    assert result.exit_code == 1
    assert "error: say who is acting: --token TOKEN or --token @FILE (or set ACCORD_TOKEN)" in result.stderr
    assert api.requests == []


@pytest.mark.parametrize("given", ["two words", "tok\u00ebn", "@/nonexistent/token"])
def test_a_malformed_or_unreadable_token_is_refused(api: FakeApi, given: str) -> None:
    result = run("dispute", "list", "--token", given)
    assert result.exit_code == 1
    assert "not a token" in result.stderr or "cannot read the token file" in result.stderr
    assert api.requests == []


def test_a_token_file_is_read(api: FakeApi, tmp_path: Path) -> None:
    api.answers["GET", "/disputes"] = httpx.Response(200, json={"disputes": []})
    issued = token("ukhsa", "ig-lead", "jo")
    (tmp_path / "token").write_text(issued + "\n")
    assert run("dispute", "list", "--token", f"@{tmp_path / 'token'}").exit_code == 0
    assert api.requests[0].headers["Authorization"] == f"Bearer {issued}"


def test_the_token_from_the_environment_goes_in_the_authorization_header(api: FakeApi) -> None:
    api.answers["GET", "/disputes"] = httpx.Response(200, json={"disputes": [DISPUTE]})
    issued = token("ukhsa", "ig-lead", "jo:bloggs")
    result = run("dispute", "list", "--state", "awaiting", env={"ACCORD_TOKEN": issued})
    assert result.exit_code == 0, result.output
    request = api.requests[0]
    assert request.headers["Authorization"] == f"Bearer {issued}"
    assert dict(request.url.params) == {"state": "awaiting"}
    header, row = result.stdout.splitlines()
    assert header.split() == ["ID", "STATE", "TIER", "DEADLINE", "STREAM", "SUBSCRIBER"]
    assert row.split() == ["d-0000000001", "awaiting", "2", "2020-06-26T09:00:00.000000Z", "ukhsa.positive-tests",
                           "leicester-city-council"]


def test_a_dispute_listed_only_as_its_outcome_is_shown_with_what_there_is(api: FakeApi) -> None:
    summary = {"id": "d-0000000002", "stream": "ukhsa.isolation-notifications", "state": "closed",
               "outcome": "refused", "raised_at": "2020-06-20T09:00:00.000000Z", "decided_at": None, "summary": True}
    api.answers["GET", "/disputes"] = httpx.Response(200, json={"disputes": [summary]})
    result = run("dispute", "list", "--token", token("nottingham-city-council", "dph", "jo"))
    assert result.exit_code == 0, result.output
    assert result.stdout.splitlines()[1].split() == ["d-0000000002", "closed", "-", "-",
                                                     "ukhsa.isolation-notifications", "-"]


def test_an_api_error_is_printed_as_its_message_with_exit_1(api: FakeApi) -> None:
    api.answers["POST", "/disputes/d-1/decision"] = httpx.Response(
        403, json={"error": "leicester-city-council is a party to dispute d-1 and cannot decide it"})
    result = run("dispute", "decide", "d-1", "--outcome", "granted", "--reason", "fine",
                 "--token", token("leicester-city-council", "dph", "ivan"))
    assert result.exit_code == 1
    assert result.stderr.strip() == "error: leicester-city-council is a party to dispute d-1 and cannot decide it"


def test_an_unreachable_api_is_an_error_not_a_traceback(monkeypatch: pytest.MonkeyPatch) -> None:
    def refuse(request: httpx.Request) -> httpx.Response:
        raise httpx.ConnectError("connection refused", request=request)

    monkeypatch.setattr(cli_governance, "_client",
                        lambda: GovernanceClient(client=httpx.Client(transport=httpx.MockTransport(refuse),
                                                                   base_url="http://governance.test")))
    result = run("emergency", "status", "--token", token("dhsc", "governance-board", "sam"))
    assert result.exit_code == 1
    assert result.stderr.startswith("error: the governance API did not answer (connection refused)")


def test_raise_sends_the_request_and_prints_where_the_dispute_stands(api: FakeApi) -> None:
    api.answers["POST", "/disputes"] = httpx.Response(201, json=DISPUTE)
    result = run("dispute", "raise", "ukhsa.positive-tests", "--kind", "refusal", "--role", "dph",
                 "--purpose", "outbreak-control", "--justification", "cluster in LE1", "--field", "postcode",
                 "--field", "age", "--urgency", "urgent", "--token", token("leicester-city-council", "dph", "ivan"))
    assert result.exit_code == 0, result.output
    sent = api.sent()
    assert sent["fields"] == ["postcode", "age"] and sent["areas"] is None and sent["urgency"] == "urgent"
    assert result.stdout.strip() == (
        "raised dispute d-0000000001: awaiting at tier 2, deadline 2020-06-26T09:00:00.000000Z")


def test_show_prints_a_readable_timeline_and_json_on_request(api: FakeApi) -> None:
    api.answers["GET", "/disputes/d-0000000001"] = httpx.Response(200, json=DISPUTE)
    readable = run("dispute", "show", "d-0000000001", "--token", token("ukhsa", "ig-lead", "jo")).stdout.splitlines()
    assert readable[1] == "state awaiting, tier 2, level enhanced, deadline 2020-06-26T09:00:00.000000Z"
    raised, opened = readable[-2:]
    assert raised.split()[:3] == ["2020-06-24T09:00:00.000000Z", "raised", "leicester-city-council:dph:ivan"]
    assert opened.split() == ["2020-06-25T09:00:00.000000Z", "tier-opened", "-", "tier=2", "level=enhanced",
                              "deadline=2020-06-26T09:00:00.000000Z", "why=deadline", "passed"]
    raw = run("dispute", "show", "d-0000000001", "--json", "--token", token("ukhsa", "ig-lead", "jo")).stdout
    assert json.loads(raw) == DISPUTE


def test_an_approval_short_of_the_tier_says_it_is_not_decided_yet(api: FakeApi) -> None:
    pending = {**DISPUTE, "approvals": [{"outcome": "granted"}]}
    api.answers["POST", "/disputes/d-0000000001/approvals"] = httpx.Response(
        200, json={"decided": False, "dispute": pending})
    result = run("dispute", "approve", "d-0000000001", "--outcome", "granted-in-part", "--reason", "minimised",
                 "--field", "postcode", "--until", "2020-07-01T00:00:00Z",
                 "--token", token("nhse", "governance-board", "kim"))
    assert result.exit_code == 0, result.output
    assert api.sent() == {"outcome": "granted-in-part", "reason": "minimised", "fields": ["postcode"],
                          "areas": None, "until": "2020-07-01T00:00:00Z", "transforms": None}
    assert "not decided yet" in result.stdout and "(1 so far)" in result.stdout


def test_a_decision_grants_fields_transformed(api: FakeApi) -> None:
    api.answers["POST", "/disputes/d-0000000001/decision"] = httpx.Response(
        200, json={"decided": True, "dispute": {**DISPUTE, "decision": {"outcome": "granted"}}})
    result = run("dispute", "decide", "d-0000000001", "--outcome", "granted", "--reason", "ages only",
                 "--transform", "dob=age-band@specimen_date", "--transform", "name=mask:2",
                 "--transform", "nhs_number=pseudonymise", "--transform", "postcode=postcode-district",
                 "--token", token("ukhsa", "ig-lead", "jo"))
    assert result.exit_code == 0, result.output
    assert api.sent()["transforms"] == {
        "dob": {"transform": "generalise", "method": "age-band", "at": "specimen_date"},
        "name": {"transform": "mask", "keep_last": 2}, "nhs_number": {"transform": "pseudonymise"},
        "postcode": {"transform": "generalise", "method": "postcode-district"}}
    bad = run("dispute", "decide", "d-0000000001", "--outcome", "granted", "--reason", "r",
              "--transform", "dob=blur", "--token", token("ukhsa", "ig-lead", "jo"))
    assert bad.exit_code == 1 and "write FIELD=HOW" in bad.output


def test_emergency_declare_and_webhook_set_send_their_bodies(api: FakeApi) -> None:
    api.answers["POST", "/emergency"] = httpx.Response(200, json={"scope": "E12000004", "level": "emergency"})
    api.answers["PUT", "/webhooks"] = httpx.Response(200, json={
        "body": "ukhsa", "url": "https://ukhsa.test/hook", "secret": "whsec_0123",
        "signature": {"header": "X-Accord-Signature"}})
    declared = run("emergency", "declare", "emergency", "--scope", "E12000004", "--reason", "surge",
                   "--token", token("dhsc", "governance-board", "sam"))
    assert declared.stdout.strip() == "E12000004: level emergency"
    assert api.sent() == {"scope": "E12000004", "level": "emergency", "reason": "surge"}
    hooked = run("webhook", "set", "https://ukhsa.test/hook", "--token", token("ukhsa", "ig-lead", "jo"))
    assert hooked.stdout.splitlines() == [
        "webhook for ukhsa: https://ukhsa.test/hook",
        "signing secret (shown once; keep it secret, verify X-Accord-Signature with it): whsec_0123"]
    assert api.sent() == {"url": "https://ukhsa.test/hook"}


def test_raise_then_show_against_the_real_api(monkeypatch: pytest.MonkeyPatch) -> None:
    control = FakeControl(catalog())
    governance = Governance(MemoryGovernanceLog(), control, control, FakeClock(), RecordingNotifier())
    app = create_governance_app(governance, lambda: [], guard=guard())
    monkeypatch.setattr(cli_governance, "_client", lambda: GovernanceClient(client=TestClient(app)))
    monkeypatch.setenv("ACCORD_TOKEN", token(LEICESTER, "dph", "ivan"))
    raised = run("dispute", "raise", T1, "--kind", "refusal", "--role", "dph", "--purpose", "health-protection",
                 "--justification", "cases rising", "--field", "name")
    assert raised.exit_code == 0, raised.output
    [dispute] = governance.disputes()
    shown = run("dispute", "show", dispute.id).stdout.splitlines()
    assert shown[0] == (f"dispute {dispute.id} (refusal, routine): {T1} from ukhsa to {LEICESTER} as dph for "
                        "health-protection")
    assert [line.split()[1] for line in shown[-2:]] == ["raised", "tier-opened"]
    refused = run("dispute", "decide", dispute.id, "--outcome", "granted", "--reason", "mine")
    assert refused.exit_code == 1
    assert refused.stderr.startswith(f"error: dispute {dispute.id} is at tier 1 (publisher-ig); {LEICESTER} as dph")


def test_show_names_the_transforms_a_decision_grants(api: FakeApi) -> None:
    approved = {"type": "approved", "at": "2020-06-25T10:00:00.000000Z", "dispute": "d-0000000001",
                "actor": {"body": "dhsc", "role": "governance-board", "person": "kim"},
                "data": {"tier": 1, "outcome": "granted", "reason": "ages only", "transforms": {
                    "dob": {"transform": "generalise", "method": "age-band"}, "name": {"transform": "mask"}}}}
    api.answers["GET", "/disputes/d-0000000001"] = httpx.Response(
        200, json={**DISPUTE, "timeline": [*DISPUTE["timeline"], approved]})
    shown = run("dispute", "show", "d-0000000001", "--token", token("ukhsa", "ig-lead", "jo")).stdout.splitlines()
    assert "transforms=dob:generalise/age-band,name:mask" in shown[-1].split()
