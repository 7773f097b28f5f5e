"""The dispute lifecycle as a transition table, the fold of a whole timeline, and the ladder read from the catalog."""

from __future__ import annotations

import datetime as dt
from typing import Any

import pytest

from broker.domain.disputes import TRANSITIONS, Dispute, fold, next_state, parse_stamp, stamp
from broker.domain.governance import GovernanceEvent, GovernanceState, apply, new_event
from broker.domain.ladder import Ladder
from broker.errors import ConfigError, GovernanceError
from tests.unit.governance_catalog import LEICESTER, T1, catalog
from tests.unit.governance_fakes import START
from tests.unit.governance_support import DPH, UKHSA_IG, board, person

OPEN = ("raised", "awaiting", "appealed", "decided", "defaulted", "enforced")
ALLOWED = {
    ("new", "raised"): "raised",
    ("raised", "tier-opened"): "awaiting",
    ("awaiting", "tier-opened"): "awaiting",
    ("awaiting", "deadline-changed"): "awaiting",
    ("awaiting", "approved"): "awaiting",
    ("awaiting", "decided"): "decided",
    ("awaiting", "defaulted"): "defaulted",
    ("decided", "enforced"): "enforced",
    ("defaulted", "enforced"): "enforced",
    ("enforced", "appealed"): "appealed",
    ("appealed", "tier-opened"): "awaiting",
    ("enforced", "closed"): "closed",
    **{(state, "commented"): state for state in OPEN},
}
H = dt.timedelta(hours=1)


def at(hours: float) -> dt.datetime:
    return START + dt.timedelta(hours=hours)


def event(kind: str, hours: float = 0, data: dict[str, Any] | None = None, actor: Any = None) -> GovernanceEvent:
    return new_event(kind, "d-1", at(hours), actor, data or {})


def raised() -> GovernanceEvent:
    return event("raised", 0, {
        "kind": "refusal", "stream": T1, "publisher": "ukhsa", "subscriber": LEICESTER, "role": "dph",
        "purpose": "health-protection", "challenges": {"decision_id": "plan-1", "policy_revision": "c-1"},
        "sought": {"fields": ["lsoa"], "areas": ["E06000016"], "until": None}, "justification": "need it",
        "urgency": "urgent", "evidence": ["ob-31"]}, DPH)


def opened(tier: int, hours: float, deadline_h: float, level: str = "normal") -> GovernanceEvent:
    return event("tier-opened", hours, {"tier": tier, "level": level, "deadline": stamp(at(deadline_h)), "why": "t"})


def in_state(state: str) -> Dispute:
    dispute = fold(fold(None, raised()), opened(0, 0, 120))
    return Dispute(**{**dispute.__dict__, "state": state})


def test_the_table_is_exactly_the_documented_lifecycle() -> None:
    assert dict(TRANSITIONS) == ALLOWED


@pytest.mark.parametrize(("move", "after"), sorted(ALLOWED.items()))
def test_every_allowed_move_folds_to_its_next_state(move: tuple[str, str], after: str) -> None:
    state, kind = move
    data = {"tier": 1, "level": "enhanced", "deadline": stamp(at(30)), "closes_at": stamp(at(40)), "reason": "r"}
    moved = fold(None if state == "new" else in_state(state), raised() if state == "new" else event(kind, 5, data))
    assert moved.state == after
    assert moved.timeline[-1]["type"] == kind


@pytest.mark.parametrize(("state", "kind"), [
    ("new", "decided"), ("new", "tier-opened"), ("raised", "decided"), ("raised", "raised"),
    ("awaiting", "enforced"), ("awaiting", "closed"), ("awaiting", "appealed"), ("decided", "decided"),
    ("decided", "approved"), ("defaulted", "appealed"), ("enforced", "decided"), ("enforced", "tier-opened"),
    ("appealed", "decided"), ("closed", "commented"), ("closed", "appealed"), ("closed", "tier-opened"),
])
def test_a_move_the_table_lacks_raises_naming_the_dispute_and_its_state(state: str, kind: str) -> None:
    with pytest.raises(GovernanceError, match=f"dispute d-7 is {state}; it cannot take '{kind}'"):
        next_state(state, kind, "d-7")


def test_fold_refuses_an_event_the_state_cannot_take() -> None:
    with pytest.raises(GovernanceError, match="d-1 is new"):
        fold(None, event("decided", 1))
    with pytest.raises(GovernanceError, match="d-1 is raised"):
        fold(fold(None, raised()), raised())
    with pytest.raises(GovernanceError, match="d-1 is closed"):
        fold(in_state("closed"), event("commented", 1, {"text": "late"}))


def test_fold_of_a_full_timeline() -> None:
    dispute = fold(None, raised())
    assert (dispute.state, dispute.challenger, dispute.publisher, dispute.subscriber) == ("raised", DPH, "ukhsa",
                                                                                          LEICESTER)
    assert dispute.parties == {LEICESTER, "ukhsa"}
    assert dispute.sought["fields"] == ["lsoa"] and dispute.evidence == ("ob-31",)

    dispute = fold(dispute, opened(0, 0, 120))
    assert (dispute.state, dispute.tier, dispute.deadline, dispute.tier_opened_at) == ("awaiting", 0, at(120), at(0))
    dispute = fold(dispute, event("commented", 1, {"text": "see attached"}, DPH))
    dispute = fold(dispute, event("deadline-changed", 2, {"level": "enhanced", "deadline": stamp(at(24))}))
    assert (dispute.level, dispute.deadline) == ("enhanced", at(24))

    dispute = fold(dispute, opened(1, 24, 72, "enhanced"))
    proposal = {"tier": 1, "outcome": "granted", "reason": "ok", "fields": None, "areas": None, "until": None}
    dispute = fold(dispute, event("approved", 25, proposal, board("dhsc")))
    assert [a["actor"]["body"] for a in dispute.approvals] == ["dhsc"] and dispute.approvals[0]["outcome"] == "granted"
    dispute = fold(dispute, event("decided", 26, {**proposal, "by": []}))
    assert (dispute.state, dispute.decided_at, dispute.deadline) == ("decided", at(26), None)
    assert dispute.is_open and dispute.decision is not None and dispute.decision["outcome"] == "granted"

    dispute = fold(dispute, event("enforced", 26, {"control": [], "closes_at": stamp(at(98))}))
    assert (dispute.state, dispute.enforced_at, dispute.closes_at, dispute.is_open) == ("enforced", at(26), at(98),
                                                                                        False)
    dispute = fold(dispute, event("appealed", 27, {"reason": "no"}, UKHSA_IG))
    assert (dispute.decision, dispute.closes_at) == (None, None)
    dispute = fold(dispute, opened(2, 27, 51, "enhanced"))
    assert (dispute.state, dispute.tier, dispute.approvals) == ("awaiting", 2, ())
    dispute = fold(dispute, event("decided", 28, {"outcome": "refused", "reason": "no", "by": []}))
    dispute = fold(dispute, event("enforced", 28, {"control": [], "closes_at": stamp(at(28))}))
    dispute = fold(dispute, event("closed", 28, {"why": "decided at the last tier"}))

    assert dispute.state == "closed" and not dispute.is_open
    assert [e["type"] for e in dispute.timeline] == [
        "raised", "tier-opened", "commented", "deadline-changed", "tier-opened", "approved", "decided", "enforced",
        "appealed", "tier-opened", "decided", "enforced", "closed"]
    assert dispute.to_json()["raised_at"] == "2026-03-02T09:00:00.000000Z"


def test_a_new_tier_forgets_the_last_tiers_approvals() -> None:
    dispute = fold(fold(None, raised()), opened(1, 0, 10))
    dispute = fold(dispute, event("approved", 1, {"outcome": "granted"}, board("dhsc")))
    assert fold(dispute, opened(2, 10, 11)).approvals == ()


def test_stamps_are_utc_with_z_and_zone_less_times_are_refused() -> None:
    bst = dt.timezone(dt.timedelta(hours=1))
    assert stamp(dt.datetime(2026, 6, 1, 10, 0, tzinfo=bst)) == "2026-06-01T09:00:00.000000Z"
    assert parse_stamp("2026-06-01T10:00:00+01:00") == dt.datetime(2026, 6, 1, 9, 0, tzinfo=dt.UTC)
    with pytest.raises(GovernanceError, match="no time zone"):
        parse_stamp("2026-06-01T10:00:00")


def test_an_event_applied_twice_at_the_same_offset_counts_once() -> None:
    # The log hands a writer back its own events; approvals and comments must not double.
    state = GovernanceState()
    for offset, e in enumerate([raised(), opened(1, 0, 10)]):
        state = apply(state, offset, e)
    approval = event("approved", 1, {"outcome": "granted"}, board("dhsc"))
    once = apply(state, 2, approval)
    assert apply(once, 2, approval) == once
    assert len(once.dispute("d-1").approvals) == 1


def test_governance_state_tracks_declarations_webhooks_grants_and_revocations() -> None:
    dhsc = board("dhsc")
    events = [
        new_event("emergency-declared", None, at(0), dhsc, {"scope": "national", "level": "enhanced", "reason": "r"}),
        new_event("emergency-declared", None, at(0), dhsc, {"scope": "E12000004", "level": "emergency", "reason": "r"}),
        new_event("webhook-registered", None, at(0), DPH, {"body": LEICESTER, "url": "https://example.org/hook"}),
        new_event("break-glass", None, at(0), DPH, {"grant": {"id": "g-1"}}),
        raised(), opened(0, 0, 10),
        event("decided", 1, {"outcome": "granted", "revoke_agreements": ["t1-x"], "reason": "gone"}),
    ]
    state = GovernanceState()
    for offset, e in enumerate(events):
        state = apply(state, offset, e)
    assert state.level_for(["E12000004"]) == "emergency" and state.level_for(["E12000002"]) == "enhanced"
    assert state.level_for([]) == "enhanced"
    assert state.webhooks == {LEICESTER: "https://example.org/hook"}
    assert set(state.grants) == {"g-1"} and state.revocations == {"t1-x": {"reason": "gone"}}
    state = apply(state, 7, new_event("emergency-lifted", None, at(2), dhsc, {"scope": "national"}))
    state = apply(state, 8, new_event("webhook-registered", None, at(2), DPH, {"body": LEICESTER, "url": None}))
    assert state.level("national") == "normal" and state.webhooks == {} and state.offset == 9
    with pytest.raises(GovernanceError, match="no dispute 'd-9'"):
        state.dispute("d-9")


# -- the ladder as data -------------------------------------------------------------------------------------------


def test_ladder_reads_the_compiled_catalog() -> None:
    ladder = Ladder.from_catalog(catalog())
    assert [t.name for t in ladder.tiers] == ["publisher-ig", "governance-board", "emergency-arbiter"]
    assert ladder.tiers[0].decider_bodies("nhsd") == {"nhsd"}
    assert "ukhsa" in ladder.tiers[1].decider_bodies("nhsd") and ladder.tiers[1].approvals == 2
    assert ladder.bound("normal") == dt.timedelta(days=20)
    assert ladder.bound("emergency") == 7 * H
    assert ladder.decisive_default["emergency"].period == dt.timedelta(days=14)
    assert ladder.decisive_default["normal"].period is None
    assert ladder.may_declare(board("dhsc")) and ladder.may_declare(person("accord-arbiter", "arbiter"))
    assert not ladder.may_declare(board("nhsd")) and not ladder.may_declare(person("dhsc", "ig-lead"))


@pytest.mark.parametrize("breakage", ["no ladder", "no tiers", "missing level", "default missing a level",
                                      "appeal window missing a level"])
def test_an_unreadable_ladder_is_a_config_error_saying_what_to_do(breakage: str) -> None:
    doc = catalog()
    if breakage == "no ladder":
        del doc["ladder"]
    elif breakage == "no tiers":
        doc["ladder"]["tiers"] = []
    elif breakage == "default missing a level":
        del doc["ladder"]["decisive_default"]["emergency"]
    elif breakage == "appeal window missing a level":
        del doc["ladder"]["appeal_window_s"]["enhanced"]
    else:
        del doc["ladder"]["tiers"][1]["deadline_s"]["emergency"]
    with pytest.raises(ConfigError, match="accord catalog apply"):
        Ladder.from_catalog(doc)
