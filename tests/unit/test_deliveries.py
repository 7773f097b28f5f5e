"""The pull API and its live events on in-memory fakes: the caller's own topic only, committed records only, signed
cursors that resume without gaps or repeats, NDJSON/CSV/JSON, and 400/403 answers that say why."""

from __future__ import annotations

import csv
import io
import json
from collections.abc import Iterator
from typing import Any

import pytest
from fastapi.testclient import TestClient

from broker.adapters.registry_memory import InMemorySchemaRegistry
from broker.api.app import create_api_app
from broker.api.deliveries import NEXT_CURSOR, LiveOptions
from broker.domain.cursors import CursorCodec
from broker.domain.fences import Access
from broker.domain.topics import delivery_topic, value_subject
from broker.errors import DeliveryRefused
from broker.services.deliveries import Deliveries
from broker.services.serde import AvroSerializer, SerializationContext
from tests.unit.auth_fakes import bearer, guard
from tests.unit.deliveries_fakes import MemoryDeliveryLog

T1 = "ukhsa.positive-tests"
LEICESTER, NOTTINGHAM = "leicester-city-council", "nottingham-city-council"
DPH = delivery_topic(LEICESTER, "dph", T1)
ANALYST = delivery_topic(LEICESTER, "analyst", T1)
OTHER = delivery_topic(NOTTINGHAM, "dph", T1)
SCHEMA = json.dumps({"type": "record", "name": "Projected", "namespace": "accord.test", "fields": [
    {"name": "specimen_id", "type": "string"}, {"name": "lsoa", "type": ["null", "string"], "default": None},
    {"name": "specimen_date", "type": {"type": "int", "logicalType": "date"}}]})


class World:
    def __init__(self) -> None:
        self.log, self.registry = MemoryDeliveryLog(), InMemorySchemaRegistry()
        self.closed: dict[str, str] = {}
        self.serializer = AvroSerializer(self.registry, SCHEMA)
        self.deliveries = Deliveries(self.log, self.registry, self.access, CursorCodec(b"s" * 32))

    def access(self, topic: str) -> Access:
        reason = self.closed.get(topic)
        return Access(reason is None, reason or "in force")

    def deliver(self, topic: str, ident: str, lsoa: str | None = "E01025588", committed: bool = True,
                partition: int = 0) -> None:
        import datetime as dt

        value = self.serializer({"specimen_id": ident, "lsoa": lsoa, "specimen_date": dt.date(2026, 12, 3)},
                                SerializationContext(topic))
        self.log.append(topic, value, partition, committed)


@pytest.fixture
def world() -> World:
    w = World()
    for n in range(5):
        w.deliver(DPH, f"L{n}")
    w.deliver(OTHER, "N0")
    return w


@pytest.fixture
def client(world: World) -> Iterator[TestClient]:
    app = create_api_app(None, lambda s, n: [], guard=guard(), deliveries=world.deliveries,  # type: ignore[arg-type]
                         live=LiveOptions(max_streams=2, batch=2, heartbeat_s=0.05, retry_ms=100))
    with TestClient(app) as c:
        yield c


def _ids(response: Any) -> list[str]:
    return [json.loads(line)["specimen_id"] for line in response.text.splitlines()]


def test_pages_follow_the_cursor_without_gaps_or_repeats(client: TestClient, world: World) -> None:
    headers = bearer(LEICESTER, "dph")
    first = client.get(f"/deliveries/{T1}?limit=3", headers=headers)
    assert first.status_code == 200 and first.headers["content-type"] == "application/x-ndjson"
    assert _ids(first) == ["L0", "L1", "L2"]
    second = client.get(f"/deliveries/{T1}", params={"after": first.headers[NEXT_CURSOR]}, headers=headers)
    assert _ids(second) == ["L3", "L4"]
    empty = client.get(f"/deliveries/{T1}", params={"after": second.headers[NEXT_CURSOR]}, headers=headers)
    assert empty.text == "" and empty.headers[NEXT_CURSOR] == second.headers[NEXT_CURSOR]
    world.deliver(DPH, "L5")
    assert _ids(client.get(f"/deliveries/{T1}", params={"after": empty.headers[NEXT_CURSOR]}, headers=headers)) == [
        "L5"]


def test_the_topic_is_the_callers_own_and_uncommitted_records_wait(client: TestClient, world: World) -> None:
    world.deliver(DPH, "open", committed=False)
    world.deliver(DPH, "after-open")
    assert _ids(client.get(f"/deliveries/{T1}", headers=bearer(LEICESTER, "dph"))) == [f"L{n}" for n in range(5)]
    assert _ids(client.get(f"/deliveries/{T1}", headers=bearer(NOTTINGHAM, "dph"))) == ["N0"]
    assert client.get(f"/deliveries/{T1}", headers=bearer(LEICESTER, "analyst")).text == ""  # nothing delivered yet
    world.log.commit(DPH)
    assert _ids(client.get(f"/deliveries/{T1}", headers=bearer(LEICESTER, "dph")))[-2:] == ["open", "after-open"]


def test_csv_and_json_carry_the_same_records_and_cursor(client: TestClient, world: World) -> None:
    headers = bearer(LEICESTER, "dph")
    world.deliver(DPH, "=HYPERLINK(\"x\")", lsoa=None)
    table = client.get(f"/deliveries/{T1}", headers={**headers, "Accept": "text/csv"})
    assert table.headers["content-type"].startswith("text/csv")
    rows = list(csv.reader(io.StringIO(table.text)))
    assert rows[0] == ["specimen_id", "lsoa", "specimen_date"]
    assert rows[1] == ["L0", "E01025588", "2026-12-03"]
    assert rows[-1] == ["'=HYPERLINK(\"x\")", "", "2026-12-03"]  # a formula is quoted, None is an empty cell
    doc = client.get(f"/deliveries/{T1}", headers={**headers, "Accept": "application/json"})
    assert doc.json()["next_cursor"] == doc.headers[NEXT_CURSOR] == table.headers[NEXT_CURSOR]
    assert [r["specimen_id"] for r in doc.json()["records"]] == [r[0] for r in rows[1:-1]] + ["=HYPERLINK(\"x\")"]


def test_an_empty_delivery_still_has_a_csv_header(client: TestClient, world: World) -> None:
    world.registry.register(value_subject(ANALYST), SCHEMA)
    table = client.get(f"/deliveries/{T1}", headers={**bearer(LEICESTER, "analyst"), "Accept": "text/csv"})
    assert table.text.splitlines() == ["specimen_id,lsoa,specimen_date"]


@pytest.mark.parametrize("cursor", ["", "garbage", "a.b", "€€€.x", "A" * 5000])
def test_a_cursor_that_is_not_ours_is_400(client: TestClient, cursor: str) -> None:
    response = client.get(f"/deliveries/{T1}", params={"after": cursor}, headers=bearer(LEICESTER, "dph"))
    assert response.status_code == 400 and response.json()["error"].startswith("bad cursor")


def test_another_bodys_cursor_is_400_not_a_read(client: TestClient) -> None:
    theirs = client.get(f"/deliveries/{T1}?limit=1", headers=bearer(NOTTINGHAM, "dph")).headers[NEXT_CURSOR]
    response = client.get(f"/deliveries/{T1}", params={"after": theirs}, headers=bearer(LEICESTER, "dph"))
    assert response.status_code == 400


def test_an_ended_right_is_403_with_its_reason(client: TestClient, world: World) -> None:
    world.closed[DPH] = "t1-leicester was revoked at 2026-12-06T11:00:00Z"
    response = client.get(f"/deliveries/{T1}", headers=bearer(LEICESTER, "dph"))
    assert response.status_code == 403
    assert response.json()["error"].endswith("may no longer read ukhsa.positive-tests: t1-leicester was revoked at "
                                             "2026-12-06T11:00:00Z")
    del world.closed[DPH]
    world.log.fenced.add(DPH)  # the fence's DENY on Kafka refuses even when the state says open
    assert client.get(f"/deliveries/{T1}", headers=bearer(LEICESTER, "dph")).status_code == 403


def test_limit_is_bounded(client: TestClient) -> None:
    assert client.get(f"/deliveries/{T1}?limit=0", headers=bearer(LEICESTER, "dph")).status_code == 422
    assert client.get(f"/deliveries/{T1}?limit=10001", headers=bearer(LEICESTER, "dph")).status_code == 422


def _events(client: TestClient, headers: dict[str, str], want: int, on_heartbeat: Any = None,
            **params: str) -> list[tuple[str, dict[str, Any]]]:
    """(id, data) of the first `want` events; `on_heartbeat()` is called at the first keepalive comment."""
    found: list[tuple[str, dict[str, Any]]] = []
    with client.stream("GET", f"/deliveries/{T1}/events", headers=headers, params=params) as response:
        assert response.status_code == 200 and response.headers["content-type"].startswith("text/event-stream")
        ident = ""
        for line in response.iter_lines():
            if line.startswith(":") and on_heartbeat is not None:
                on_heartbeat()
                on_heartbeat = None
            elif line.startswith("id: "):
                ident = line[4:]
            elif line.startswith("data: "):
                found.append((ident, json.loads(line[6:])))
                if len(found) == want:
                    break
    return found


def test_events_resume_after_the_last_event_id_without_gaps_or_repeats(client: TestClient, world: World) -> None:
    headers = bearer(LEICESTER, "dph")
    start = client.get(f"/deliveries/{T1}?limit=1", headers=headers).headers[NEXT_CURSOR]
    first = _events(client, headers, 2, after=start)
    assert [d["specimen_id"] for _, d in first] == ["L1", "L2"]
    world.deliver(DPH, "L5")
    again = _events(client, {**headers, "Last-Event-ID": first[-1][0]}, 3)
    assert [d["specimen_id"] for _, d in again] == ["L3", "L4", "L5"]


def test_events_without_a_cursor_start_now_and_carry_new_records(client: TestClient, world: World) -> None:
    def deliver() -> None:
        world.deliver(DPH, "new-1")
        world.deliver(DPH, "new-2")
        world.deliver(DPH, "new-3")

    events = _events(client, bearer(LEICESTER, "dph"), 3, on_heartbeat=deliver)
    assert [d["specimen_id"] for _, d in events] == ["new-1", "new-2", "new-3"]
    resumed = client.get(f"/deliveries/{T1}", params={"after": events[0][0]}, headers=bearer(LEICESTER, "dph"))
    assert _ids(resumed) == ["new-2", "new-3"]  # an event id is a pull cursor too


def test_events_answer_a_bad_cursor_and_an_ended_right_before_streaming(client: TestClient, world: World) -> None:
    headers = bearer(LEICESTER, "dph")
    assert client.get(f"/deliveries/{T1}/events", headers={**headers, "Last-Event-ID": "nope"}).status_code == 400
    world.closed[DPH] = "t1-leicester expired at 2026-12-06T11:00:00Z"
    assert client.get(f"/deliveries/{T1}/events", headers=headers).status_code == 403


def test_a_stream_whose_right_ends_says_so_and_closes(client: TestClient, world: World) -> None:
    def end() -> None:
        world.closed[DPH] = "t1-leicester was revoked at 2026-12-06T11:00:00Z"

    with client.stream("GET", f"/deliveries/{T1}/events", headers=bearer(LEICESTER, "dph")) as response:
        lines = []
        for line in response.iter_lines():
            lines.append(line)
            if line.startswith(":"):
                end()
    assert "event: ended" in lines
    assert any("was revoked" in line for line in lines if line.startswith("data: "))


def test_event_streams_are_bounded(world: World) -> None:
    app = create_api_app(None, lambda s, n: [], guard=guard(), deliveries=world.deliveries,  # type: ignore[arg-type]
                         live=LiveOptions(max_streams=1, batch=2, heartbeat_s=0.05))
    with TestClient(app) as client:
        headers = bearer(LEICESTER, "dph")
        with client.stream("GET", f"/deliveries/{T1}/events", headers=headers) as held:
            assert held.status_code == 200
            refused = client.get(f"/deliveries/{T1}/events", headers=headers)
            assert refused.status_code == 503 and refused.headers["retry-after"]
        # the slot is given back when the client goes
        assert _events(client, headers, 1, on_heartbeat=lambda: world.deliver(DPH, "x"))[0][1]["specimen_id"] == "x"


def test_a_topic_of_several_partitions_is_paged_without_gaps_or_repeats(world: World) -> None:
    topic = delivery_topic(LEICESTER, "analyst", T1)
    for n in range(7):
        world.deliver(topic, f"A{n}", partition=n % 3)
    seen: list[str] = []
    cursor = None
    while True:
        page = world.deliveries.page(LEICESTER, "analyst", T1, cursor, limit=2)
        assert len(page.records) <= 2
        seen += [r.value["specimen_id"] for r in page.records]
        if not page.records:
            break
        cursor = page.next_cursor
    assert sorted(seen) == [f"A{n}" for n in range(7)]
    world.deliver(topic, "late", partition=1)
    assert [r.value["specimen_id"] for r in world.deliveries.page(LEICESTER, "analyst", T1, cursor).records] == [
        "late"]


def test_kafka_out_of_reach_is_503_to_retry_not_a_500(client: TestClient, world: World) -> None:
    from broker.errors import ServiceError

    def down(*_: Any) -> Any:
        raise ServiceError("reading a delivery topic failed: KafkaTimeoutError")

    world.log.partitions = down  # type: ignore[method-assign,assignment]
    world.log.ends = down  # type: ignore[method-assign,assignment]
    for path in (f"/deliveries/{T1}", f"/deliveries/{T1}/events"):
        response = client.get(path, headers=bearer(LEICESTER, "dph"))
        assert response.status_code == 503 and response.headers["retry-after"], path


def test_the_latest_records_are_the_callers_newest_per_partition(world: World) -> None:
    world.deliver(DPH, "P1-0", partition=1)
    latest = world.deliveries.latest(LEICESTER, "dph", T1, 2)
    assert sorted(str(r.value["specimen_id"]) for r in latest.records) == ["L3", "L4", "P1-0"]
    assert world.deliveries.latest(NOTTINGHAM, "dph", T1, 2).records[0].value["specimen_id"] == "N0"
    assert world.deliveries.latest(LEICESTER, "analyst", T1, 2).records == []   # nothing delivered to this role
    world.closed[DPH] = "agreement t1-leicester was revoked"
    with pytest.raises(DeliveryRefused, match="revoked"):
        world.deliveries.latest(LEICESTER, "dph", T1, 2)
