"""A legal basis that ends stops delivery on the real Kafka, OPA and gate: Leicester's planning analysts receive T1
under section 251 support until the day it lapses (legal_basis_until); past its end, on the gate's settable clock,
the plan is refused and their rows stop, while the DPH's COPI-based delivery goes on."""

from __future__ import annotations

import datetime as dt
import random
import threading
import time
from collections.abc import Iterator
from typing import Any

import pytest

from broker.demo.synthetic import positive_tests
from broker.domain.optout import check_digit
from broker.local.stack import Endpoints
from broker.runtime.gate import GateThread
from tests.integration.gate_support import (
    PLANNING_BASIS_UNTIL,
    PLANNING_ROLE,
    T1,
    Receiver,
    end_offsets,
    publish,
    specimen_day,
    start_gate,
    topic_for,
)

PLANNING = topic_for("leicester-city-council", PLANNING_ROLE)
COPI = topic_for("leicester-city-council", "dph")
BASIS_ENDS = dt.datetime.combine(PLANNING_BASIS_UNTIL + dt.timedelta(days=1), dt.time(), tzinfo=dt.UTC)


class SettableClock:
    """The gate's time, moved by the test (thread-safe)."""

    def __init__(self) -> None:
        self._now = dt.datetime.now(dt.UTC)
        self._lock = threading.Lock()

    def __call__(self) -> dt.datetime:
        with self._lock:
            return self._now

    def to(self, moment: dt.datetime) -> None:
        with self._lock:
            self._now = moment


@pytest.fixture(scope="module")
def clock() -> SettableClock:
    return SettableClock()


@pytest.fixture(scope="module")
def gate(services: Endpoints, applied_catalog: dict[str, Any], clock: SettableClock) -> Iterator[GateThread]:
    runner = start_gate(services, "test-basis-end", "basis-end-worker", clock=clock)
    yield runner
    runner.stop()
    assert runner.failure is None, runner.failure


def _case(rng: random.Random) -> list[dict[str, Any]]:
    while (digit := check_digit(first := f"999{rng.randint(0, 999_999):06d}")) is None:
        pass
    case = positive_tests(specimen_day(), {"leicester": 1}, prefix=f"L{rng.randint(0, 10**6):06d}",
                          seed=rng.randint(0, 10**6))[0]
    return [{**case, "nhs_number": f"{first}{digit}"}]


def _delivers(gate: GateThread, topic: str) -> bool:
    assert gate.gate is not None
    return any(d.topic == topic for ds in gate.gate.deliveries.values() for d in ds)


def test_delivery_under_a_legal_basis_stops_at_its_end(
        services: Endpoints, gate: GateThread, clock: SettableClock, receiver: Receiver) -> None:
    rng = random.Random()
    starts = end_offsets(services.kafka, [PLANNING, COPI])
    before = publish(services, T1, _case(rng))

    def of(sources: dict[bytes, Any]) -> Any:
        return lambda _value, headers: headers.get("accord.source") in sources

    assert len(receiver.records(PLANNING, starts[PLANNING], of(before), want=1, timeout_s=120)) == 1
    assert len(receiver.records(COPI, starts[COPI], of(before), want=1, timeout_s=60)) == 1

    clock.to(BASIS_ENDS - dt.timedelta(seconds=1))     # the last second of the basis: still in force
    time.sleep(0.5)
    assert _delivers(gate, PLANNING)
    clock.to(BASIS_ENDS)                                # the basis has ended: the gate re-plans at the plan's expiry
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline and _delivers(gate, PLANNING):
        time.sleep(0.2)
    assert not _delivers(gate, PLANNING), "the gate still delivers under a legal basis that has ended"

    starts = end_offsets(services.kafka, [PLANNING, COPI])
    after = publish(services, T1, _case(rng))
    # The DPH's delivery under the COPI notice goes on; its transaction also holds any planning delivery of the row.
    assert len(receiver.records(COPI, starts[COPI], of(after), want=1, timeout_s=120)) == 1
    assert receiver.records(PLANNING, starts[PLANNING], of(after), want=0, timeout_s=5) == []
