"""Raising and deciding disputes: who may raise what, who may decide at each tier, and the grants decisions make."""

from __future__ import annotations

import datetime as dt
from typing import Any

import pytest

from broker.domain import adjudication, escalation
from broker.domain.adjudication import Decision, DisputeRequest
from broker.domain.disputes import stamp
from broker.errors import GovernanceError, NotAuthorisedError
from tests.unit.governance_catalog import (
    EAST_MIDLANDS,
    FOOD_BANK,
    LEICESTER,
    MANCHESTER,
    T1,
    catalog,
)
from tests.unit.governance_fakes import START
from tests.unit.governance_support import DPH, UKHSA_IG, World, board, granted, person, refusal, types

DAY = dt.timedelta(days=1)
MANCHESTER_DPH = person(MANCHESTER, "dph")


def contest(**changes: Any) -> DisputeRequest:
    fields: dict[str, Any] = {"kind": "grant-contested", "stream": T1, "role": "dph", "purpose": "health-protection",
                              "justification": "Manchester's DPH left; nobody there is trained to hold the line list.",
                              "decision_id": "t1-manchester"}
    fields.update(changes)
    return DisputeRequest(**fields)


def at_board(world: World) -> World:
    """Leicester's dispute after the publisher let its 5 days pass."""
    world.raise_()
    world.later(days=5).tick()
    assert world.dispute().tier == 1
    return world


# -- raising ------------------------------------------------------------------------------------------------------


def test_raising_opens_the_first_tier_with_its_deadline_at_the_subscribers_level() -> None:
    world = World()
    events = world.run(lambda ctx: adjudication.raise_dispute(ctx, DPH, refusal(justification="  need it  "), "d-1"))
    assert types(events) == ["raised", "tier-opened"]
    dispute = world.dispute()
    assert (dispute.state, dispute.tier, dispute.level, dispute.deadline) == ("awaiting", 0, "normal", START + 5 * DAY)
    assert (dispute.publisher, dispute.subscriber, dispute.justification) == ("ukhsa", LEICESTER, "need it")
    assert dict(dispute.sought) == {"fields": ["lsoa", "name", "specimen_date"], "areas": ["E06000016"], "until": None}
    assert dispute.challenges["decision_id"] == "plan-refused"


def test_a_regional_emergency_shortens_the_first_deadline_only_in_that_region() -> None:
    world = World()
    world.declare(EAST_MIDLANDS, "emergency")
    leicester = world.raise_()
    manchester = world.raise_(MANCHESTER_DPH, refusal(fields=("ethnicity",)), ident="d-2")
    assert (leicester.level, leicester.deadline) == ("emergency", START + dt.timedelta(hours=2))
    assert (manchester.level, manchester.deadline) == ("normal", START + 5 * DAY)


@pytest.mark.parametrize(("change", "error"), [
    ({"stream": "ukhsa.favourite-colours"}, "unknown stream 'ukhsa.favourite-colours'"),
    ({"fields": ("lsoa", "shoe_size")}, "has no field.s. shoe_size"),
    ({"fields": ()}, "names no fields"),
    ({"areas": ("E06000016", "E08000003")}, "does not serve E08000003"),
    ({"justification": "   "}, "needs a justification"),
    ({"kind": "break-glass-review"}, "not 'break-glass-review'"),
    ({"urgency": "yesterday"}, "urgency 'yesterday'"),
    ({"role": "environmental-health"}, "has no role 'environmental-health'"),
    ({"subscriber": "nowhere-council"}, "unknown body 'nowhere-council'"),
    ({"backfill": "P1M"}, "backfill 'P1M' is neither an ISO 8601 duration"),
])
def test_raising_refuses_a_malformed_request(change: dict[str, Any], error: str) -> None:
    world = World()
    with pytest.raises(GovernanceError, match=error):
        world.raise_(request=refusal(**change))
    assert world.state.disputes == {}


def test_the_actor_must_hold_the_role_it_acts_in() -> None:
    with pytest.raises(NotAuthorisedError, match="has no role 'arbiter'"):
        World().raise_(person(LEICESTER, "arbiter"))


def test_a_role_asks_under_the_purpose_its_agreement_already_has() -> None:
    with pytest.raises(GovernanceError, match="under t1-manchester for purpose 'health-protection'"):
        World().raise_(MANCHESTER_DPH, refusal(purpose="research"))
    World().raise_(MANCHESTER_DPH, refusal(purpose="health-protection", kind="restriction"))


def test_only_the_publisher_may_contest_a_grant() -> None:
    with pytest.raises(NotAuthorisedError, match=r"only the stream's publisher \(ukhsa\)"):
        World().raise_(MANCHESTER_DPH, contest())


def test_a_publisher_contesting_an_agreement_skips_only_its_own_reconsideration() -> None:
    dispute = World().raise_(UKHSA_IG, contest())
    # The board still has five members who are not parties; only the publisher's own tier is skipped.
    assert (dispute.tier, dispute.subscriber, dispute.publisher) == (1, MANCHESTER, "ukhsa")
    assert dispute.deadline == START + 10 * DAY


@pytest.mark.parametrize(("change", "error"), [
    ({"decision_id": "t1-nowhere"}, "names no agreement or grant"),
    ({"decision_id": "t3-leicester"}, f"t3-leicester is an agreement for {LEICESTER} of nhsd.shielded-patients"),
    ({"subscriber": LEICESTER}, f"t1-manchester is an agreement for {MANCHESTER} of {T1}, not for {LEICESTER}"),
])
def test_a_contest_names_an_agreement_of_the_contested_stream(change: dict[str, Any], error: str) -> None:
    doc = catalog()
    doc["agreements"]["t3-leicester"] = {**doc["agreements"]["t1-manchester"], "stream": "nhsd.shielded-patients",
                                         "publisher": "nhsd", "subscriber": LEICESTER}
    with pytest.raises(GovernanceError, match=error):
        World(doc).raise_(UKHSA_IG, contest(**change))


def _receiving_leicester() -> World:
    doc = catalog()
    doc["agreements"]["t1-leicester"] = {**doc["agreements"]["t1-manchester"], "subscriber": LEICESTER,
                                         "row_scope": {"areas": ["E06000016"]}}
    return World(doc)


def test_a_body_may_seek_access_for_its_processor_only_for_a_stream_it_receives() -> None:
    for_processor = refusal(subscriber=FOOD_BANK, role="food-parcels", purpose="shielding-support")
    with pytest.raises(NotAuthorisedError, match="for a processor of a stream it already receives"):
        World().raise_(DPH, for_processor)
    dispute = _receiving_leicester().raise_(DPH, for_processor)
    assert (dispute.subscriber, dispute.challenger.body) == (FOOD_BANK, LEICESTER)
    assert dispute.parties == {FOOD_BANK, LEICESTER, "ukhsa"}


def test_receiving_a_stream_does_not_let_a_body_seek_it_for_another_council() -> None:
    with pytest.raises(NotAuthorisedError, match="processor"):
        _receiving_leicester().raise_(DPH, refusal(subscriber=MANCHESTER, areas=("E08000003",)))


# -- deciding -----------------------------------------------------------------------------------------------------


def test_the_publishers_ig_lead_decides_at_reconsideration() -> None:
    world = World()
    world.raise_()
    events = world.decide(UKHSA_IG, granted())
    assert types(events) == ["approved", "decided"]
    decision = world.dispute().decision or {}
    assert decision["by"] == [UKHSA_IG.to_json()] and decision["grant"]["id"] == "dispute-d-1"


@pytest.mark.parametrize(("actor", "error"), [
    (person("blaby-district-council", "ig-lead"), "not one of its deciders"),
    (board("ukhsa"), "not one of its deciders"),
    (person(LEICESTER, "ig-lead"), "not one of its deciders"),
    (person("accord-arbiter", "arbiter"), "not one of its deciders"),
])
def test_only_the_tiers_deciders_decide(actor: Any, error: str) -> None:
    world = World()
    world.raise_()
    with pytest.raises(NotAuthorisedError, match=error):
        world.decide(actor, granted())
    assert world.dispute().approvals == ()


def test_a_party_cannot_decide_at_the_board() -> None:
    world = at_board(World())
    with pytest.raises(NotAuthorisedError, match="ukhsa is a party to dispute d-1"):
        world.decide(board("ukhsa"), granted())


def test_the_challenger_never_decides_even_where_its_body_sits() -> None:
    world = World()
    world.raise_(UKHSA_IG, contest())
    with pytest.raises(NotAuthorisedError, match="party"):
        world.decide(board("ukhsa"), granted())


def test_a_decision_needs_a_written_reason() -> None:
    world = World()
    world.raise_()
    with pytest.raises(GovernanceError, match="written reason"):
        world.decide(UKHSA_IG, granted(reason="  "))
    assert world.dispute().state == "awaiting"


def test_a_tier_whose_deadline_has_passed_can_no_longer_decide() -> None:
    world = World()
    world.raise_()
    world.later(days=5)
    with pytest.raises(GovernanceError, match="deadline"):
        world.decide(UKHSA_IG, granted())


def test_the_board_decides_when_two_bodies_agree_on_the_same_proposal() -> None:
    world = at_board(World())
    assert types(world.decide(board("dhsc"), granted("Outbreak control needs it."))) == ["approved"]
    assert world.dispute().state == "awaiting"
    with pytest.raises(GovernanceError, match="dhsc has already approved at tier 2"):
        world.decide(board("dhsc"), granted("again"))
    assert types(world.decide(board("nhse"), granted("Agreed."))) == ["approved", "decided"]
    decision = world.dispute().decision or {}
    assert [a["body"] for a in decision["by"]] == ["dhsc", "nhse"]
    assert decision["reason"] == "Outbreak control needs it.; Agreed." and decision["tier"] == 1


def test_differing_board_proposals_do_not_combine() -> None:
    world = at_board(World())
    world.decide(board("dhsc"), granted())
    part = granted(outcome="granted-in-part", fields=("lsoa",))
    assert types(world.decide(board("nhse"), part)) == ["approved"]
    assert types(world.decide(board("nis"), part)) == ["approved", "decided"]
    decision = world.dispute().decision or {}
    assert [a["body"] for a in decision["by"]] == ["nhse", "nis"] and decision["outcome"] == "granted-in-part"
    assert set(decision["grant"]["tiers"][0]["fields"]) == {"lsoa"}


def test_an_unknown_outcome_is_refused() -> None:
    world = World()
    world.raise_()
    with pytest.raises(GovernanceError, match="outcome 'maybe'"):
        world.decide(UKHSA_IG, granted(outcome="maybe"))


# -- what decisions grant -----------------------------------------------------------------------------------------


def _decided(decision: Decision, request: DisputeRequest | None = None) -> dict[str, Any]:
    world = World()
    world.raise_(request=request)
    world.decide(UKHSA_IG, decision)
    return dict(world.dispute().decision or {})


def test_a_grant_is_agreement_shaped_for_the_sought_fields_and_areas() -> None:
    grant = _decided(granted())["grant"]
    assert grant["tiers"] == [{"name": "dispute", "roles": ["dph"], "other_fields": "drop", "fields": {
        name: {"transform": "keep", "method": None, "as": None, "params": {}}
        for name in ("lsoa", "name", "specimen_date")}}]
    assert (grant["publisher"], grant["subscriber"], grant["stream"], grant["purpose"]) == (
        "ukhsa", LEICESTER, T1, "health-protection")
    assert grant["row_scope"] == {"areas": ["E06000016"]} and grant["source"] == {"dispute": "d-1"}
    assert (grant["valid_from"], grant["valid_until"]) == (stamp(START), stamp(START + 90 * DAY))
    assert grant["review_date"] == (START + 90 * DAY).date().isoformat()


def test_a_grant_runs_until_the_sought_end_or_the_decided_one() -> None:
    sought = START + 30 * DAY
    assert _decided(granted(), refusal(until=sought))["grant"]["valid_until"] == stamp(sought)
    period = granted(outcome="granted-for-period", until=START + 7 * DAY)
    assert _decided(period)["grant"]["valid_until"] == stamp(START + 7 * DAY)
    with pytest.raises(GovernanceError, match="needs `until`"):
        _decided(granted(outcome="granted-for-period"))
    with pytest.raises(GovernanceError, match="not in the future"):
        _decided(granted(outcome="granted-for-period", until=START - DAY))


def test_history_sought_with_a_dispute_is_asked_for_by_its_grant() -> None:
    assert _decided(granted(), refusal(backfill="P14D"))["grant"]["backfill"] == "P14D"
    assert "backfill" not in _decided(granted())["grant"]


def test_granted_in_part_only_narrows_what_was_sought() -> None:
    narrow = _decided(granted(outcome="granted-in-part", fields=("lsoa",), areas=("E06000016",)))["grant"]
    assert list(narrow["tiers"][0]["fields"]) == ["lsoa"] and narrow["row_scope"] == {"areas": ["E06000016"]}
    with pytest.raises(GovernanceError, match="fields not sought: nhs_number"):
        _decided(granted(outcome="granted-in-part", fields=("lsoa", "nhs_number")))
    with pytest.raises(GovernanceError, match="areas not sought: E08000003"):
        _decided(granted(outcome="granted-in-part", areas=("E08000003",)))
    with pytest.raises(GovernanceError, match="names the fields or areas"):
        _decided(granted(outcome="granted-in-part"))


def test_a_refusal_grants_nothing() -> None:
    decision = _decided(granted(outcome="refused"))
    assert decision["outcome"] == "refused" and "grant" not in decision and "revoke_grants" not in decision


def test_an_upheld_contest_revokes_the_agreement_and_a_refused_one_leaves_it() -> None:
    world = World()
    world.raise_(UKHSA_IG, contest())
    world.decide(board("dhsc"), granted())
    world.decide(board("nhse"), granted())
    assert (world.dispute().decision or {})["revoke_agreements"] == ["t1-manchester"]
    assert set(world.state.revocations) == {"t1-manchester"}
    with pytest.raises(GovernanceError, match=r"withdrawn \(granted\) or stands \(refused\)"):
        adjudication.decision_effect(world.ctx(), world.dispute(), granted(outcome="granted-in-part", fields=()))


def test_a_refusal_on_appeal_takes_back_the_grant_the_lower_tier_made() -> None:
    world = World()
    world.raise_()
    world.decide(UKHSA_IG, granted())
    world.enforce()
    assert "dispute-d-1" in world.state.grants
    world.later(hours=1).run(lambda ctx: escalation.appeal(ctx, "d-1", UKHSA_IG, "Reconsidered: too much."))
    world.decide(board("dhsc"), granted(outcome="refused"))
    world.decide(board("nhse"), granted(outcome="refused"))
    assert (world.dispute().decision or {})["revoke_grants"] == ["dispute-d-1"]
    assert "dispute-d-1" not in world.state.grants


def test_a_reversed_contest_reinstates_the_agreement() -> None:
    world = World()
    world.raise_(UKHSA_IG, contest())
    world.decide(board("dhsc"), granted())
    world.decide(board("nhse"), granted())
    world.enforce()
    world.later(hours=1).run(lambda ctx: escalation.appeal(ctx, "d-1", MANCHESTER_DPH, "We have trained staff."))
    world.decide(person("accord-arbiter", "arbiter"), granted(outcome="refused", reason="The agreement stands."))
    assert (world.dispute().decision or {})["reinstate_agreements"] == ["t1-manchester"]
    assert world.state.revocations == {}
