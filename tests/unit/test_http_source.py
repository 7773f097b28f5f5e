"""The HTTP source against an in-memory API shaped like the coronavirus dashboard's: every row published once
across pages, polls and restarts (also mid-page), rows sharing the watermark neither skipped nor repeated, rows
that cannot be coerced kept as rejects saying where and why; requests paced and retried as configured."""

from __future__ import annotations

import datetime as dt
from pathlib import Path
from typing import Any

import httpx
import pytest

from broker.adapters.json_api_http import HttpJsonApi
from broker.domain.pages import Answer
from connectors.sources.base import (
    MemoryPublisher,
    Position,
    SourceBatch,
    SourceState,
    Totals,
    idempotency_key,
    run_source,
)
from connectors.sources.coercion import mapper
from connectors.sources.http import HttpRequestPlan, HttpSource, Paging, RequestRefused, Watermark
from connectors.sources.pacing import Backoff, GaveUp, PoliteClient, RateLimit, retry_after
from connectors.sources.polling import Polled
from connectors.sources.replay import Replayed
from tests.unit.json_api_fakes import DashboardApi

SCHEMA = {"type": "record", "name": "Cases", "fields": [
    {"name": "area_code", "type": "string"}, {"name": "date", "type": {"type": "int", "logicalType": "date"}},
    {"name": "cases", "type": ["null", "long"], "default": None}]}
STREAM = "test.cases"
THREE_TRIES = Backoff(3, 1.0, 8.0)


def row(date: str, area: str, cases: Any = 1) -> dict[str, Any]:
    return {"areaCode": area, "date": date, "newCases": cases}


class Sleeps:
    def __init__(self) -> None:
        self.now, self.slept = 0.0, []  # type: float, list[float]

    def sleep(self, seconds: float) -> None:
        self.slept.append(seconds)
        self.now += seconds


def source(api: DashboardApi, sleeps: Sleeps | None = None, max_rows: int = 1000, per_second: float | None = None,
           backoff: Backoff = THREE_TRIES, paging: Paging | None = None) -> HttpSource:
    clock = sleeps or Sleeps()
    client = PoliteClient(api, RateLimit(per_second, lambda: clock.now, clock.sleep), backoff, sleep=clock.sleep,
                          clock=lambda: dt.datetime(2020, 6, 25, tzinfo=dt.UTC))
    plan = HttpRequestPlan("https://api.example/v1/data", (("structure", "{}"),), {"Authorization": "Bearer t"})
    return HttpSource(client, plan, paging or Paging(rows="data", next="pagination.next"),
                      Watermark("date", "since", key=("areaCode",)),
                      mapper(SCHEMA, {"area_code": "areaCode", "cases": "newCases"}), max_rows=max_rows)


def drain(src: HttpSource, after: Position | None) -> tuple[list[SourceBatch], Position | None]:
    batches = list(src.batches(after))
    return batches, (batches[-1].end if batches else after)


def published(batches: list[SourceBatch]) -> list[tuple[str, str]]:
    return [(r["area_code"], r["date"]) for b in batches for r in b.records]


def test_every_row_of_every_page_once_then_only_what_is_new() -> None:
    api = DashboardApi([row("2020-06-01", f"E0{i}") for i in range(7)])
    src = source(api)
    first, position = drain(src, None)
    assert published(first) == [(f"E0{i}", "2020-06-01") for i in range(7)]
    assert len(api.asked) == 3 and api.asked[1]["page"] == "2"  # 3 rows a page, through `pagination.next`
    assert position is not None and position["watermark"] == "2020-06-01" and position["page"] is None
    # Later: one more area for the same day (same watermark), and a new day.
    api.rows += [row("2020-06-01", "E07"), row("2020-06-02", "E00")]
    second, position = drain(src, position)
    assert published(second) == [("E07", "2020-06-01"), ("E00", "2020-06-02")]
    assert api.asked[3]["since"] == "2020-06-01"
    assert position is not None and position["watermark"] == "2020-06-02"
    third, _ = drain(src, position)
    assert published(third) == []  # nothing new: nothing published (and no position change to store)
    assert third == []


def test_a_restart_from_any_stored_batch_end_neither_skips_nor_repeats() -> None:
    api = DashboardApi([row(f"2020-06-0{d}", f"E0{i}") for d in range(1, 4) for i in range(4)], page_size=5)
    whole = published(drain(source(api), None)[0])
    src = source(api, max_rows=2)  # batches end mid-page and at page ends
    batches = list(src.batches(None))
    assert any(b.end.get("skip") for b in batches[:-1])
    for cut in range(len(batches)):
        resumed = published(batches[: cut + 1]) + published(drain(src, batches[cut].end)[0])
        assert resumed == whole


def test_rows_that_cannot_be_records_are_rejects_saying_where_and_why() -> None:
    api = DashboardApi([row("2020-06-01", "E01", "1,234"), row("2020-06-01", "E02", "many"),
                        {"areaCode": "E03", "newCases": 1}])
    batches, _ = drain(source(api), None)
    assert [r["cases"] for b in batches for r in b.records] == [1234]
    rejects = [r for b in batches for r in b.rejects]
    assert len(rejects) == 2
    assert "no watermark" in rejects[0].reason and rejects[0].raw["areaCode"] == "E03"  # sorted first: no date
    assert rejects[1].where == "page 1 row 3 (date=2020-06-01)" and "'many' is not a number" in rejects[1].reason
    assert sum(b.rows for b in batches) == 3


def test_page_numbers_until_the_last_page() -> None:
    api = DashboardApi([row("2020-06-01", f"E0{i}") for i in range(5)], page_size=2)
    src = source(api, paging=Paging(rows="data", page_param="page", last="pagination.last"))
    batches, _ = drain(src, None)
    assert len(published(batches)) == 5
    assert [a["page"] for a in api.asked] == ["1", "2", "3"]


def test_no_content_is_an_empty_poll() -> None:
    api = DashboardApi([])
    assert drain(source(api), None) == ([], None)


def test_server_errors_and_no_answer_are_retried_and_retry_after_honoured() -> None:
    api = DashboardApi([row("2020-06-01", "E01")])
    api.failures = [Answer(503), None, Answer(429, b"slow down", {"retry-after": "7"})]
    sleeps = Sleeps()
    batches, _ = drain(source(api, sleeps, backoff=Backoff(4, 1.0, 8.0)), None)
    assert published(batches) == [("E01", "2020-06-01")]
    assert sleeps.slept == [1.0, 2.0, 7.0]  # doubling backoff, then the server's own Retry-After


def test_a_request_still_failing_after_the_last_attempt_gives_up_saying_why() -> None:
    api = DashboardApi([row("2020-06-01", "E01")])
    api.failures = [Answer(500, b"database down")] * 3
    with pytest.raises(GaveUp, match=r"after 3 attempt.*HTTP 500: database down"):
        drain(source(api), None)


def test_a_client_error_is_final() -> None:
    api = DashboardApi([row("2020-06-01", "E01")])
    api.failures = [Answer(404, b"no such metric")]
    with pytest.raises(RequestRefused, match=r"refused the request \(404\): no such metric"):
        drain(source(api), None)
    assert len(api.asked) == 1


def test_requests_are_paced_at_the_rate_limit() -> None:
    api = DashboardApi([row("2020-06-01", f"E0{i}") for i in range(9)])
    sleeps = Sleeps()
    drain(source(api, sleeps, per_second=2.0), None)
    assert len(api.asked) == 3 and sleeps.slept == [0.5, 0.5]


def test_retry_after_as_a_date() -> None:
    now = dt.datetime(2020, 6, 25, 12, 0, tzinfo=dt.UTC)
    assert retry_after("Thu, 25 Jun 2020 12:00:30 GMT", now) == 30.0
    assert retry_after("soon", now) is None
    assert retry_after("120", now) == 120.0


def test_a_batch_published_before_a_crash_is_published_again_unchanged_though_the_api_changed(
        tmp_path: Path) -> None:
    api = DashboardApi([row("2020-06-01", f"E0{i}") for i in range(4)], page_size=10)
    publisher, state = MemoryPublisher(), SourceState(tmp_path)
    replayed = Replayed(source(api, max_rows=3), tmp_path)
    first = next(iter(replayed.batches(None)))
    # Published, then killed before its end was stored; the API's answer changes before the restart.
    publisher.publish(STREAM, first.records, idempotency_key("dash", first.start, first.end))
    api.rows[0]["newCases"] = 99
    summary = run_source("dash", STREAM, replayed, publisher, state)
    assert [(r["area_code"], r["cases"]) for r in publisher.published[STREAM]] == [
        ("E00", 1), ("E01", 1), ("E02", 1), ("E03", 1)]
    assert summary.batches == 2 and publisher.calls == 3  # the replay reached the API with the same key and body
    kept = tmp_path / "batches"  # the publisher's rows: readable by their owner only
    assert kept.stat().st_mode & 0o777 == 0o700
    assert {path.stat().st_mode & 0o777 for path in kept.iterdir()} == {0o600}


def test_without_the_kept_batch_the_changed_answer_would_be_a_different_body() -> None:
    api = DashboardApi([row("2020-06-01", f"E0{i}") for i in range(4)], page_size=10)
    first = next(iter(source(api, max_rows=3).batches(None)))
    api.rows[0]["newCases"] = 99
    again = next(iter(source(api, max_rows=3).batches(None)))
    assert (again.start, again.end) == (first.start, first.end) and again.records != first.records


def test_batches_published_ahead_of_the_stored_position_are_replayed_in_order(tmp_path: Path) -> None:
    api = DashboardApi([row("2020-06-01", f"E0{i}") for i in range(10)], page_size=10)
    publisher, state = MemoryPublisher(), SourceState(tmp_path)
    handed = Replayed(source(api, max_rows=2), tmp_path, window=3).batches(None)
    ahead = [next(handed) for _ in range(3)]
    for batch in ahead:  # three POSTs in flight, all published; only the first one's end stored, then a kill
        publisher.publish(STREAM, batch.records, idempotency_key("dash", batch.start, batch.end))
    state.store("dash", STREAM, ahead[0].end, 0, Totals(2, 2))
    for changed in api.rows:
        changed["newCases"] = 99
    summary = run_source("dash", STREAM, Replayed(source(api, max_rows=2), tmp_path, window=3), publisher, state,
                         in_flight=3)
    cases = [(r["area_code"], r["cases"]) for r in publisher.published[STREAM]]
    assert cases == [(f"E0{i}", 1) for i in range(6)] + [(f"E0{i}", 99) for i in range(6, 10)]
    assert summary.run.rows == 8 and summary.totals.rows == 10


def test_the_http_adapter_keeps_a_links_own_query_and_adds_the_parameters() -> None:
    seen: list[str] = []

    def answer(request: httpx.Request) -> httpx.Response:
        seen.append(str(request.url))
        return httpx.Response(200, json={"data": []}, headers={"Retry-After": "3"})

    with HttpJsonApi(transport=httpx.MockTransport(answer)) as api:
        link = api.get("https://api.example/v1/data?filters=areaType%3Dnation&page=2", [], {})
        first = api.get("https://api.example/v1/data", [("filters", "areaType=nation;date>=2020-06-01")], {})
    assert seen == ["https://api.example/v1/data?filters=areaType%3Dnation&page=2",
                    "https://api.example/v1/data?filters=areaType%3Dnation%3Bdate%3E%3D2020-06-01"]
    assert (link.status, link.headers["retry-after"], first.body) == (200, "3", b'{"data":[]}')


def test_once_a_source_failing_round_after_round_ends_the_run_with_its_error() -> None:
    api = DashboardApi([row("2020-06-01", "E01")])
    api.failures = [Answer(503)] * 9
    errors: list[Exception] = []
    polled = Polled(source(api), follow=False, poll_s=1, wait=lambda s: None, on_error=errors.append, max_rounds=3)
    with pytest.raises(GaveUp):
        list(polled.batches(None))
    assert len(errors) == 2 and len(api.asked) == 9  # three rounds of three attempts
