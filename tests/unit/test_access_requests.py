"""Access requests as pure commands: validation against the template, N of M with one approver of each required
role, no double approval, no approval by the requester, refusal, the ladder's escalation and decisive default,
expiry with the history kept, and the measured approval-to-first-record."""

from __future__ import annotations

import datetime as dt
from typing import Any

import pytest

from broker.domain import access_rules, adjudication, escalation
from broker.domain.access_requests import AccessRequest, parse_duration
from broker.domain.access_rules import RequestForm
from broker.domain.adjudication import Decision
from broker.domain.disputes import stamp
from broker.domain.governance import GovernanceState, apply
from broker.domain.ladder import Actor
from broker.errors import GovernanceError, InvalidRequestError, NotAuthorisedError
from tests.unit.governance_catalog import LEICESTER, LEICESTERSHIRE, LEICESTERSHIRE_AREAS, MANCHESTER, T1, catalog
from tests.unit.governance_support import World, board, person

T1_TEMPLATE = "t1-positive-tests"
COUNTY_DPH = Actor(LEICESTERSHIRE, "dph", "Director of Public Health, Leicestershire")
IG_LEAD = Actor("ukhsa", "ig-lead", "Ruth, UKHSA IG lead")
CALDICOTT = Actor("ukhsa", "caldicott-guardian", "Sam, UKHSA Caldicott guardian")


def _world() -> World:
    doc = catalog()
    doc["bodies"]["ukhsa"]["roles"] = ["caldicott-guardian", "governance-board", "ig-lead"]
    doc["templates"][T1_TEMPLATE]["approval"] = {"approvals": 2, "roles": ["caldicott-guardian", "ig-lead"],
                                                 "one_of_each": ["caldicott-guardian", "ig-lead"]}
    return World(doc)


def _form(**changes: Any) -> RequestForm:
    values: dict[str, Any] = {
        "template": T1_TEMPLATE, "purpose": "health-protection", "duration": "P30D", "backfill": "P28D",
        "justification": "A cluster in Charnwood: we need the line list to trace contacts.",
        "fields": ("specimen_id", "name", "lsoa", "specimen_date")}
    values.update(changes)
    return RequestForm(**values)


def _make(world: World, actor: Actor = COUNTY_DPH, form: RequestForm | None = None,
          ident: str = "r-1") -> AccessRequest:
    world.run(lambda ctx: access_rules.make(ctx, actor, form or _form(), ident))
    return world.state.request(ident)


def _review(world: World, actor: Actor, verdict: str = "approve", reason: str = "Purpose and need made out.",
            ident: str = "r-1") -> AccessRequest:
    world.run(lambda ctx: access_rules.review(ctx, ident, actor, verdict, reason))
    return world.state.request(ident)


def _enforce(world: World, ident: str = "r-1") -> AccessRequest:
    world.run(lambda ctx: access_rules.enforced(ctx, ctx.state.request(ident), []))
    return world.state.request(ident)


def _tick(world: World) -> list[str]:
    return [str(e["type"]) for e in world.run(access_rules.due)]


def test_a_request_is_made_against_its_template_and_waits_at_the_publishers_reviewers() -> None:
    world = _world()
    request = _make(world)
    assert (request.state, request.tier, request.publisher, request.stream) == ("awaiting", 0, "ukhsa", T1)
    assert request.areas == tuple(LEICESTERSHIRE_AREAS) and request.backfill == "P28D"
    assert request.deadline == world.now + dt.timedelta(days=5)
    who = access_rules.reviewers(world.ctx(), request)
    assert who.bodies == {"ukhsa"} and who.one_of_each == ("caldicott-guardian", "ig-lead")


@pytest.mark.parametrize(("changes", "says"), [
    ({"template": "t9-nothing"}, "unknown template 't9-nothing'"),
    ({"purpose": "marketing"}, "is for purpose 'health-protection'"),
    ({"fields": ("specimen_id", "favourite_colour")}, "does not give favourite_colour"),
    ({"fields": ()}, "names no fields"),
    ({"duration": "P1Y"}, "not an ISO 8601 duration"),
    ({"duration": "P365D"}, "at most the ladder's grant period (90 days)"),
    ({"backfill": "last month"}, "backfill (history wanted)"),
    ({"areas": ("E06000016",)}, "cannot ask for rows of E06000016"),
    ({"legal_basis": ("dea-2017-part-5",)}, "cannot be used under dea-2017-part-5"),
    ({"justification": "  "}, "needs a justification"),
])
def test_a_request_that_does_not_fit_its_template_is_refused_saying_what_to_fix(changes: dict[str, Any],
                                                                                  says: str) -> None:
    with pytest.raises(InvalidRequestError, match=says.replace("(", r"\(").replace(")", r"\)")):
        _make(_world(), form=_form(**changes))


def test_a_role_the_template_does_not_serve_cannot_ask() -> None:
    with pytest.raises(InvalidRequestError, match="gives no access to role 'ig-lead'"):
        _make(_world(), actor=person(LEICESTER, "ig-lead"))


def test_other_fields_keep_never_reaches_an_unnamed_direct_identifier() -> None:
    world = _world()
    world.catalog["streams"][T1]["fields"]["phone"] = {"tags": ["direct-identifier"]}
    with pytest.raises(InvalidRequestError, match="does not give phone"):
        _make(world, form=_form(fields=("lsoa", "phone")))
    assert _make(world, form=_form(fields=("lsoa", "ethnicity", "nhs_number"))).state == "awaiting"


def test_the_analyst_tier_gives_only_its_own_fields() -> None:
    with pytest.raises(InvalidRequestError, match="does not give name"):
        _make(_world(), actor=person(LEICESTERSHIRE, "analyst"), form=_form(fields=("lsoa", "name")))


def test_two_approvals_from_the_two_required_roles_approve_and_instantiate_the_template() -> None:
    world = _world()
    _make(world)
    assert _review(world, IG_LEAD).state == "awaiting"        # 1 of 2
    approved = _review(world, CALDICOTT)
    assert approved.state == "approved" and approved.approved_at == world.now
    grant = (approved.decision or {})["grant"]
    assert grant["id"] == "request-r-1" and grant["template"] == T1_TEMPLATE
    assert grant["subscriber"] == LEICESTERSHIRE and grant["tiers"][0]["roles"] == ["dph"]
    assert sorted(grant["tiers"][0]["fields"]) == ["lsoa", "name", "specimen_date", "specimen_id"]
    assert grant["valid_until"] == stamp(world.now + dt.timedelta(days=30)) and grant["backfill"] == "P28D"
    assert grant["backfill_from"] == stamp(world.now - dt.timedelta(days=28))
    assert [s["name"] for s in grant["signatories"]] == [IG_LEAD.person, CALDICOTT.person]
    assert world.state.grants["request-r-1"] == grant          # in force as a grant until it ends


def test_n_approvals_are_not_enough_without_one_of_each_required_role() -> None:
    world = _world()
    _make(world)
    _review(world, IG_LEAD)
    second_ig_lead = Actor("ukhsa", "ig-lead", "Another UKHSA IG lead")
    assert _review(world, second_ig_lead).state == "awaiting"   # 2 of 2, but no Caldicott guardian
    assert _review(world, CALDICOTT).state == "approved"


def test_an_approver_cannot_approve_twice_even_in_another_role() -> None:
    world = _world()
    _make(world)
    _review(world, IG_LEAD)
    with pytest.raises(GovernanceError, match="already reviewed"):
        _review(world, IG_LEAD)
    with pytest.raises(GovernanceError, match="already reviewed"):
        _review(world, Actor("ukhsa", "caldicott-guardian", IG_LEAD.person))
    assert world.state.request("r-1").state == "awaiting"


def test_the_requesting_body_cannot_approve_and_others_are_not_reviewers() -> None:
    world = _world()
    _make(world, actor=person(LEICESTER, "dph"))
    with pytest.raises(NotAuthorisedError, match="cannot review its own request"):
        _review(world, person(LEICESTER, "ig-lead"))
    with pytest.raises(NotAuthorisedError, match="its reviewers are"):
        _review(world, person("nhsd", "ig-lead"))


def test_a_refusal_needs_a_reason_and_ends_the_request() -> None:
    world = _world()
    _make(world)
    with pytest.raises(InvalidRequestError, match="written reason"):
        _review(world, IG_LEAD, "refuse", " ")
    refused = _review(world, IG_LEAD, "refuse", "A bespoke DSA must be signed first.")
    assert refused.state == "refused" and (refused.decision or {})["reason"] == "A bespoke DSA must be signed first."
    assert "request-r-1" not in world.state.grants
    with pytest.raises(GovernanceError, match="is refused"):
        _review(world, CALDICOTT)


def test_a_role_already_receiving_the_stream_for_another_purpose_cannot_ask() -> None:
    world = _world()
    world.catalog["agreements"]["t1-manchester"]["purpose"] = "outbreak-control"
    with pytest.raises(GovernanceError, match="under t1-manchester for purpose 'outbreak-control'"):
        _make(world, actor=person(MANCHESTER, "dph"))


def test_one_open_request_per_role_and_template() -> None:
    world = _world()
    _make(world)
    with pytest.raises(GovernanceError, match="already has request r-1"):
        _make(world, ident="r-2")


def test_an_unanswered_request_climbs_the_ladder_and_the_board_may_approve() -> None:
    world = _world()
    made = _make(world)
    assert made.deadline is not None
    world.now = made.deadline
    assert _tick(world) == ["request-tier-opened"]
    escalated = world.state.request("r-1")
    assert escalated.tier == 1 and escalated.deadline == made.deadline + dt.timedelta(days=10)
    who = access_rules.reviewers(world.ctx(), escalated)
    assert "ukhsa" not in who.bodies and who.approvals == 2       # the publisher is a party now
    with pytest.raises(NotAuthorisedError):
        _review(world, IG_LEAD)
    _review(world, board("dhsc"))
    assert _review(world, board("nhsd")).state == "approved"


def test_a_declared_emergency_shortens_a_waiting_requests_deadline() -> None:
    world = _world()
    made = _make(world)
    world.now += dt.timedelta(hours=1)
    events = world.run(lambda ctx: escalation.declare(ctx, board("dhsc"), "E12000004", "emergency", "surge")
                       + access_rules.shortened(ctx, "E12000004", "emergency"))
    assert [e["type"] for e in events] == ["emergency-declared", "request-deadline-changed"]
    shortened = world.state.request("r-1")
    assert shortened.deadline == world.now + dt.timedelta(hours=2) and shortened.level == "emergency"
    assert made.deadline is not None and shortened.deadline < made.deadline
    assert access_rules.shortened(world.ctx(), "E12000002", "emergency") == []     # not its region


def test_an_unanswered_request_ends_by_the_decisive_default_within_the_ladders_bound() -> None:
    world = _world()
    made = _make(world)
    world.now = made.made_at + world.ladder.bound("normal")
    assert _tick(world) == ["request-tier-opened", "request-tier-opened", "request-defaulted"]
    ended = world.state.request("r-1")
    assert ended.state == "defaulted" and (ended.decision or {})["outcome"] == "refused"
    assert ended.decided_at is not None and ended.decided_at - made.made_at <= world.ladder.bound("normal")


def test_in_a_declared_emergency_the_default_is_a_provisional_grant_of_the_minimised_tier() -> None:
    world = _world()
    world.run(lambda ctx: escalation.declare(ctx, board("dhsc"), "national", "emergency", "surge"))
    made = _make(world, form=_form(fields=("name", "lsoa", "dob")))
    world.now = made.made_at + world.ladder.bound("emergency")
    assert _tick(world)[-3:] == ["request-defaulted", "raised", "tier-opened"]
    grant = (world.state.request("r-1").decision or {})["grant"]
    review = world.state.dispute("r-1-review")
    assert (review.kind, review.state, review.challenges["decision_id"]) == ("provisional-review", "awaiting",
                                                                              "request-r-1")
    assert grant["tiers"][0]["name"] == "analyst" and sorted(grant["tiers"][0]["fields"]) == ["dob", "lsoa"]
    assert grant["valid_until"] == stamp(world.now + dt.timedelta(days=14))


def test_the_mandatory_review_of_a_provisional_grant_can_end_it() -> None:
    world = _world()
    world.run(lambda ctx: escalation.declare(ctx, board("dhsc"), "national", "emergency", "surge"))
    made = _make(world, form=_form(fields=("lsoa",)))
    world.now = made.made_at + world.ladder.bound("emergency")
    _tick(world)
    assert "request-r-1" in world.state.grants
    world.run(lambda ctx: adjudication.decide(ctx, "r-1-review", IG_LEAD, Decision(
        outcome="refused", reason="LSOA alone is enough from the dashboard; no line list")))
    assert "request-r-1" not in world.state.grants


def test_a_grant_expires_and_the_request_keeps_its_history() -> None:
    world = _world()
    _make(world, form=_form(duration="PT12H"))
    _review(world, IG_LEAD)
    _review(world, CALDICOTT)
    assert _enforce(world).state == "live"
    world.now += dt.timedelta(hours=12)
    assert _tick(world) == ["request-expired"]
    expired = world.state.request("r-1")
    assert expired.state == "expired" and "request-r-1" not in world.state.grants
    assert [e["type"] for e in expired.timeline] == ["request-made", "request-reviewed", "request-reviewed",
                                                      "request-approved", "request-enforced", "request-expired"]
    # Rebuilt from the log alone (a restart), the request is the same.
    rebuilt = GovernanceState()
    for offset, event in enumerate(e for e in expired.timeline):
        rebuilt = apply(rebuilt, offset, event)
    assert rebuilt.request("r-1").to_json() == expired.to_json()


def test_the_first_delivery_after_approval_is_measured_once() -> None:
    world = _world()
    _make(world)
    _review(world, IG_LEAD)
    approved = _review(world, CALDICOTT)
    _enforce(world)
    assert access_rules.awaiting_first_delivery(world.state.requests) == approved.approved_at
    later = world.now + dt.timedelta(seconds=1.25)
    reports: list[dict[str, Any]] = [
        {"subscriber": LEICESTERSHIRE, "role": "dph", "stream": T1, "at": stamp(world.now - dt.timedelta(hours=1)),
         "topic": "t", "partition": 0, "first_offset": 3},                     # before approval
        {"subscriber": LEICESTERSHIRE, "role": "analyst", "stream": T1, "at": stamp(later)},  # another role
        {"subscriber": LEICESTERSHIRE, "role": "dph", "stream": T1, "at": stamp(later), "topic": "t",
         "partition": 0, "first_offset": 7},
    ]
    world.run(lambda ctx: access_rules.first_deliveries(ctx, reports))
    measured = world.state.request("r-1")
    assert measured.approval_to_first_record_s == 1.25 and (measured.first_delivery or {})["offset"] == 7
    assert access_rules.awaiting_first_delivery(world.state.requests) is None
    assert access_rules.first_deliveries(world.ctx(), reports) == []


def test_durations_are_iso_8601() -> None:
    assert parse_duration("P28D", "x") == dt.timedelta(days=28)
    assert parse_duration("pt1h30m", "x") == dt.timedelta(hours=1, minutes=30)
    for bad in ("", "P", "PT", "28 days", "P1M"):
        with pytest.raises(InvalidRequestError):
            parse_duration(bad, "x")
