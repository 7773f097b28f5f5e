"""Drills on a schedule (`accord drill schedule --every P7D`): run, publish each flow's last result as metrics,
tell the operator by webhook when a check fails, wait for the next slot.

Slots are anchored to the first run (start, start + every, ...), so runs do not drift by their own length; a run
that overran its slot is followed at once by the next, and slots missed meanwhile are skipped, not bunched.
"""

from __future__ import annotations

import datetime as dt
import logging
import uuid
from collections.abc import Callable, Mapping
from typing import Any, Protocol

from broker.clock import Clock
from broker.domain.drills import Report
from broker.errors import AccordError

log = logging.getLogger(__name__)
DRILL_FAILED = "drill-failed"


class DrillMetrics(Protocol):
    def flow_result(self, flow: str, verdict: str, at: dt.datetime, checks: Mapping[str, int]) -> None: ...


class OperatorAlerts(Protocol):
    """Sends a notification ({event_id, type, ...}) to the operator's webhook, signed."""

    def announce(self, notification: Mapping[str, Any]) -> None: ...


def next_slot(anchor: dt.datetime, every: dt.timedelta, now: dt.datetime) -> dt.datetime:
    """The first slot `anchor + k * every` (k >= 1) after `now`."""
    if every <= dt.timedelta(0):
        raise ValueError(f"a drill schedule needs a positive period, got {every}")
    passed = max(int((now - anchor) / every), 0)
    return anchor + (passed + 1) * every


def failure_notice(report: Report, where: str | None) -> dict[str, Any] | None:
    """The operator's notification of a run with failed checks; None when nothing failed."""
    failed = [c.to_json() for c in report.checks if c.verdict == "fail"]
    if not failed:
        return None
    return {"event_id": uuid.uuid4().hex, "type": DRILL_FAILED, "run": report.run, "deployment": report.deployment,
            "at": report.to_json()["finished_at"], "verdict": report.verdict, "failed": failed, "report": where}


class DrillSchedule:
    """Runs `run_once` (one drill: the report and where it was written) every `every` until `wait` says stop.

    `wait(seconds)` sleeps and returns True when the schedule should stop (a signal); tests pass a fake that moves
    a fake clock.
    """

    def __init__(self, every: dt.timedelta, run_once: Callable[[], tuple[Report, str | None]],
                 metrics: DrillMetrics, alerts: OperatorAlerts, clock: Clock,
                 wait: Callable[[float], bool]) -> None:
        if every <= dt.timedelta(0):
            raise ValueError(f"a drill schedule needs a positive period, got {every}")
        self._every, self._run_once, self._metrics, self._alerts = every, run_once, metrics, alerts
        self._clock, self._wait = clock, wait
        self.runs: list[dt.datetime] = []

    def serve(self, max_runs: int | None = None) -> None:
        anchor = self._clock()
        while max_runs is None or len(self.runs) < max_runs:
            self.runs.append(self._clock())
            self._once()
            if max_runs is not None and len(self.runs) >= max_runs:
                return
            pause = (next_slot(anchor, self._every, self._clock()) - self._clock()).total_seconds()
            if self._wait(max(pause, 0.0)):
                return

    def _once(self) -> None:
        try:
            report, where = self._run_once()
        except AccordError as exc:
            log.error("the scheduled drill could not run: %s", exc)
            self._alerts.announce({"event_id": uuid.uuid4().hex, "type": DRILL_FAILED,
                                   "at": self._clock().isoformat(), "error": str(exc), "failed": []})
            return
        for flow in report.flows:
            checks = report.of_flow(flow)
            counts = {v: sum(1 for c in checks if c.verdict == v) for v in ("pass", "fail", "not-run")}
            self._metrics.flow_result(flow, report.flow_verdict(flow), report.finished_at, counts)
        notice = failure_notice(report, where)
        if notice is not None:
            self._alerts.announce(notice)
