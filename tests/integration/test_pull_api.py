"""The pull API and its live events on the real Kafka, OPA, registry and gate, served by uvicorn on loopback and read
as the API's own Kafka user (its real ACLs): each caller receives its own view only, resumes from a cursor without
gaps or repeats, and is refused with a reason once its right has ended."""

from __future__ import annotations

import csv
import datetime as dt
import io
import json
import socket
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from typing import Any

import httpx
import pytest
import uvicorn

from broker.adapters.kafka_access import KafkaAccess
from broker.adapters.kafka_fences import KafkaFenceAdmin
from broker.api.app import create_api_app
from broker.api.auth import Guard
from broker.api.deliveries import NEXT_CURSOR, LiveOptions
from broker.config import Settings
from broker.demo.synthetic import positive_tests
from broker.domain.fences import delivery_access
from broker.domain.json_avro import to_json
from broker.domain.kafka_acls import SERVICE_USERS
from broker.domain.topics import delivery_topic
from broker.local.stack import Endpoints
from broker.runtime.api import open_deliveries, open_ingest
from broker.runtime.gate import GateThread
from broker.security.api_tokens import verifier_for
from broker.services import policy_changes
from tests.conftest import TEST_OPERATOR, bearer, control_state, control_writer, opa_as
from tests.integration.gate_support import T1, publish, specimen_day, start_gate

LEICESTER, NOTTINGHAM, BLABY = "leicester-city-council", "nottingham-city-council", "blaby-district-council"
PATIENCE_S = 60.0  # how long to wait for the gate to deliver before the test fails (a bound, not a measurement)
Pull = Callable[..., httpx.Response]


@pytest.fixture(scope="module")
def gate(services: Endpoints, applied_catalog: dict[str, Any]) -> Iterator[GateThread]:
    runner = start_gate(services, "test-pull", "pull-worker")
    yield runner
    runner.stop()
    assert runner.failure is None, runner.failure


@pytest.fixture(scope="module")
def api(services: Endpoints, applied_catalog: dict[str, Any],
        kafka_as: Callable[[str], KafkaAccess]) -> Iterator[str]:
    """The API app on a loopback port, reading deliveries as `accord.api`; its base URL."""
    settings = Settings()
    guard = Guard(verifier_for(settings.secrets_dir).verify, opa_as(services.opa_url, "reader"))
    with open_ingest(services.kafka, services.registry_url, settings) as (ingest, _), \
            open_deliveries(kafka_as(SERVICE_USERS["api"]), services.registry_url, settings) as deliveries:
        app = create_api_app(ingest, lambda stream, limit: [], guard=guard, deliveries=deliveries,
                             live=LiveOptions(max_streams=4, batch=100, heartbeat_s=0.5, retry_ms=100))
        sock = socket.socket()
        sock.bind(("127.0.0.1", 0))
        server = uvicorn.Server(uvicorn.Config(app, log_level="warning", timeout_graceful_shutdown=1))
        thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
        thread.start()
        while not server.started and thread.is_alive():
            time.sleep(0.05)
        yield f"http://127.0.0.1:{sock.getsockname()[1]}"
        server.should_exit = True
        thread.join()


@pytest.fixture
def pull(api: str) -> Iterator[Pull]:
    with httpx.Client(base_url=api, timeout=30) as client:
        def get(body: str, role: str, after: str | None = None, accept: str = "*/*", **params: Any) -> httpx.Response:
            query = {**params, **({"after": after} if after else {})}
            return client.get(f"/deliveries/{T1}", params=query, headers={**bearer(body, role), "Accept": accept})
        yield get


def _lines(response: httpx.Response) -> list[dict[str, Any]]:
    assert response.status_code == 200, response.text
    return [json.loads(line) for line in response.text.splitlines()]


def _end(pull: Pull, body: str, role: str) -> str:
    """A cursor at the end of what the caller has been sent so far (records of earlier tests skipped)."""
    cursor = None
    while True:
        response = pull(body, role, cursor, limit=10_000)
        cursor = response.headers[NEXT_CURSOR]
        if not _lines(response):
            return cursor


def _collect(pull: Pull, body: str, role: str, cursor: str, want: int, limit: int = 2
             ) -> tuple[list[dict[str, Any]], str]:
    """Pages of at most `limit` records after `cursor` until `want` records have come; then the cursor after them."""
    found: list[dict[str, Any]] = []
    deadline = time.monotonic() + PATIENCE_S
    while len(found) < want and time.monotonic() < deadline:
        response = pull(body, role, cursor, limit=limit)
        page = _lines(response)
        assert len(page) <= limit
        found += page
        cursor = response.headers[NEXT_CURSOR]
        if not page:
            time.sleep(0.2)  # the gate has not delivered the rest yet
    return found, cursor


def test_leicester_pulls_its_own_rows_and_fields_as_ndjson_and_csv_with_a_cursor(
        services: Endpoints, gate: GateThread, pull: Pull) -> None:
    prefix = f"P{uuid.uuid4().hex[:6].upper()}"
    start = {role: _end(pull, LEICESTER, role) for role in ("dph", "analyst")}
    cases = positive_tests(specimen_day(), {"leicester": 4, "nottingham": 3, "blaby": 2}, prefix=prefix)
    publish(services, T1, cases)
    ours = {c["specimen_id"]: c for c in cases if "-LEICESTER-" in c["specimen_id"]}

    rows, after = _collect(pull, LEICESTER, "dph", start["dph"], want=4)
    # Only Leicester's rows, each once, with the DPH tier's fields (every field of the case).
    assert sorted(r["specimen_id"] for r in rows) == sorted(ours)
    for row in rows:
        case = ours[row["specimen_id"]]
        assert row == to_json(case)
    assert _lines(pull(LEICESTER, "dph", after)) == []  # nothing more: no other area's row follows

    table = pull(LEICESTER, "dph", start["dph"], accept="text/csv", limit=100)
    assert table.headers["content-type"].startswith("text/csv")
    parsed = list(csv.DictReader(io.StringIO(table.text)))
    assert set(parsed[0]) == set(rows[0]) and sorted(r["specimen_id"] for r in parsed) == sorted(ours)
    assert table.headers[NEXT_CURSOR] == after  # the same place, whichever format read it

    minimised, _ = _collect(pull, LEICESTER, "analyst", start["analyst"], want=4)
    assert len(minimised) == 4
    assert all(set(r) == {"lsoa", "age_band", "sex"} for r in minimised)
    assert sorted(r["lsoa"] for r in minimised) == sorted(c["lsoa"] for c in ours.values())


def test_a_cursor_not_issued_for_the_caller_is_400(gate: GateThread, pull: Pull) -> None:
    theirs = pull(NOTTINGHAM, "dph", limit=1).headers[NEXT_CURSOR]
    for cursor in (theirs, "forged", theirs[:-2] + ("AA" if not theirs.endswith("AA") else "BB")):
        response = pull(LEICESTER, "dph", cursor)
        assert response.status_code == 400, response.text
        assert response.json()["error"].startswith("bad cursor")


def test_an_ended_right_is_refused_with_its_reason(services: Endpoints, gate: GateThread, pull: Pull) -> None:
    expired = pull(BLABY, "environmental-health")
    assert expired.status_code == 403, _why_open(services, delivery_topic(BLABY, "environmental-health", T1))
    assert "t1-test-blaby-expired expired at 2020-12-31T00:00:00Z" in expired.json()["error"]
    writer = control_writer(services.kafka)
    try:
        policy_changes.revoke(writer, "t1-leicester", reason="test: DSA withdrawn", by=TEST_OPERATOR)
        revoked = pull(LEICESTER, "dph")
        assert revoked.status_code == 403 and "t1-leicester was revoked at" in revoked.json()["error"]
    finally:
        policy_changes.reinstate(writer, "t1-leicester", by=TEST_OPERATOR)
        writer.close()
    assert pull(LEICESTER, "dph", limit=1).status_code == 200


def _why_open(services: Endpoints, topic: str) -> str:
    """What the control topic says keeps `topic` open (a right left behind by an earlier test, say)."""
    state = control_state(services.kafka)
    grants = {k: (g.get("subscriber"), g.get("valid_until")) for k, g in state.grants.items()}
    return f"{delivery_access(state, topic, dt.datetime.now(dt.UTC)).reason}; grants: {grants}"


def _leicester(services: Endpoints, count: int, prefix: str) -> list[str]:
    cases = positive_tests(specimen_day(), {"leicester": count, "nottingham": 1}, prefix=prefix)
    publish(services, T1, cases)
    return sorted(c["specimen_id"] for c in cases if "-LEICESTER-" in c["specimen_id"])


def test_a_fenced_topic_is_refused_by_kafka_even_to_the_api(
        services: Endpoints, gate: GateThread, pull: Pull, kafka_as: Callable[[str], KafkaAccess]) -> None:
    # The control state still says open: the refusal comes from the fence's DENY binding on Kafka (User:*).
    topic = delivery_topic(LEICESTER, "analyst", T1)
    if not _lines(pull(LEICESTER, "analyst", limit=1)):  # a read is refused only where there is a record to fetch
        start = _end(pull, LEICESTER, "analyst")
        _leicester(services, 1, f"F{uuid.uuid4().hex[:6].upper()}")
        assert len(_collect(pull, LEICESTER, "analyst", start, want=1)[0]) == 1
    admin = KafkaFenceAdmin(kafka_as(SERVICE_USERS["fences"]))
    try:
        admin.fence(topic)
        refused = pull(LEICESTER, "analyst", limit=1)
        assert refused.status_code == 403, refused.text
        assert "Kafka refuses this delivery topic's readers" in refused.json()["error"]
    finally:
        admin.unfence(topic)
        admin.close()


class Events:
    """An EventSource-style reader over httpx streaming: events as (id, data), and whether a heartbeat came."""

    def __init__(self, response: httpx.Response) -> None:
        assert response.status_code == 200, response.read()
        assert response.headers["content-type"].startswith("text/event-stream")
        self._lines = response.iter_lines()

    def next(self) -> tuple[str, dict[str, Any]] | None:
        """The next event, or None for a heartbeat (the stream has caught up)."""
        ident = ""
        for line in self._lines:
            if line.startswith(":"):
                return None
            if line.startswith("id: "):
                ident = line[4:]
            elif line.startswith("data: "):
                return ident, json.loads(line[6:])
        raise AssertionError("the event stream ended")

    def records(self, want: int) -> list[tuple[str, dict[str, Any]]]:
        found: list[tuple[str, dict[str, Any]]] = []
        while len(found) < want:
            event = self.next()
            if event is not None:
                found.append(event)
        return found

    def caught_up(self) -> list[tuple[str, dict[str, Any]]]:
        """Events until the next heartbeat: what the stream still had to send."""
        found = []
        while (event := self.next()) is not None:
            found.append(event)
        return found


def test_live_events_carry_new_records_and_resume_after_last_event_id(
        services: Endpoints, gate: GateThread, api: str) -> None:
    headers = bearer(LEICESTER, "dph")
    prefix = f"E{uuid.uuid4().hex[:6].upper()}"
    with httpx.Client(base_url=api, timeout=httpx.Timeout(30, read=PATIENCE_S)) as client:
        with client.stream("GET", f"/deliveries/{T1}/events", headers=headers) as response:
            events = Events(response)
            assert events.caught_up() == []  # from now on: nothing delivered before the connection
            first = _leicester(services, 3, prefix)
            received = events.records(3)
        assert sorted(d["specimen_id"] for _, d in received) == first

        # Disconnected after the second event: the third, and what came while away, follow exactly once.
        later = _leicester(services, 2, prefix)
        resume = {**headers, "Last-Event-ID": received[1][0]}
        with client.stream("GET", f"/deliveries/{T1}/events", headers=resume) as response:
            events = Events(response)
            again = events.records(3) + events.caught_up()
    assert sorted(d["specimen_id"] for _, d in again) == sorted([received[2][1]["specimen_id"], *later])
    assert again[0] == received[2]  # the same event, with the same id
