"""Drills on a schedule, on a fake clock: slots anchored to the first run, overruns skip missed slots, each flow's
last result goes to the metrics, and a failing check (or a run that cannot start) is announced to the operator."""

from __future__ import annotations

import datetime as dt
import ipaddress
import json
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import httpx
import pytest

from broker.adapters.metrics import PrometheusDrillMetrics, drill_flow_result
from broker.config import Settings
from broker.domain.drills import CheckResult, Report, Verdict
from broker.domain.webhooks import SIGNATURE_HEADER, verify
from broker.errors import ServiceError
from broker.runtime.drills import OperatorWebhook
from broker.services.drill_schedule import DRILL_FAILED, DrillSchedule, next_slot

START = dt.datetime(2026, 3, 2, 9, 0, tzinfo=dt.UTC)
WEEK = dt.timedelta(days=7)


class FakeTime:
    def __init__(self) -> None:
        self.now = START
        self.waits: list[float] = []

    def __call__(self) -> dt.datetime:
        return self.now

    def wait(self, seconds: float) -> bool:
        self.waits.append(seconds)
        self.now += dt.timedelta(seconds=seconds)
        return False


class Metrics:
    def __init__(self) -> None:
        self.results: list[tuple[str, str, dt.datetime, dict[str, int]]] = []

    def flow_result(self, flow: str, verdict: str, at: dt.datetime, checks: Mapping[str, int]) -> None:
        self.results.append((flow, verdict, at, dict(checks)))


class Alerts:
    def __init__(self) -> None:
        self.sent: list[Mapping[str, Any]] = []

    def announce(self, notification: Mapping[str, Any]) -> None:
        self.sent.append(notification)


def report_at(at: dt.datetime, verdict: Verdict = "pass") -> Report:
    checks = (CheckResult("T1", "switch-on", "pass", "live", at, 1.0),
              CheckResult("T1", "dispute-decision", verdict, "decided" if verdict == "pass" else "still open", at),
              CheckResult("T2", "switch-on", "not-run", "needs drill streams", at))
    return Report("drill-" + at.strftime("%d%H%M"), "local", at, at + dt.timedelta(minutes=3), ("T1", "T2"), checks)


def test_slots_are_anchored_to_the_first_run() -> None:
    assert next_slot(START, WEEK, START) == START + WEEK
    assert next_slot(START, WEEK, START + dt.timedelta(days=6)) == START + WEEK
    assert next_slot(START, WEEK, START + dt.timedelta(days=15)) == START + 3 * WEEK
    with pytest.raises(ValueError):
        next_slot(START, dt.timedelta(0), START)


def test_runs_come_every_period_without_drifting_by_their_own_length() -> None:
    time, metrics, alerts = FakeTime(), Metrics(), Alerts()

    def run() -> tuple[Report, str | None]:
        ran_at = time.now
        time.now += dt.timedelta(minutes=3)     # a drill takes three minutes
        return report_at(ran_at), None

    schedule = DrillSchedule(WEEK, run, metrics, alerts, time, time.wait)
    schedule.serve(max_runs=3)
    assert schedule.runs == [START, START + WEEK, START + 2 * WEEK]
    assert time.waits == [WEEK.total_seconds() - 180.0] * 2
    assert alerts.sent == []
    assert [(flow, verdict) for flow, verdict, _, _ in metrics.results] == [("T1", "pass"), ("T2", "incomplete")] * 3
    assert metrics.results[-1][2] == START + 2 * WEEK + dt.timedelta(minutes=3)
    assert metrics.results[0][3] == {"pass": 2, "fail": 0, "not-run": 0}


def test_a_run_that_overran_is_followed_at_once_and_missed_slots_are_skipped() -> None:
    time, alerts = FakeTime(), Alerts()
    lengths = iter([dt.timedelta(days=15), dt.timedelta(minutes=1), dt.timedelta(minutes=1)])

    def run() -> tuple[Report, str | None]:
        ran_at = time.now
        time.now += next(lengths)
        return report_at(ran_at), None

    schedule = DrillSchedule(WEEK, run, Metrics(), alerts, time, time.wait)
    schedule.serve(max_runs=3)
    assert schedule.runs == [START, START + 3 * WEEK, START + 4 * WEEK]


def test_a_failing_check_is_announced_to_the_operator_with_the_report() -> None:
    time, alerts, metrics = FakeTime(), Alerts(), Metrics()
    schedule = DrillSchedule(WEEK, lambda: (report_at(time.now, "fail"), "reports/drill-1"), metrics, alerts,
                             time, time.wait)
    schedule.serve(max_runs=1)
    [notice] = alerts.sent
    assert (notice["type"], notice["verdict"], notice["report"]) == (DRILL_FAILED, "fail", "reports/drill-1")
    assert [(c["flow"], c["check"], c["reason"]) for c in notice["failed"]] == [
        ("T1", "dispute-decision", "still open")]
    assert notice["event_id"] and metrics.results[0][:2] == ("T1", "fail")


def test_a_drill_that_cannot_run_is_announced_and_the_schedule_goes_on() -> None:
    time, alerts = FakeTime(), Alerts()
    outcomes: list[Any] = [ServiceError("governance API unreachable"), report_at(START + WEEK)]

    def run() -> tuple[Report, str | None]:
        outcome = outcomes.pop(0)
        if isinstance(outcome, Exception):
            raise outcome
        return outcome, None

    schedule = DrillSchedule(WEEK, run, Metrics(), alerts, time, time.wait)
    schedule.serve(max_runs=2)
    assert len(schedule.runs) == 2
    assert [(n["type"], n.get("error")) for n in alerts.sent] == [(DRILL_FAILED, "governance API unreachable")]


def test_a_stop_between_runs_ends_the_schedule() -> None:
    time = FakeTime()
    schedule = DrillSchedule(WEEK, lambda: (report_at(time.now), None), Metrics(), Alerts(), time,
                             lambda _: True)
    schedule.serve()
    assert schedule.runs == [START]


def test_the_operator_hears_of_a_failing_check_signed_as_every_accord_webhook(tmp_path: Path) -> None:
    sent: list[httpx.Request] = []

    def receive(request: httpx.Request) -> httpx.Response:
        sent.append(request)
        return httpx.Response(204)

    alerts = OperatorWebhook("https://ops.example.test/drills", Settings(state_dir=tmp_path),
                             transport=httpx.MockTransport(receive),
                             resolve=lambda host, port: [ipaddress.ip_address("93.184.215.14")])
    try:
        schedule = DrillSchedule(WEEK, lambda: (report_at(START, "fail"), "reports/x"), PrometheusDrillMetrics(),
                                 alerts, FakeTime(), lambda _: True)
        schedule.serve()
        assert alerts.wait_idle(10.0)
    finally:
        alerts.close()
    [request] = sent
    assert request.headers["host"] == "ops.example.test"
    verify(alerts.secret, request.headers[SIGNATURE_HEADER], request.content, now=time.time())
    notice = json.loads(request.content)
    assert (notice["type"], notice["failed"][0]["check"]) == (DRILL_FAILED, "dispute-decision")
    assert drill_flow_result("T1", "fail") == 1.0 and drill_flow_result("T1", "pass") == 0.0
    assert drill_flow_result("T2", "incomplete") == 1.0
