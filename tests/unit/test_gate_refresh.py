"""The periodic re-plan asked off the delivery thread (`Gate(refresh_in_background=True)`, as `open_gate` runs it):
delivery goes on under the plans in force while OPA answers, the answer is installed between batches, a control
change made meanwhile wins over it, and a refresh that fails has the next batch wait for a re-plan that works."""

from __future__ import annotations

import datetime as dt
from typing import Any

import pytest

from broker.domain.topics import delivery_topic
from broker.errors import PolicyEngineError
from tests.unit.gate_fakes import (
    INGEST,
    START,
    T1,
    FakeClock,
    GateHarness,
    HeldRefresh,
    agreement,
    catalog_document,
    make_gate,
)

LEICESTER_DPH = delivery_topic("leicester-city-council", "dph", T1)
NOTTINGHAM_DPH = delivery_topic("nottingham-city-council", "dph", T1)


def sources(sent: list[Any]) -> set[bytes]:
    return {s.headers["accord.source"] for s in sent}


def started(document: dict[str, Any]) -> tuple[GateHarness, HeldRefresh, FakeClock]:
    engine, clock = HeldRefresh(), FakeClock()
    h = make_gate(document, clock, engine=engine, refresh_in_background=True)
    h.gate.start()
    return h, engine, clock


def refresh_ended(h: GateHarness) -> None:
    job = h.gate._refresh
    assert job is not None and job.done.wait(10)


def test_batches_go_on_under_the_plans_in_force_while_the_periodic_replan_is_asked() -> None:
    # Nottingham's agreement starts 15 s in: only a re-plan after that allows it (a start makes no expiry).
    later = {**agreement("nottingham-city-council", "E06000018"), "valid_from": "2020-06-26T09:00:15Z"}
    h, engine, clock = started(catalog_document(**{"t1-nottingham": later}))
    clock.now = START + dt.timedelta(seconds=20)
    h.stage.queue(h.record(0, "nottingham"))

    assert h.gate.step() == 1   # not held up by OPA: the refresh is asked on its own thread
    assert engine.refresh_asked.wait(10)
    engine.release.set()
    refresh_ended(h)
    h.stage.queue(h.record(1, "nottingham"))
    h.gate.step()               # installed before this batch is routed

    assert [t.outcome for t in h.stage.transactions] == ["committed", "committed"]
    assert sources(h.delivered(NOTTINGHAM_DPH)) == {f"{INGEST}/0/1".encode()}


def test_a_control_change_made_while_the_refresh_is_asked_wins_over_its_answer() -> None:
    h, engine, clock = started(catalog_document())
    clock.now = START + dt.timedelta(seconds=11)
    h.stage.queue(h.record(0))
    h.gate.step()               # the refresh is asked under the state in which Leicester is allowed
    assert engine.refresh_asked.wait(10)
    h.control.append("revocation/t1-leicester", {"kind": "revocation", "agreement": "t1-leicester"})
    h.stage.queue(h.record(1))
    h.gate.step()               # re-planned on the delivery thread at once: revoked
    engine.release.set()
    refresh_ended(h)
    h.stage.queue(h.record(2))
    h.gate.step()               # the refresh's older answer is discarded, never installed

    assert sources(h.delivered(LEICESTER_DPH)) == {f"{INGEST}/0/0".encode()}
    assert h.gate.deliveries[T1] and all(d.plan.subscriber != "leicester-city-council"
                                         for d in h.gate.deliveries[T1])


def test_a_refresh_that_fails_holds_the_next_batch_until_a_replan_works() -> None:
    h, engine, clock = started(catalog_document())
    clock.now = START + dt.timedelta(seconds=11)
    h.stage.queue(h.record(0))
    h.gate.step()
    assert engine.refresh_asked.wait(10)
    engine.failure = PolicyEngineError("OPA unreachable")
    engine.release.set()
    refresh_ended(h)
    h.stage.queue(h.record(1))

    with pytest.raises(PolicyEngineError):
        h.gate.step()           # the re-plan is asked again on the delivery thread, before routing: it fails
    engine.failure = None
    h.stage.queue(h.record(2))
    h.gate.step()

    assert h.stage.aborted() == [] and h.stage.transactions[-1].outcome == "committed"
    assert sources(h.delivered(LEICESTER_DPH)) == {f"{INGEST}/0/0".encode(), f"{INGEST}/0/2".encode()}
