"""Deadlines, decisive defaults and the bound; emergency declarations; break-glass; appeals, comments and closing."""

from __future__ import annotations

import datetime as dt
from typing import Any

import pytest

from broker.domain import escalation
from broker.domain.disputes import stamp
from broker.domain.governance import GovernanceEvent
from broker.errors import GovernanceError, NotAuthorisedError
from tests.unit.governance_catalog import ANALYST_FIELDS, EAST_MIDLANDS, LEICESTER, MANCHESTER, T1, T1_TIERS
from tests.unit.governance_fakes import START
from tests.unit.governance_support import (
    ARBITER,
    DPH,
    UKHSA_IG,
    World,
    board,
    granted,
    person,
    refusal,
    types,
)

H = dt.timedelta(hours=1)
DAY = dt.timedelta(days=1)
MANCHESTER_DPH = person(MANCHESTER, "dph")


def in_emergency(scope: str = EAST_MIDLANDS) -> World:
    world = World()
    world.declare(scope, "emergency")
    return world


# -- deadlines, defaults and the bound ----------------------------------------------------------------------------


def test_nothing_is_due_before_the_deadline() -> None:
    world = World()
    world.raise_()
    assert world.at(START + 5 * DAY - dt.timedelta(seconds=1)).tick() == []


def test_a_passed_deadline_opens_the_next_tier_counted_from_the_old_deadline() -> None:
    world = World()
    world.raise_()
    events = world.at(START + 5 * DAY + 3 * H).tick()
    assert types(events) == ["tier-opened"] and events[0]["data"]["why"] == "deadline passed"
    dispute = world.dispute()
    assert (dispute.tier, dispute.level, dispute.deadline) == (1, "normal", START + 15 * DAY)


def test_at_normal_level_the_last_deadline_leaves_the_refusal_standing() -> None:
    world = World()
    world.raise_()
    events = world.at(START + 20 * DAY).tick()
    assert types(events) == ["tier-opened", "tier-opened", "defaulted"]
    decision = world.dispute().decision or {}
    assert (decision["outcome"], decision["level"], decision["by"]) == ("refused", "normal", [])
    assert "refusal stands" in decision["reason"] and "grant" not in decision
    assert world.state.grants == {}
    assert types(world.enforce()) == ["enforced", "closed"]   # a default is final: no appeal


def test_in_an_emergency_the_default_is_a_provisional_grant_of_the_minimised_tier_with_a_review() -> None:
    world = in_emergency()
    world.raise_()
    events = world.at(START + 7 * H).tick()
    assert types(events) == ["tier-opened", "tier-opened", "defaulted", "raised", "tier-opened"]
    decision = world.dispute().decision or {}
    assert (decision["outcome"], decision["until"]) == ("granted-for-period", stamp(START + 7 * H + 14 * DAY))
    grant = decision["grant"]
    assert grant["template"] == "t1-positive-tests" and grant["row_scope"] == {"areas": ["E06000016"]}
    assert grant["tiers"] == [{"name": "dispute", "roles": ["dph"], "other_fields": "drop", "fields": ANALYST_FIELDS}]
    assert world.state.grants["dispute-d-1"] == grant
    review = world.dispute("d-1-review")
    assert (review.kind, review.state, review.tier, review.urgency) == ("provisional-review", "awaiting", 0, "urgent")
    assert review.challenges["decision_id"] == "dispute-d-1"
    assert review.deadline == START + 7 * H + 2 * H


def test_without_a_minimised_tier_even_an_emergency_default_leaves_the_refusal() -> None:
    world = in_emergency()
    world.catalog["templates"]["t1-positive-tests"]["minimised_tier"] = None
    world.raise_()
    world.at(START + 7 * H).tick()
    decision = world.dispute().decision or {}
    assert decision["outcome"] == "refused" and "no template" in decision["reason"]
    assert "d-1-review" not in world.state.disputes


def test_a_contested_grant_defaults_to_the_challenged_decision_standing() -> None:
    world = in_emergency("national")
    world.raise_(UKHSA_IG, refusal(kind="grant-contested", subscriber=MANCHESTER, fields=(),
                                   decision_id="t1-manchester"))
    world.at(START + 5 * H).tick()
    decision = world.dispute().decision or {}
    assert decision["outcome"] == "refused" and "challenged decision stands" in decision["reason"]
    assert "revoke_agreements" not in decision and world.state.revocations == {}


@pytest.mark.parametrize("level", ["normal", "enhanced", "emergency"])
def test_no_dispute_outlives_its_bound_even_if_the_clock_is_read_once_much_later(level: str) -> None:
    def raised() -> World:
        world = World() if level == "normal" else in_emergency("national")
        if level == "enhanced":
            world.declare("national", level)
        world.raise_()
        return world

    bound = START + World().ladder.bound(level)
    world = raised()
    world.at(bound - dt.timedelta(seconds=1)).tick()
    assert world.dispute().state == "awaiting"

    world = raised()
    events = world.at(bound + 30 * DAY).tick()        # one call, long after
    defaulted = [e for e in events if e["type"] == "defaulted"]
    assert world.dispute().state == "defaulted" and len(defaulted) == 1
    assert defaulted[0]["data"]["due_at"] == stamp(bound)


def test_an_unreviewed_provisional_grant_runs_its_course() -> None:
    world = in_emergency()
    world.raise_()
    world.at(START + 7 * H).tick()
    world.enforce()
    world.at(START + 14 * H).tick()
    review = world.dispute("d-1-review")
    assert review.state == "defaulted" and (review.decision or {})["outcome"] == "granted"
    assert "dispute-d-1" in world.state.grants


def test_a_subscriber_dropped_from_the_catalog_stops_neither_deadlines_nor_declarations() -> None:
    world = World()
    world.raise_()
    world.raise_(MANCHESTER_DPH, refusal(fields=("ethnicity",)), ident="d-2")
    del world.catalog["bodies"][LEICESTER]       # a later catalog no longer lists Leicester
    assert types(world.declare("national", "emergency")) == ["emergency-declared", "deadline-changed",
                                                             "deadline-changed"]
    world.at(START + 7 * H).tick()
    assert world.dispute().state == "defaulted" and world.dispute("d-2").state == "defaulted"


# -- emergency declarations ---------------------------------------------------------------------------------------


def test_a_regional_emergency_shortens_open_deadlines_in_that_region_only() -> None:
    world = World()
    world.raise_()
    world.raise_(MANCHESTER_DPH, refusal(fields=("ethnicity",)), ident="d-2")
    events = world.later(hours=1).declare(EAST_MIDLANDS, "emergency")
    assert types(events) == ["emergency-declared", "deadline-changed"]
    # The tier gets the emergency deadline (2 h) from the declaration, not from when it opened.
    assert (world.dispute().level, world.dispute().deadline) == ("emergency", START + 3 * H)
    assert (world.dispute("d-2").level, world.dispute("d-2").deadline) == ("normal", START + 5 * DAY)
    assert types(world.at(START + 3 * H).tick()) == ["tier-opened"]
    assert world.dispute().deadline == START + 7 * H       # the next tier runs at the declared level


def test_a_national_emergency_shortens_every_open_deadline_and_never_lengthens_one() -> None:
    world = in_emergency()
    world.raise_()
    world.raise_(MANCHESTER_DPH, refusal(fields=("ethnicity",)), ident="d-2")
    assert types(world.declare("national", "enhanced")) == ["emergency-declared", "deadline-changed"]
    assert world.dispute("d-2").deadline == START + DAY and world.dispute().deadline == START + 2 * H
    assert types(world.declare("national", "normal")) == ["emergency-lifted"]
    assert world.dispute("d-2").deadline == START + DAY and world.state.level("national") == "normal"


def test_declaring_late_gives_the_open_tier_the_new_deadline_from_the_declaration() -> None:
    world = World()
    world.raise_()
    world.later(hours=12).declare("national", "emergency")
    assert world.dispute().deadline == START + 14 * H      # not 2 h after it opened: that would default at once
    assert world.tick() == []
    assert types(world.at(START + 14 * H).tick()) == ["tier-opened"]


@pytest.mark.parametrize(("actor", "scope", "level", "error"), [
    (board("nhsd"), "national", "emergency", NotAuthorisedError),
    (person("dhsc", "ig-lead"), "national", "emergency", NotAuthorisedError),
    (DPH, EAST_MIDLANDS, "emergency", NotAuthorisedError),
    (board("dhsc"), "E06000016", "emergency", GovernanceError),
    (board("dhsc"), "national", "panic", GovernanceError),
])
def test_only_declarers_declare_for_a_nation_or_an_e12_region(actor: Any, scope: str, level: str,
                                                              error: type[Exception]) -> None:
    world = World()
    with pytest.raises(error):
        world.declare(scope, level, actor)
    assert world.state.emergency == {}


def test_a_declaration_needs_a_reason_and_the_arbiter_may_declare() -> None:
    world = World()
    with pytest.raises(GovernanceError, match="written reason"):
        world.run(lambda ctx: escalation.declare(ctx, board("ukhsa"), "national", "enhanced", " "))
    world.declare("national", "enhanced", ARBITER)
    assert world.state.level("national") == "enhanced"


# -- break-glass --------------------------------------------------------------------------------------------------


def _broken(world: World) -> list[GovernanceEvent]:
    return world.run(lambda ctx: escalation.break_glass(ctx, DPH, T1, "health-protection", "Care home outbreak.",
                                                        "d-bg"))


def test_break_glass_gives_a_dph_in_an_emergency_the_templates_access_now_and_opens_a_review() -> None:
    world = in_emergency()
    assert types(_broken(world)) == ["break-glass", "raised", "tier-opened"]
    grant = world.state.grants["break-glass-d-bg"]
    assert grant["tiers"] == [{"name": "dispute", "roles": ["dph"], "other_fields": "keep",
                               "fields": T1_TIERS[0]["fields"]}]
    assert grant["valid_until"] == stamp(START + 3 * DAY) and grant["row_scope"] == {"areas": ["E06000016"]}
    review = world.dispute("d-bg")
    assert (review.kind, review.state, review.urgency, review.deadline) == ("break-glass-review", "awaiting",
                                                                           "immediate", START + 2 * H)


@pytest.mark.parametrize(("scope", "actor", "purpose", "error"), [
    (None, DPH, "health-protection", NotAuthorisedError),
    ("E12000002", DPH, "health-protection", NotAuthorisedError),            # Manchester's region, not Leicester's
    (EAST_MIDLANDS, person(LEICESTER, "analyst"), "health-protection", NotAuthorisedError),
    (EAST_MIDLANDS, DPH, "marketing", GovernanceError),
])
def test_break_glass_needs_the_emergency_where_the_dph_is(scope: str | None, actor: Any, purpose: str,
                                                          error: type[Exception]) -> None:
    world = World() if scope is None else in_emergency(scope)
    with pytest.raises(error):
        world.run(lambda ctx: escalation.break_glass(ctx, actor, T1, purpose, "now", "d-bg"))
    assert world.state.grants == {}
    with pytest.raises(GovernanceError, match="justification"):
        in_emergency().run(lambda ctx: escalation.break_glass(ctx, DPH, T1, "health-protection", " ", "d-bg"))


def test_a_refused_review_revokes_the_break_glass_grant() -> None:
    world = in_emergency()
    _broken(world)
    world.decide(UKHSA_IG, granted("Not needed.", outcome="refused"), ident="d-bg")
    assert (world.dispute("d-bg").decision or {})["revoke_grants"] == ["break-glass-d-bg"]
    assert world.state.grants == {}


def test_a_review_may_confirm_the_access_or_set_its_end() -> None:
    world = in_emergency()
    _broken(world)
    world.decide(UKHSA_IG, granted(outcome="granted-for-period", until=START + DAY), ident="d-bg")
    assert world.state.grants["break-glass-d-bg"]["valid_until"] == stamp(START + DAY)
    world = in_emergency()
    _broken(world)
    world.decide(UKHSA_IG, granted(), ident="d-bg")
    assert world.state.grants["break-glass-d-bg"]["valid_until"] == stamp(START + 3 * DAY)


def test_an_unreviewed_break_glass_is_not_confirmed_and_is_revoked_at_its_expiry() -> None:
    world = in_emergency()
    _broken(world)
    world.at(START + 7 * H).tick()                  # every tier of the review let its deadline pass
    review = world.dispute("d-bg")
    assert review.state == "defaulted"
    assert (review.decision or {})["outcome"] == "granted-for-period"
    assert (review.decision or {})["until"] == stamp(START + 3 * DAY)
    assert "revoked at its expiry" in (review.decision or {})["reason"]
    world.enforce("d-bg")
    assert world.at(START + 3 * DAY - dt.timedelta(seconds=1)).run(escalation.expired) == []
    [ended] = world.at(START + 3 * DAY).run(escalation.expired)
    assert (ended["type"], ended["data"]["revoke_grants"], ended["data"]["review"]) == (
        "break-glass-expired", ["break-glass-d-bg"], "d-bg")
    assert world.state.grants == {} and "break-glass-d-bg" in world.state.ended_grants
    assert world.run(escalation.expired) == []


def test_a_review_that_keeps_the_access_moves_its_expiry() -> None:
    world = in_emergency()
    _broken(world)
    world.decide(UKHSA_IG, granted(outcome="granted-for-period", until=START + 5 * DAY), ident="d-bg")
    assert world.at(START + 3 * DAY).run(escalation.expired) == []
    assert types(world.at(START + 5 * DAY).run(escalation.expired)) == ["break-glass-expired"]


def test_a_second_break_glass_waits_until_the_first_review_is_decided() -> None:
    world = in_emergency()
    _broken(world)
    with pytest.raises(GovernanceError, match=r"already broke glass on ukhsa\.positive-tests: its review d-bg is "
                                              r"awaiting at tier 1"):
        world.run(lambda ctx: escalation.break_glass(ctx, DPH, T1, "health-protection", "Again.", "d-bg2"))
    assert set(world.state.grants) == {"break-glass-d-bg"}
    # another body may break glass meanwhile; and once the review is decided, the first body may again
    world.decide(UKHSA_IG, granted("Not needed.", outcome="refused"), ident="d-bg")
    world.enforce("d-bg")
    assert types(world.run(lambda ctx: escalation.break_glass(ctx, DPH, T1, "health-protection", "New outbreak.",
                                                              "d-bg2"))) == ["break-glass", "raised", "tier-opened"]


# -- appeals, comments, closing -----------------------------------------------------------------------------------


def _refused_at_first_tier() -> World:
    world = World()
    world.raise_()
    world.decide(UKHSA_IG, granted("Not needed.", outcome="refused"))
    return world


def test_an_appeal_by_a_party_after_enforcement_opens_the_next_tier() -> None:
    world = _refused_at_first_tier()
    with pytest.raises(GovernanceError, match="is decided; only a decided and enforced dispute is appealed"):
        world.run(lambda ctx: escalation.appeal(ctx, "d-1", DPH, "We need it."))
    assert types(world.enforce()) == ["enforced"] and world.dispute().closes_at == START + 14 * DAY
    with pytest.raises(NotAuthorisedError, match="only a party"):
        world.run(lambda ctx: escalation.appeal(ctx, "d-1", board("dhsc"), "I disagree."))
    with pytest.raises(GovernanceError, match="written reason"):
        world.run(lambda ctx: escalation.appeal(ctx, "d-1", DPH, "  "))
    events = world.later(days=1).run(lambda ctx: escalation.appeal(ctx, "d-1", DPH, "We need it."))
    assert types(events) == ["appealed", "tier-opened"]
    dispute = world.dispute()
    assert (dispute.state, dispute.tier, dispute.deadline, dispute.decision) == ("awaiting", 1, START + 11 * DAY, None)


def test_a_dispute_decided_at_the_last_tier_closes_at_once_and_has_no_appeal() -> None:
    world = World()
    world.raise_()
    world.at(START + 15 * DAY).tick()
    world.decide(ARBITER, granted("Arbiter: share it."))
    assert types(world.enforce()) == ["enforced", "closed"]
    with pytest.raises(GovernanceError, match="is closed"):
        world.run(lambda ctx: escalation.appeal(ctx, "d-1", UKHSA_IG, "Too much."))


def test_a_dispute_closes_when_its_appeal_window_passes_and_no_appeal_comes_after() -> None:
    world = _refused_at_first_tier()
    world.enforce()
    world.at(START + 14 * DAY)
    with pytest.raises(GovernanceError, match="appeal window of dispute d-1 closed"):
        world.run(lambda ctx: escalation.appeal(ctx, "d-1", DPH, "Late."))
    assert world.at(START + 14 * DAY - dt.timedelta(seconds=1)).tick() == []
    assert types(world.at(START + 14 * DAY).tick()) == ["closed"]


def test_parties_and_deciders_comment_on_open_disputes_only() -> None:
    world = World()
    world.raise_()
    world.run(lambda ctx: escalation.comment(ctx, "d-1", board("nis"), " Evidence seen. "))
    assert world.dispute().timeline[-1]["data"] == {"text": "Evidence seen."}
    with pytest.raises(NotAuthorisedError, match="neither a party"):
        world.run(lambda ctx: escalation.comment(ctx, "d-1", MANCHESTER_DPH, "Me too."))
    with pytest.raises(GovernanceError, match="needs text"):
        world.run(lambda ctx: escalation.comment(ctx, "d-1", DPH, ""))
    world.at(START + 20 * DAY).tick()
    world.enforce()
    with pytest.raises(GovernanceError, match="d-1 is closed"):
        world.run(lambda ctx: escalation.comment(ctx, "d-1", DPH, "After the end."))
