"""Helpers for the dispute scenarios: a fake clock, actors, undoing control changes, enforcement latency."""

from __future__ import annotations

import datetime as dt
import threading
import time
from collections.abc import Iterable, Mapping
from typing import Any

from broker.adapters.kafka_control import ControlWriter
from broker.adapters.kafka_log import KafkaLog
from broker.domain.control import EMERGENCY_PREFIX, GRANT_PREFIX, REVOCATION_PREFIX
from broker.domain.disputes import Dispute, parse_stamp
from broker.domain.ladder import Actor
from broker.domain.topics import STATUS_TOPIC
from broker.local.stack import Endpoints
from broker.services.policy_changes import Announced, enforcement
from tests.integration.gate_support import publish as publish  # scenarios publish the way gate tests do


class FakeClock:
    """The governance service's time, moved by the test; thread-safe."""

    def __init__(self, start: dt.datetime) -> None:
        self._now = start
        self._lock = threading.Lock()

    @classmethod
    def hours_ago(cls, hours: float) -> FakeClock:
        return cls(dt.datetime.now(dt.UTC) - dt.timedelta(hours=hours))

    def __call__(self) -> dt.datetime:
        with self._lock:
            return self._now

    def advance(self, **delta: float) -> dt.datetime:
        with self._lock:
            self._now += dt.timedelta(**delta)
            return self._now

    def to(self, moment: dt.datetime) -> dt.datetime:
        with self._lock:
            self._now = max(self._now, moment)
            return self._now


def as_(body: str, role: str, person: str = "Exercise Player") -> Actor:
    return Actor(body=body, role=role, person=person)


class Cleanup:
    """Tombstones the control keys a scenario wrote, so later tests see the shipped catalog's state again."""

    def __init__(self, writer: ControlWriter) -> None:  # a signing writer (tests.conftest.control_writer)
        self._writer = writer
        self._keys: set[str] = set()

    def grants(self, idents: Iterable[str]) -> None:
        self._keys |= {f"{GRANT_PREFIX}{i}" for i in idents}

    def level(self, scope: str) -> None:
        self._keys.add(f"{EMERGENCY_PREFIX}{scope}")

    def revocation(self, agreement: str) -> None:
        self._keys.add(f"{REVOCATION_PREFIX}{agreement}")

    def run(self) -> None:
        for key in sorted(self._keys):
            self._writer.append(key, None)


def from_sources(sources: Mapping[bytes, Any]) -> Any:
    def keep(_: dict[str, Any], headers: dict[str, bytes]) -> bool:
        return headers.get("accord.source") in sources
    return keep


def wait_enforced(services: Endpoints, dispute: Dispute, started_wall_s: float) -> float:
    """Wait until the gate worker applied the decision's last control record (ServiceError after 10 s); the seconds
    from `started_wall_s` (when the decision was taken) as the worker reported them. Tests do not assert on it: a
    busy machine is not a defect, and `make bench` (f) measures enforcement latency."""
    enforced = next(e for e in reversed(dispute.timeline) if e["type"] == "enforced")
    last = max(enforced["data"]["control"], key=lambda c: int(c["offset"]))
    change = Announced(last["key"], int(last["offset"]), int(last["timestamp_ms"]))
    log = KafkaLog(services.kafka, client_id="e2e-status")
    try:
        statuses = enforcement(log, change, workers=1, timeout_s=10.0, status_topic=STATUS_TOPIC)
    finally:
        log.close()
    return int(statuses[0]["applied_ms"]) / 1000.0 - started_wall_s


def events_of(dispute: Dispute) -> list[str]:
    return [str(e["type"]) for e in dispute.timeline]


def deadline_of(dispute: Dispute) -> dt.datetime:
    assert dispute.deadline is not None, f"dispute {dispute.id} has no deadline ({dispute.state})"
    return dispute.deadline


def at(text: str) -> dt.datetime:
    return parse_stamp(text)


def wall() -> float:
    return time.time()
