"""Readiness from probes: ready only when every probe passes; otherwise each failing one named with its reason."""

from __future__ import annotations

from broker.errors import ServiceError
from broker.services.readiness import assess, progressing


def _down() -> str | None:
    raise ServiceError("no Kafka broker answers at 127.0.0.1:1")


def test_ready_when_every_probe_passes() -> None:
    readiness = assess({"kafka": lambda: None, "opa": lambda: None})
    assert readiness.ready and readiness.as_json() == {"status": "ready", "failing": [],
                                                       "checks": {"kafka": "ok", "opa": "ok"}}


def test_not_ready_names_each_failing_probe_and_why() -> None:
    readiness = assess({"kafka": _down, "opa": lambda: "OPA at http://x answered 503", "registry": lambda: None})
    assert not readiness.ready
    assert readiness.failing == ["kafka", "opa"]
    assert readiness.checks["kafka"] == "ServiceError: no Kafka broker answers at 127.0.0.1:1"
    assert readiness.checks["opa"] == "OPA at http://x answered 503"


def test_a_loop_is_progressing_only_while_its_rounds_are_recent() -> None:
    now = [100.0]
    last: list[float | None] = [None]
    probe = progressing("deadline ticker", lambda: last[0], within_s=10, clock=lambda: now[0])
    assert probe() == "the deadline ticker has not completed a round yet"
    last[0] = 95.0
    assert probe() is None
    now[0] = 130.0
    assert probe() == "the deadline ticker last completed a round 35 s ago"
