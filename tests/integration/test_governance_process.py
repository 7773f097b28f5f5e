"""The governance service as its own process on the real Kafka and OPA, called over HTTP with the session's tokens.

Webhooks: signed with the secret shown once at registration, refused for internal addresses the operator has not
allowed, and owed notifications survive a restart while the receiver is down: each arrives exactly once, under the
delivery id it was first queued with. Disputes: a council that is no party reads only the outcome of a police
force's request, never its purpose or justification.
"""

from __future__ import annotations

import contextlib
import uuid
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from broker.config import Settings
from broker.local.stack import Endpoints
from tests.conftest import bearer
from tests.integration.governance_process import GovernanceProcess, Receiver, wait_for

LEICESTER = "leicester-city-council"
POLICE = "leicestershire-police"
T1, T7 = "ukhsa.positive-tests", "ukhsa.isolation-notifications"


def _dph() -> dict[str, str]:
    # Issued when called: at import time the session's secrets directory is not chosen yet.
    return bearer(LEICESTER, "dph", "Director of Public Health")


@pytest.fixture
def governance(services: Endpoints, applied_catalog: dict[str, Any], local_settings: Settings,
               tmp_path: Path) -> Iterator[GovernanceProcess]:
    process = GovernanceProcess(services, local_settings, tmp_path / "governance")
    process.start()
    yield process
    process.stop()


def _call(process: GovernanceProcess, method: str, path: str, headers: dict[str, str], body: Any = None,
          params: dict[str, str] | None = None) -> httpx.Response:
    with httpx.Client(base_url=process.url, timeout=30.0, trust_env=False) as client:
        return client.request(method, path, json=body, headers=headers, params=params)


def _raise(process: GovernanceProcess, marker: str) -> str:
    request = {"kind": "restriction", "stream": T1, "role": "dph", "purpose": "health-protection",
               "fields": ["occupation"], "justification": f"Occupation finds workplace clusters ({marker})."}
    response = _call(process, "POST", "/disputes", _dph(), request)
    assert response.status_code == 201, response.text
    return str(response.json()["id"])


def _deliveries(process: GovernanceProcess, disputes: set[str]) -> dict[str, dict[str, Any]]:
    """Leicester's deliveries of these disputes' events, as the running process knows them, by delivery id."""
    events = set()
    for ident in disputes:
        found = _call(process, "GET", f"/disputes/{ident}", _dph())
        assert found.status_code == 200, found.text
        events |= {e["event_id"] for e in found.json()["timeline"]}
    response = _call(process, "GET", "/webhooks/deliveries", _dph(), params={"body": LEICESTER})
    assert response.status_code == 200, response.text
    return {d["delivery_id"]: d for d in response.json()["deliveries"] if d["event_id"] in events}


def _outcomes(process: GovernanceProcess, disputes: set[str]) -> set[str]:
    return {d["outcome"] for d in _deliveries(process, disputes).values()}


def test_owed_notifications_survive_a_restart_while_the_receiver_is_down_and_arrive_once_each_signed(
        governance: GovernanceProcess) -> None:
    receiver = Receiver()
    url = f"{receiver.up()}/{LEICESTER}"
    registered = _call(governance, "PUT", "/webhooks", _dph(), {"url": url})
    assert registered.status_code == 200, registered.text
    secret = registered.json()["secret"]
    try:
        marker = uuid.uuid4().hex[:8]
        before = {_raise(governance, marker)}
        wait_for(lambda: len(_mine(receiver.verified(secret), before)) == 2, "the first dispute's notifications")
        wait_for(lambda: _outcomes(governance, before) == {"delivered"}, "their ends to be recorded")
        first = set(_deliveries(governance, before))

        receiver.down()
        while_down = {_raise(governance, marker), _raise(governance, marker)}

        def retrying() -> bool:
            owed = _deliveries(governance, while_down).values()
            return len(owed) == 4 and {d["outcome"] for d in owed} == {"pending"} and \
                any(d["attempts"] >= 1 for d in owed)
        wait_for(retrying, "the second and third disputes' notifications to fail while the receiver is down")
        owed = set(_deliveries(governance, while_down))

        governance.stop()
        governance.start()          # the receiver is still down: the new process retries what the old one owed
        assert set(_deliveries(governance, before | while_down)) == owed
        assert _outcomes(governance, while_down) == {"pending"}

        receiver.up()
        wait_for(lambda: _outcomes(governance, while_down) == {"delivered"}, "the owed notifications")
        got = _mine(receiver.verified(secret), before | while_down)
        assert Counter((n["dispute"]["id"], n["type"]) for n in got) == Counter(
            {(ident, kind): 1 for ident in before | while_down for kind in ("raised", "tier-opened")})
        assert {n["_delivery"] for n in got} == first | owed
        assert all(n["event"]["data"]["justification"].endswith(f"({marker}).") for n in got
                   if n["type"] == "raised")

        governance.stop()
        governance.start()          # everything was delivered and recorded so: nothing is owed, nothing resent
        assert _deliveries(governance, before | while_down) == {}
    finally:
        receiver.down()
        with contextlib.suppress(httpx.HTTPError):
            _call(governance, "PUT", "/webhooks", _dph(), {"url": None})


def _mine(notifications: list[dict[str, Any]], disputes: set[str]) -> list[dict[str, Any]]:
    return [n for n in notifications if (n.get("dispute") or {}).get("id") in disputes]


def test_webhooks_to_internal_addresses_are_refused_unless_the_operator_allows_them(
        governance: GovernanceProcess) -> None:
    for url in ("http://127.0.0.2:8080/hook", "http://10.0.0.1/hook", "http://[::1]/hook",
                "http://169.254.169.254/latest/meta-data", "http://0.0.0.0:8080/hook"):
        refused = _call(governance, "PUT", "/webhooks", _dph(), {"url": url})
        assert refused.status_code == 409, (url, refused.text)
        assert "private or internal" in refused.json()["error"]
    allowed = _call(governance, "PUT", "/webhooks", _dph(), {"url": "http://127.0.0.1:9/hook"})   # 127.0.0.1/32
    assert allowed.status_code == 200 and allowed.json()["secret"].startswith("whsec_")
    assert _call(governance, "PUT", "/webhooks", _dph(), {"url": None}).json()["secret"] is None


def test_a_third_council_reads_only_the_outcome_of_a_police_request(governance: GovernanceProcess) -> None:
    police = bearer(POLICE, "investigations", "Detective Inspector")
    justification = f"Officers check breaches of self-isolation reported to us ({uuid.uuid4().hex[:8]})."
    raised = _call(governance, "POST", "/disputes", police, {
        "kind": "refusal", "stream": T7, "role": "investigations", "purpose": "law-enforcement",
        "fields": ["ctas_id", "postcode", "isolation_start", "isolation_end"], "justification": justification})
    assert raised.status_code == 201, raised.text
    ident = raised.json()["id"]

    nottingham = bearer("nottingham-city-council", "dph", "Director of Public Health")
    listed = _call(governance, "GET", "/disputes", nottingham, params={"stream": T7})
    assert listed.status_code == 200, listed.text
    [summary] = [d for d in listed.json()["disputes"] if d["id"] == ident]
    assert summary == {"id": ident, "stream": T7, "state": "awaiting", "outcome": None,
                       "raised_at": summary["raised_at"], "decided_at": None, "summary": True}
    assert justification not in listed.text and "law-enforcement" not in listed.text
    detail = _call(governance, "GET", f"/disputes/{ident}", nottingham)
    assert detail.status_code == 403 and justification not in detail.text
    assert "read in full only by its parties, its deciders and auditors" in detail.json()["error"]

    for reader in (police, bearer("ukhsa", "ig-lead"), bearer("dhsc", "governance-board"),
                   bearer("accord-arbiter", "arbiter")):
        full = _call(governance, "GET", f"/disputes/{ident}", reader)
        assert full.status_code == 200 and full.json()["justification"] == justification
