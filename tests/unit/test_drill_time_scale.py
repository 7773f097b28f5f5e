"""A drill's dispute on a compressed ladder (`time_scale`) and an emergency in a drill body's own region: the
deadlines, escalations and decisive default at the scaled bound, kept when the state is rebuilt from the log, and
refused for any real body, so no real dispute's deadline and no real body's level ever moves."""

from __future__ import annotations

import datetime as dt

import pytest

from broker.domain import adjudication
from broker.domain.disputes import stamp
from broker.domain.drills import drill_region
from broker.domain.governance import GovernanceState, apply
from broker.errors import GovernanceError, InvalidRequestError, NotAuthorisedError
from tests.unit.governance_catalog import EAST_MIDLANDS, LEICESTER, catalog
from tests.unit.governance_fakes import START
from tests.unit.governance_support import DPH, World, person, refusal, types

DRILL = "drill-abc123-t1"
DRILL_DPH = person(DRILL, "dph")
SCALE = 1000.0
S = dt.timedelta(seconds=1)
NORMAL_BOUND = dt.timedelta(days=20) / SCALE         # 1,728 s
EMERGENCY_BOUND = dt.timedelta(hours=7) / SCALE      # 25.2 s


def drilled(shared: bool = False) -> World:
    """The test catalog with a drill body in Leicester's place, in a region of its own (`shared`: Leicester's too)."""
    doc = catalog()
    body = {**doc["bodies"][LEICESTER], "name": f"Accord drill body {DRILL}", "regions": [drill_region(DRILL)]}
    doc["bodies"] = {**doc["bodies"], DRILL: body}
    if shared:
        doc["bodies"][LEICESTER] = {**doc["bodies"][LEICESTER], "regions": [EAST_MIDLANDS, drill_region(DRILL)]}
    return World(doc)


def test_a_drill_dispute_runs_on_the_ladder_divided_by_its_time_scale_and_keeps_it_when_rebuilt() -> None:
    world = drilled()
    events = world.run(lambda ctx: adjudication.raise_dispute(ctx, DRILL_DPH, refusal(time_scale=SCALE), "d-1"))
    assert events[0]["data"]["time_scale"] == SCALE
    dispute = world.dispute()
    assert (dispute.time_scale, dispute.deadline) == (SCALE, START + dt.timedelta(days=5) / SCALE)
    assert dispute.to_json()["time_scale"] == SCALE
    rebuilt = GovernanceState()
    for event in events:
        rebuilt = apply(rebuilt, rebuilt.offset, event)
    assert rebuilt.dispute("d-1").time_scale == SCALE and rebuilt.dispute("d-1").deadline == dispute.deadline


def test_a_drill_dispute_escalates_and_its_refusal_stands_by_default_at_the_scaled_bound() -> None:
    world = drilled()
    world.raise_(DRILL_DPH, refusal(time_scale=SCALE))
    assert types(world.at(START + dt.timedelta(days=5) / SCALE).tick()) == ["tier-opened"]
    assert world.dispute().deadline == START + dt.timedelta(days=15) / SCALE
    assert types(world.at(START + NORMAL_BOUND - S).tick()) == ["tier-opened"]
    assert world.dispute().state == "awaiting"
    events = world.at(START + NORMAL_BOUND).tick()
    assert types(events) == ["defaulted"]
    decision = world.dispute().decision or {}
    assert (decision["outcome"], decision["due_at"]) == ("refused", stamp(START + NORMAL_BOUND))
    assert types(world.enforce()) == ["enforced", "closed"]


def test_an_emergency_in_the_drill_region_gives_a_scaled_provisional_grant_and_review() -> None:
    world = drilled()
    world.declare(drill_region(DRILL), "emergency")
    real = world.raise_(DPH, ident="d-real")
    assert (real.level, real.deadline) == ("normal", START + dt.timedelta(days=5))   # Leicester is untouched
    dispute = world.raise_(DRILL_DPH, refusal(time_scale=SCALE))
    assert (dispute.level, dispute.deadline) == ("emergency", START + dt.timedelta(hours=2) / SCALE)
    events = world.at(START + EMERGENCY_BOUND).tick()
    assert types(events) == ["tier-opened", "tier-opened", "defaulted", "raised", "tier-opened"]
    decision = world.dispute().decision or {}
    assert decision["outcome"] == "granted-for-period"
    assert decision["until"] == stamp(START + EMERGENCY_BOUND + dt.timedelta(days=14) / SCALE)
    review = world.dispute("d-1-review")
    assert (review.time_scale, review.deadline) == (SCALE, START + EMERGENCY_BOUND + dt.timedelta(hours=2) / SCALE)
    assert world.dispute("d-real").state == "awaiting"


def test_a_time_scale_is_refused_for_a_real_body_and_when_it_is_not_a_number_of_at_least_one() -> None:
    world = drilled()
    with pytest.raises(NotAuthorisedError, match=r"drills only: both the body raising .*leicester"):
        world.raise_(DPH, refusal(time_scale=2.0))
    with pytest.raises(InvalidRequestError, match="not a number of at least 1"):
        world.raise_(DRILL_DPH, refusal(time_scale=0.5))
    with pytest.raises(InvalidRequestError, match="not a number of at least 1"):
        world.raise_(DRILL_DPH, refusal(time_scale=float("inf")))
    assert world.state.disputes == {}
    assert world.raise_(DPH, refusal(time_scale=1.0)).time_scale == 1.0


def test_a_drill_region_takes_a_level_only_while_drill_bodies_alone_are_in_it() -> None:
    with pytest.raises(NotAuthorisedError, match="not drill bodies"):
        drilled(shared=True).declare(drill_region(DRILL), "emergency")
    with pytest.raises(GovernanceError, match="no body's region"):
        drilled().declare("drill-nobody", "emergency")
    world = drilled()
    assert types(world.declare("drill-nobody", "normal")) == ["emergency-lifted"]   # a leftover can be lifted
    assert types(world.declare(drill_region(DRILL), "emergency")) == ["emergency-declared"]
    assert world.state.level_for([EAST_MIDLANDS]) == "normal"
