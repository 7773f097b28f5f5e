"""The governance service over in-memory fakes: commands become events, decisions become control-topic writes, a
restart rebuilds the same state, and start() repairs what a crash left half done."""

from __future__ import annotations

import datetime as dt
from typing import Any

import pytest

from broker.domain.adjudication import DisputeRequest
from broker.domain.control import CATALOG_KEY, PolicyState
from broker.errors import ConfigError, GovernanceError, ServiceError
from broker.services.governance import Governance
from tests.unit.governance_catalog import (
    BOARD,
    EAST_MIDLANDS,
    LEICESTER,
    LEICESTERSHIRE,
    MANCHESTER,
    T1,
    catalog,
)
from tests.unit.governance_fakes import START, FakeClock, FakeControl, MemoryGovernanceLog
from tests.unit.governance_support import ARBITER, DPH, UKHSA_IG, board, granted, refusal
from tests.unit.notifier_fakes import RecordingNotifier

H = dt.timedelta(hours=1)
DAY = dt.timedelta(days=1)


class Rig:
    """One governance topic, one control topic and one clock, shared by successive service instances."""

    def __init__(self) -> None:
        self.log = MemoryGovernanceLog()
        self.control = FakeControl(catalog())
        self.clock = FakeClock()
        self.notifier = RecordingNotifier()
        self.gov = self.restart(first=True)

    def restart(self, first: bool = False) -> Governance:
        log = self.log if first else self.log.reader()
        self.gov = Governance(log, self.control, self.control, self.clock, self.notifier)
        self.gov.start()
        return self.gov

    def raise_(self, request: DisputeRequest | None = None) -> str:
        return self.gov.raise_dispute(DPH, request or refusal()).id

    def policy(self) -> PolicyState:
        return self.control.current()


@pytest.fixture
def rig() -> Rig:
    return Rig()


def test_a_decision_is_written_as_a_grant_and_recorded_as_enforced(rig: Rig) -> None:
    ident = rig.raise_()
    dispute = rig.gov.decide(ident, UKHSA_IG, granted())
    assert dispute.state == "enforced" and dispute.closes_at == START + 14 * DAY
    (key, value), = rig.control.writes()
    assert key == f"grant/dispute-{ident}" and value == dict((dispute.decision or {})["grant"])
    assert rig.policy().grants[f"dispute-{ident}"]["subscriber"] == LEICESTER
    enforced = dispute.timeline[-1]
    assert enforced["type"] == "enforced"
    assert [c["key"] for c in enforced["data"]["control"]] == [key]
    assert enforced["data"]["control"][0]["offset"] == len(rig.control.records) - 1


def test_a_refusal_writes_nothing_to_the_control_topic(rig: Rig) -> None:
    ident = rig.raise_()
    dispute = rig.gov.decide(ident, UKHSA_IG, granted("No.", outcome="refused"))
    assert dispute.state == "enforced" and dispute.timeline[-1]["data"]["control"] == []
    assert rig.control.writes() == []


def test_a_refusal_on_appeal_tombstones_the_grant_the_lower_tier_wrote(rig: Rig) -> None:
    ident = rig.raise_()
    rig.gov.decide(ident, UKHSA_IG, granted())
    rig.gov.appeal(ident, UKHSA_IG, "Too much was granted.")
    rig.gov.decide(ident, board("dhsc"), granted("No.", outcome="refused"))
    rig.gov.decide(ident, board("nhse"), granted("No.", outcome="refused"))
    assert rig.control.writes()[-1] == (f"grant/dispute-{ident}", None)
    assert rig.policy().grants == {}


def test_a_default_in_an_emergency_writes_the_provisional_grant(rig: Rig) -> None:
    rig.gov.declare(board("dhsc"), EAST_MIDLANDS, "emergency", "surge")
    ident = rig.raise_()
    rig.clock.advance(7 * H)
    written = rig.gov.tick()
    assert [e["type"] for e in written if e.get("dispute") == ident] == [
        "tier-opened", "tier-opened", "defaulted", "enforced", "closed"]
    grant = rig.policy().grants[f"dispute-{ident}"]
    assert grant["template"] == "t1-positive-tests" and set(grant["tiers"][0]["fields"]) == {"lsoa", "dob", "sex"}
    assert rig.gov.dispute(ident).state == "closed"
    assert rig.gov.dispute(f"{ident}-review").state == "awaiting"


def test_the_service_reads_back_its_own_events_without_applying_them_twice(rig: Rig) -> None:
    ident = rig.raise_()
    rig.clock.advance(5 * DAY)
    rig.gov.tick()
    rig.gov.decide(ident, board("dhsc"), granted())
    rig.gov.comment(ident, board("nis"), "Reading the evidence.")
    dispute = rig.gov.dispute(ident)
    assert [a["actor"]["body"] for a in dispute.approvals] == ["dhsc"] and dispute.state == "awaiting"
    assert len(dispute.timeline) == len(rig.log.types(ident))


def test_a_restart_rebuilds_the_same_state(rig: Rig) -> None:
    rig.gov.declare(board("ukhsa"), "national", "enhanced", "winter")
    first = rig.raise_()
    rig.gov.decide(first, UKHSA_IG, granted())
    second = rig.raise_(refusal(fields=("postcode",)))
    rig.gov.comment(second, DPH, "Any news?")
    before = rig.gov.state
    writes = len(rig.control.records)

    after = rig.restart().state
    assert after == before
    assert len(rig.control.records) == writes       # nothing to repair, so nothing rewritten


def test_a_deadline_that_passed_while_down_fires_at_start(rig: Rig) -> None:
    ident = rig.raise_()
    rig.clock.advance(6 * DAY)
    restarted = Governance(rig.log.reader(), rig.control, rig.control, rig.clock, rig.notifier)
    fired = restarted.start()
    assert [(e["type"], e["dispute"]) for e in fired] == [("tier-opened", ident)]
    dispute = restarted.dispute(ident)
    assert (dispute.tier, dispute.deadline) == (1, START + 15 * DAY)
    assert rig.log.types(ident).count("tier-opened") == 2


def test_start_finishes_an_enforcement_that_a_crash_interrupted(rig: Rig) -> None:
    ident = rig.raise_()
    rig.control.failures = 1
    with pytest.raises(ServiceError):
        rig.gov.decide(ident, UKHSA_IG, granted())
    assert rig.log.types(ident)[-1] == "decided" and rig.policy().grants == {}

    rig.restart()
    assert f"dispute-{ident}" in rig.policy().grants
    assert rig.gov.dispute(ident).state == "enforced"
    assert [k for k, _ in rig.control.writes()] == [f"grant/dispute-{ident}"]


def test_the_next_tick_finishes_an_enforcement_a_control_outage_interrupted(rig: Rig) -> None:
    ident = rig.raise_()
    rig.control.failures = 1
    with pytest.raises(ServiceError):
        rig.gov.decide(ident, UKHSA_IG, granted())
    rig.gov.tick()
    assert f"dispute-{ident}" in rig.policy().grants and rig.gov.dispute(ident).state == "enforced"


def test_start_records_enforcement_when_the_crash_came_after_the_control_write(rig: Rig) -> None:
    ident = rig.raise_()
    rig.log.fail_append(after=1)                     # [approved, decided] commit; the `enforced` append fails
    with pytest.raises(ServiceError):
        rig.gov.decide(ident, UKHSA_IG, granted())
    assert f"dispute-{ident}" in rig.policy().grants and rig.log.types(ident)[-1] == "decided"
    rig.restart()
    assert rig.gov.dispute(ident).state == "enforced"
    assert rig.log.types(ident).count("enforced") == 1


def test_declaring_and_lifting_write_and_tombstone_the_level(rig: Rig) -> None:
    result = rig.gov.declare(board("dhsc"), EAST_MIDLANDS, "emergency", "surge in Leicester")
    assert result == {"scope": EAST_MIDLANDS, "level": "emergency"}
    (key, value), = rig.control.writes()
    assert key == f"emergency/{EAST_MIDLANDS}" and value is not None and value["level"] == "emergency"
    assert rig.policy().level_for(LEICESTER) == "emergency" and rig.policy().level_for(MANCHESTER) == "normal"
    rig.gov.declare(ARBITER, EAST_MIDLANDS, "normal", "over")
    assert rig.control.writes()[-1] == (f"emergency/{EAST_MIDLANDS}", None)
    assert rig.policy().emergency == {} and rig.gov.emergency() == {}


def test_start_writes_a_declaration_the_control_topic_missed(rig: Rig) -> None:
    rig.control.failures = 1
    with pytest.raises(ServiceError):
        rig.gov.declare(board("dhsc"), "national", "enhanced", "winter")
    assert rig.policy().emergency == {}
    rig.restart()
    assert rig.policy().emergency == {"national": "enhanced"}


def test_break_glass_writes_its_grant_and_a_refused_review_tombstones_it(rig: Rig) -> None:
    rig.gov.declare(board("dhsc"), EAST_MIDLANDS, "emergency", "surge")
    review = rig.gov.break_glass(DPH, T1, "health-protection", "Care home outbreak, names needed now.")
    grant = f"break-glass-{review.id}"
    assert grant in rig.policy().grants and review.kind == "break-glass-review"
    rig.gov.decide(review.id, UKHSA_IG, granted("Not justified.", outcome="refused"))
    assert rig.control.writes()[-1] == (f"grant/{grant}", None) and rig.policy().grants == {}


def test_an_unreviewed_break_glass_is_tombstoned_on_the_control_topic_at_its_expiry(rig: Rig) -> None:
    rig.gov.declare(board("dhsc"), EAST_MIDLANDS, "emergency", "surge")
    review = rig.gov.break_glass(DPH, T1, "health-protection", "Care home outbreak, names needed now.")
    grant = f"break-glass-{review.id}"
    rig.clock.advance(3 * DAY - dt.timedelta(seconds=1))
    rig.gov.tick()
    assert rig.gov.dispute(review.id).state == "closed" and grant in rig.policy().grants
    rig.clock.advance(dt.timedelta(seconds=1))
    rig.gov.tick()
    assert rig.control.writes()[-1] == (f"grant/{grant}", None) and rig.policy().grants == {}
    assert "break-glass-expired" in _types_to(rig, LEICESTER) and "break-glass-expired" in _types_to(rig, "ukhsa")
    # a crash before the tombstone reached the control topic: the next start writes it
    rig.control.records.append((f"grant/{grant}", {"id": grant}))
    rig.restart()
    assert rig.policy().grants == {}


def test_a_refused_command_appends_nothing(rig: Rig) -> None:
    ident = rig.raise_()
    count = len(rig.log.events)
    with pytest.raises(GovernanceError):
        rig.gov.decide(ident, UKHSA_IG, granted(reason=" "))
    with pytest.raises(GovernanceError):
        rig.gov.raise_dispute(DPH, refusal(justification=""))
    rig.gov.decide(ident, UKHSA_IG, granted("No.", outcome="refused"))
    rig.clock.advance(14 * DAY)
    rig.gov.tick()
    count = len(rig.log.events)
    with pytest.raises(GovernanceError, match="closed"):
        rig.gov.comment(ident, DPH, "Too late.")
    assert len(rig.log.events) == count


def _types_to(rig: Rig, body: str) -> list[str]:
    return [n["type"] for n in rig.notifier.to(body)]


def test_notifications_go_to_the_parties_and_the_current_tiers_deciders(rig: Rig) -> None:
    ident = rig.raise_()
    for body in (LEICESTER, "ukhsa"):
        assert _types_to(rig, body) == ["raised", "tier-opened"]
    assert _types_to(rig, "dhsc") == [] and _types_to(rig, "accord-arbiter") == []
    note = rig.notifier.to(LEICESTER)[-1]
    assert note["dispute"]["id"] == ident and note["dispute"]["deadline"] == "2026-03-07T09:00:00.000000Z"

    rig.clock.advance(5 * DAY)
    rig.gov.tick()
    for body in BOARD:
        assert _types_to(rig, body)[-1] == "tier-opened"
    assert _types_to(rig, "accord-arbiter") == [] and _types_to(rig, MANCHESTER) == []


def test_declarations_are_told_to_every_body(rig: Rig) -> None:
    rig.gov.declare(board("dhsc"), "national", "enhanced", "winter")
    for body in (LEICESTER, MANCHESTER, "nis", "accord-arbiter"):
        assert _types_to(rig, body) == ["emergency-declared"]


@pytest.mark.parametrize(("declared", "expected"), [
    ({}, {LEICESTER: "normal", MANCHESTER: "normal", "ukhsa": "normal"}),
    ({"national": "enhanced", EAST_MIDLANDS: "emergency"},
     {LEICESTER: "emergency", LEICESTERSHIRE: "emergency", MANCHESTER: "enhanced", "ukhsa": "enhanced",
      "nowhere": "enhanced"}),
    ({"national": "emergency", EAST_MIDLANDS: "enhanced"}, {LEICESTER: "emergency", MANCHESTER: "emergency"}),
])
def test_a_subscribers_level_is_the_highest_of_national_and_its_regions(declared: dict[str, str],
                                                                        expected: dict[str, str]) -> None:
    control = FakeControl(catalog())
    for scope, level in declared.items():
        control.append(f"emergency/{scope}", {"kind": "emergency", "scope": scope, "level": level})
    policy = control.current()
    assert {body: policy.level_for(body) for body in expected} == expected
    plan_input: dict[str, Any] = policy.plan_input(LEICESTER, "dph", T1, "health-protection", START)
    assert plan_input["emergency_level"] == expected[LEICESTER]


def test_a_board_decision_needs_two_bodies_through_the_service(rig: Rig) -> None:
    ident = rig.raise_()
    rig.clock.advance(5 * DAY)
    rig.gov.tick()
    assert rig.gov.decide(ident, board("dhsc"), granted()).state == "awaiting"
    assert rig.control.writes() == []
    assert rig.gov.decide(ident, board("nhse"), granted()).state == "enforced"
    assert [k for k, _ in rig.control.writes()] == [f"grant/dispute-{ident}"]


def test_a_catalog_from_an_older_version_does_not_stop_the_service_and_a_new_apply_heals_it() -> None:
    old = catalog()
    del old["ladder"]["deletion_deadline_s"]     # compiled before the key existed
    log, control, clock = MemoryGovernanceLog(), FakeControl(old), FakeClock()
    gov = Governance(log, control, control, clock, RecordingNotifier())

    assert gov.start() == []
    with pytest.raises(ConfigError, match="no readable escalation ladder"):
        gov.raise_dispute(DPH, refusal())

    control.records.append((CATALOG_KEY, {"document": catalog()}))
    gov.tick()
    assert gov.raise_dispute(DPH, refusal()).state == "awaiting"
