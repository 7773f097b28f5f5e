"""The HTTP source on the real API and Kafka, polling a real HTTP server on loopback shaped like the UK coronavirus
dashboard's API (`/v1/data?filters=areaType=nhsTrust;date>=...&structure={...}&page=N`, pages of four rows with
`pagination.next`, 204 when nothing matches) that fails some requests (500, 429 with Retry-After, a dropped
connection) and gains rows between polls: every row reaches the ingest topic (read committed) exactly once."""

from __future__ import annotations

import datetime as dt
import json
import os
import signal
import threading
import uuid
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlencode, urlsplit

import pytest

from broker.local.stack import Endpoints
from broker.runtime import sources
from connectors.config import load_source
from tests.integration.pull_source_support import (
    SCHEMA_FILE,
    STREAM,
    api_token,
    published,
    start,
    stored_rows,
    wait_for,
)

PAGE = 4
STRUCTURE = {"trust_ods_code": "areaCode", "date": "date", "covid_inpatients": "hospitalCases",
             "mv_beds": "covidOccupiedMVBeds", "admissions": "newAdmissions", "diagnoses": "newAdmissions",
             "discharges": "newAdmissions", "staff_absences": "newAdmissions"}


class Dashboard:
    """The API's data (metrics by trust and day), what it was asked, and the failures it answers next."""

    def __init__(self) -> None:
        self.rows: list[dict[str, Any]] = []
        self.asked: list[dict[str, list[str]]] = []
        self.failures: list[str] = []  # "500", "429" or "drop", answered in turn before real answers
        self.lock = threading.Lock()

    def answer(self, query: dict[str, list[str]]) -> tuple[int, dict[str, str], bytes] | None:
        with self.lock:
            self.asked.append(query)
            failure = self.failures.pop(0) if self.failures else None
            rows = list(self.rows)
        if failure == "drop":
            return None
        if failure is not None:
            return int(failure), {"Retry-After": "1"} if failure == "429" else {}, b'{"response": "busy"}'
        filters = dict(f.split(">=", 1) if ">=" in f else f.split("=", 1)
                       for f in query["filters"][0].split(";"))
        chosen = sorted((r for r in rows if r["areaType"] == filters["areaType"]
                         and r["date"] >= filters.get("date", "")), key=lambda r: (r["date"], r["areaCode"]))
        if not chosen:
            return 204, {}, b""
        structure = json.loads(query["structure"][0])
        page = int(query.get("page", ["1"])[0])
        last = (len(chosen) + PAGE - 1) // PAGE
        data = [{name: r[metric] for name, metric in structure.items()}
                for r in chosen[(page - 1) * PAGE: page * PAGE]]
        here = {k: v[0] for k, v in query.items()}
        link = f"/v1/data?{urlencode(here | {'page': page + 1})}" if page < last else None
        body = {"length": len(data), "maxPageLimit": PAGE, "data": data,
                "pagination": {"current": f"/v1/data?{urlencode(here | {'page': page})}", "next": link,
                               "last": f"/v1/data?{urlencode(here | {'page': last})}"}}
        return 200, {"Content-Type": "application/json"}, json.dumps(body).encode()


@pytest.fixture
def dashboard() -> Iterator[tuple[Dashboard, str]]:
    data = Dashboard()

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            answered = data.answer(parse_qs(urlsplit(self.path).query))
            if answered is None:
                self.close_connection = True  # a dropped connection: no answer at all
                return
            status, headers, body = answered
            self.send_response(status)
            for name, value in headers.items():
                self.send_header(name, value)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *_: Any) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield data, f"http://127.0.0.1:{server.server_address[1]}/v1/data"
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=10)


def sitreps(prefix: str, day: dt.date, trusts: range) -> list[dict[str, Any]]:
    return [{"areaType": "nhsTrust", "areaCode": f"{prefix}{t}", "date": day.isoformat(), "hospitalCases": t,
             "covidOccupiedMVBeds": 1, "newAdmissions": 2} for t in trusts]


def write_config(directory: Path, services: Endpoints, url: str, name: str, rows: int = 3) -> Path:
    config = directory / "source.yaml"
    (directory / "dashboard.token").write_text("not-a-real-token\n")
    config.write_text(f"""source: http
name: {name}
stream: {STREAM}
state_dir: state
api: {{url: "{services.api_url}", token_file: {api_token(directory).name}}}
schema_file: "{SCHEMA_FILE}"
batch: {{rows: {rows}}}
http:
  url: "{url}"
  params:
    filters: areaType=nhsTrust
    structure: '{json.dumps(STRUCTURE)}'
  paging: {{rows: data, next: pagination.next}}
  watermark: {{field: date, param: filters, format: "areaType=nhsTrust;date>={{value}}", key: [trust_ods_code]}}
  auth: {{token_file: dashboard.token}}
  requests_per_s: 50
  retry: {{max_attempts: 5, first_backoff_s: 0.2, max_backoff_s: 2}}
""")
    return config


@pytest.mark.usefixtures("applied_catalog")  # the catalog naming NHS England the stream's publisher
def test_every_row_once_across_pages_failures_and_polls(services: Endpoints, dashboard: tuple[Dashboard, str],
                                                      tmp_path: Path) -> None:
    api, url = dashboard
    prefix = f"H{uuid.uuid4().hex[:6].upper()}"
    day = dt.datetime.now(dt.UTC).date() - dt.timedelta(days=5)
    api.rows = sitreps(prefix, day, range(10)) + sitreps(prefix, day + dt.timedelta(days=1), range(7))
    api.failures = ["500", "429", "drop"]
    config = load_source(write_config(tmp_path, services, url, f"dashboard-{prefix.lower()}"))

    first = sources.run(config, once=True)
    assert (first.run.rows, first.run.accepted) == (17, 17)
    assert api.failures == [] and len(api.asked) == 3 + 5  # three failures asked again, then five pages of four
    assert "date" not in api.asked[0]["filters"][0]  # no watermark yet: every row
    # Later the dashboard has two more trusts for the last day (the stored watermark's value) and a new day.
    api.rows += sitreps(prefix, day + dt.timedelta(days=1), range(7, 9)) + sitreps(
        prefix, day + dt.timedelta(days=2), range(5))
    api.failures = ["500"]
    second = sources.run(config, once=True)
    assert (second.run.rows, second.run.accepted) == (7, 7)
    assert api.asked[-1]["filters"][0] == f"areaType=nhsTrust;date>={day + dt.timedelta(days=1)}"
    third = sources.run(config, once=True)
    assert third.run.rows == 0

    got = published(services, prefix)
    pairs = sorted((r["trust_ods_code"], r["date"]) for r in got)
    expected = sorted((r["areaCode"], dt.date.fromisoformat(r["date"])) for r in api.rows)
    assert pairs == expected  # each row once: none lost, none repeated
    assert {r["covid_inpatients"] for r in got if r["trust_ods_code"] == f"{prefix}8"} == {8}


@pytest.mark.usefixtures("applied_catalog")  # the catalog naming NHS England the stream's publisher
def test_a_killed_http_source_loses_and_repeats_nothing(services: Endpoints, dashboard: tuple[Dashboard, str],
                                                       tmp_path: Path) -> None:
    api, url = dashboard
    prefix = f"Q{uuid.uuid4().hex[:6].upper()}"
    day = dt.datetime.now(dt.UTC).date() - dt.timedelta(days=40)
    api.rows = [r for d in range(30) for r in sitreps(prefix, day + dt.timedelta(days=d), range(40))]  # 1,200
    config = write_config(tmp_path, services, url, f"killed-{prefix.lower()}", rows=10)
    config.write_text(config.read_text().replace("requests_per_s: 50", "requests_per_s: 20"))
    log, state = tmp_path / "run.log", tmp_path / "state"
    run = start(config, log)
    try:
        wait_for(lambda: stored_rows(state) >= 150 or run.poll() is not None, "150 rows", log)
        assert run.poll() is None, f"the run ended before it was killed:\n{log.read_text()[-3000:]}"
        os.kill(run.pid, signal.SIGKILL)
        run.wait(timeout=30)
    finally:
        if run.poll() is None:
            run.kill()
            run.wait()
    assert stored_rows(state) < len(api.rows)
    for changed in api.rows[:600]:  # other values now, for rows read or not: kept batches are sent as they were
        changed["hospitalCases"] += 1000
    api.rows += sitreps(prefix, day + dt.timedelta(days=30), range(40))
    again = start(config, log)
    try:
        assert again.wait(timeout=600) == 0, log.read_text()[-3000:]
    finally:
        if again.poll() is None:
            again.kill()
            again.wait()
    got = published(services, prefix, timeout_s=30.0)
    pairs = sorted((r["trust_ods_code"], r["date"]) for r in got)
    assert pairs == sorted((r["areaCode"], dt.date.fromisoformat(r["date"])) for r in api.rows)  # each once
    assert stored_rows(state) == len(api.rows) == 1_240
