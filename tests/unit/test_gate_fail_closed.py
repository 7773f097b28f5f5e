"""The gate fails closed while OPA is down or has no verified bundle: nothing is consumed, delivered or lost."""

from __future__ import annotations

from broker.domain.topics import delivery_topic
from broker.services.planner import Planner
from tests.unit.gate_fakes import T1, FakePolicyEngine, GateHarness, make_gate

LEICESTER_DPH = delivery_topic("leicester-city-council", "dph", T1)


def _started() -> GateHarness:
    harness = make_gate()
    harness.gate.start()
    return harness


def test_while_opa_is_down_nothing_is_consumed_delivered_or_committed() -> None:
    h = _started()
    h.engine.stop()
    h.stage.queue(h.record(0))

    assert h.gate.step(timeout_s=0) == 0
    assert h.gate.step(timeout_s=0) == 0

    assert h.stage.calls == [] and h.stage.transactions == [] and h.gate.held
    assert len(h.stage.batches) == 1  # still waiting in Kafka


def test_when_opa_is_back_every_waiting_record_is_delivered_once() -> None:
    h = _started()
    h.stage.queue(h.record(0))
    h.gate.step(timeout_s=0)
    h.engine.stop()
    h.stage.queue(h.record(1))
    h.stage.queue(h.record(2))
    for _ in range(3):
        h.gate.step(timeout_s=0)
    assert len(h.delivered(LEICESTER_DPH)) == 1

    h.engine.restart()
    while h.stage.batches:
        h.gate.step(timeout_s=0)

    delivered = [s.headers["accord.source"] for s in h.delivered(LEICESTER_DPH)]
    assert sorted(delivered) == [f"ingest.{T1}/0/{n}".encode() for n in range(3)]
    assert not h.gate.held


def test_plans_from_before_the_outage_are_not_trusted_after_it() -> None:
    h = _started()
    h.engine.stop()
    h.gate.step(timeout_s=0)
    h.engine.restart()  # empty of the catalog, perhaps with another bundle
    asked_before = len(h.engine.plan_requests())
    h.stage.queue(h.record(0))

    h.gate.step(timeout_s=0)

    assert len(h.engine.plan_requests()) > asked_before  # re-planned although nothing on the control topic changed
    assert h.engine.data["accord/catalog"]["revision"] == h.gate.state.catalog_revision
    assert len(h.delivered(LEICESTER_DPH)) == 1


def test_opa_health_is_asked_at_most_once_per_interval() -> None:
    engine, now = FakePolicyEngine(), [100.0]
    planner = Planner(engine, check_every_s=1.0, monotonic=lambda: now[0])

    assert planner.ready() and planner.ready()
    engine.stop()
    now[0] += 0.5
    assert planner.ready()  # the answer from 0.5 s ago still stands
    now[0] += 0.5
    assert not planner.ready()

    assert engine.health_checks == 2
