"""Domain scenario 4 in the pure core and the service: councils told of rows the gate could not place, a misrouted
row's recipient made to delete it by a deadline, and the deletion logged."""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping, Sequence
from typing import Any

import pytest

from broker.domain import misroute_rules
from broker.domain.governance import GovernanceState
from broker.domain.misroute_rules import MisrouteReport
from broker.errors import GovernanceError, NotAuthorisedError
from broker.services.governance import Governance
from tests.unit.governance_catalog import BLABY, BOARD, EAST_MIDLANDS, LEICESTER, LEICESTERSHIRE, T1, catalog
from tests.unit.governance_fakes import FakeClock, FakeControl, MemoryGovernanceLog
from tests.unit.governance_support import DPH, UKHSA_IG, World, board, person
from tests.unit.notifier_fakes import RecordingNotifier

LEICESTER_CITY, BLABY_LA, COUNTY_LA = "E06000016", "E07000129", "E10000018"
COUNTY_DPH = person(LEICESTERSHIRE, "dph")
SOURCE = {"topic": f"ingest.{T1}", "partition": 0, "offset": 41}


def with_t1_councils() -> dict[str, Any]:
    """The test catalog with T1 agreements for Leicester and Leicestershire (Blaby has none)."""
    doc = catalog()
    manchester = doc["agreements"]["t1-manchester"]
    doc["agreements"]["t1-leicester"] = {**manchester, "subscriber": LEICESTER, "row_scope": {"areas": [
        LEICESTER_CITY]}}
    doc["agreements"]["t1-leicestershire"] = {**manchester, "subscriber": LEICESTERSHIRE, "row_scope": {
        "areas": doc["bodies"][LEICESTERSHIRE]["served_areas"]}}
    return doc


def unresolved(offset: int, candidates: Sequence[str] = (LEICESTER_CITY, BLABY_LA, COUNTY_LA),
               rule: str = "jurisdiction-unresolved") -> dict[str, Any]:
    """A quarantine entry as the gate writes it, with its place in the quarantine topic as the feed adds it."""
    return {"stream": T1, "source": {"kind": "gate", **SOURCE, "offset": 100 + offset},
            "reasons": [{"field": "utla", "rule": rule, "message": "ltla E07000129 is in E10000018 but utla says "
                                                                   "E06000016", "value_excerpt": ""}],
            "candidates": list(candidates), "position": {"topic": f"quarantine.{T1}", "partition": 0,
                                                         "offset": offset}}


def report(**changes: Any) -> MisrouteReport:
    fields: dict[str, Any] = {"stream": T1, "recipient": LEICESTER, "belongs_to": BLABY_LA, "source": SOURCE,
                              "reason": "the case lives in Blaby; the lab keyed the testing site's council"}
    return MisrouteReport(**(fields | changes))


@pytest.fixture
def world() -> World:
    return World(with_t1_councils())


# -- rows the gate could not place --------------------------------------------------------------------------------
def test_both_councils_and_the_publisher_are_told_of_a_row_that_could_be_either_councils(world: World) -> None:
    [event] = world.run(lambda ctx: misroute_rules.jurisdiction_queries(ctx, [unresolved(3)]))

    assert event["type"] == "jurisdiction-query"
    # Blaby serves the district but receives no T1, so it is not told of a T1 row.
    assert event["data"]["told"] == [LEICESTER, LEICESTERSHIRE, "ukhsa"]
    assert event["data"]["source"]["offset"] == 103 and "utla says" in event["data"]["reason"]
    assert world.state.quarantine_read == {f"quarantine.{T1}/0": 4}


def test_other_quarantine_entries_tell_no_one(world: World) -> None:
    entries = [unresolved(0, rule="avro-decode"), {**unresolved(1), "source": {"kind": "http"}}]
    assert world.run(lambda ctx: misroute_rules.jurisdiction_queries(ctx, entries)) == []


def test_a_row_with_no_known_council_is_told_to_the_publisher_only(world: World) -> None:
    [event] = world.run(lambda ctx: misroute_rules.jurisdiction_queries(ctx, [unresolved(0, candidates=())]))
    assert event["data"]["told"] == ["ukhsa"]


# -- a misrouted row and its deletion -------------------------------------------------------------------------------
def test_the_recipient_must_delete_within_the_deadline_and_its_confirmation_is_logged(world: World) -> None:
    world.run(lambda ctx: misroute_rules.report(ctx, UKHSA_IG, "m-1", report()))
    misroute = world.state.misroute("m-1")
    assert (misroute.state, misroute.recipient, misroute.rightful) == ("awaiting-deletion", LEICESTER,
                                                                       (LEICESTERSHIRE,))
    assert misroute.deadline == world.now + dt.timedelta(days=2)
    assert misroute.parties == {"ukhsa", LEICESTER, LEICESTERSHIRE}

    world.now += dt.timedelta(hours=3)
    statement = "deleted from the case system and the analyst's extract by the IG lead"
    [event] = world.run(lambda ctx: misroute_rules.confirm_deletion(ctx, "m-1", DPH, statement))

    confirmed = world.state.misroute("m-1")
    assert confirmed.state == "deleted" and event["type"] == "deletion-confirmed"
    assert confirmed.confirmation == {"by": DPH.to_json(), "at": event["at"], "statement": statement}
    assert [e["type"] for e in confirmed.timeline] == ["misroute-reported", "deletion-confirmed"]
    with pytest.raises(GovernanceError, match="deleted: deletion-confirmed is not possible"):
        world.run(lambda ctx: misroute_rules.confirm_deletion(ctx, "m-1", DPH, statement))


def test_in_an_emergency_the_deadline_is_the_emergency_one(world: World) -> None:
    world.state = GovernanceState(emergency={EAST_MIDLANDS: {"scope": EAST_MIDLANDS, "level": "emergency"}})
    world.run(lambda ctx: misroute_rules.report(ctx, DPH, "m-1", report()))  # the recipient may report itself
    assert world.state.misroute("m-1").deadline == world.now + dt.timedelta(hours=4)


def test_an_unconfirmed_deletion_becomes_overdue_and_can_still_be_confirmed(world: World) -> None:
    world.run(lambda ctx: misroute_rules.report(ctx, UKHSA_IG, "m-1", report()))
    world.now += dt.timedelta(days=2) - dt.timedelta(seconds=1)
    assert world.run(misroute_rules.overdue) == []
    world.now += dt.timedelta(seconds=1)
    [event] = world.run(misroute_rules.overdue)
    assert event["type"] == "deletion-overdue" and world.state.misroute("m-1").state == "overdue"
    assert world.run(misroute_rules.overdue) == []
    world.run(lambda ctx: misroute_rules.confirm_deletion(ctx, "m-1", DPH, "deleted late"))
    assert world.state.misroute("m-1").state == "deleted"


@pytest.mark.parametrize(("actor", "changes", "error", "match"), [
    (board("nhsd"), {}, NotAuthorisedError, "only the publisher ukhsa or the recipient"),
    (person(BLABY, "ig-lead"), {}, NotAuthorisedError, "only the publisher"),
    (person(LEICESTER, "food-parcels"), {}, NotAuthorisedError, "has no role"),
    (UKHSA_IG, {"belongs_to": LEICESTER_CITY}, GovernanceError, "serves E06000016: the row is not misrouted"),
    (UKHSA_IG, {"reason": " "}, GovernanceError, "needs a reason"),
    (UKHSA_IG, {"source": {"topic": "x"}}, GovernanceError, "topic, partition and offset"),
    (UKHSA_IG, {"stream": "no.such"}, GovernanceError, "unknown stream"),
    (UKHSA_IG, {"recipient": "no-such-council"}, GovernanceError, "unknown body"),
], ids=["board", "another-council", "role-not-held", "not-misrouted", "no-reason", "no-source", "stream", "body"])
def test_a_report_that_breaks_a_rule_is_refused(world: World, actor: Any, changes: Mapping[str, Any],
                                                 error: type[Exception], match: str) -> None:
    with pytest.raises(error, match=match):
        misroute_rules.report(world.ctx(), actor, "m-1", report(**changes))


def test_only_the_recipient_confirms_and_only_with_a_statement(world: World) -> None:
    world.run(lambda ctx: misroute_rules.report(ctx, UKHSA_IG, "m-1", report()))
    with pytest.raises(NotAuthorisedError, match="only the recipient leicester-city-council"):
        misroute_rules.confirm_deletion(world.ctx(), "m-1", COUNTY_DPH, "we deleted it")
    with pytest.raises(GovernanceError, match="needs a statement"):
        misroute_rules.confirm_deletion(world.ctx(), "m-1", DPH, "")
    with pytest.raises(GovernanceError, match="no misrouting report 'm-2'"):
        misroute_rules.confirm_deletion(world.ctx(), "m-2", DPH, "deleted")


# -- through the service: who is told, and a restart -------------------------------------------------------------
class FakeQuarantine:
    def __init__(self, entries: list[dict[str, Any]]) -> None:
        self.entries = entries
        self.asked: list[dict[str, int]] = []

    def read_new(self, positions: Mapping[str, int]) -> list[dict[str, Any]]:
        self.asked.append(dict(positions))
        key = f"quarantine.{T1}/0"
        return [e for e in self.entries if e["position"]["offset"] >= positions.get(key, 0)]


def test_the_service_tells_both_councils_and_resumes_after_the_last_query_on_restart() -> None:
    log, control, clock, notifier = MemoryGovernanceLog(), FakeControl(with_t1_councils()), FakeClock(), \
        RecordingNotifier()
    feed = FakeQuarantine([unresolved(0), unresolved(1, rule="avro-decode")])
    gov = Governance(log, control, control, clock, notifier, quarantine=feed)
    gov.start()

    for body in (LEICESTER, LEICESTERSHIRE, "ukhsa"):
        assert [n["type"] for n in notifier.to(body)] == ["jurisdiction-query"]
    assert notifier.to(BLABY) == []
    notifier.deliver_all(gov)

    again = Governance(log.reader(), control, control, clock, notifier, quarantine=feed)
    again.start()
    assert feed.asked[-1] == {f"quarantine.{T1}/0": 1}
    assert len(notifier.to(LEICESTER)) == 1  # not told twice


def test_an_overdue_deletion_is_told_to_the_governance_board_too() -> None:
    log, control, clock, notifier = MemoryGovernanceLog(), FakeControl(with_t1_councils()), FakeClock(), \
        RecordingNotifier()
    gov = Governance(log, control, control, clock, notifier)
    gov.start()
    misroute = gov.report_misroute(UKHSA_IG, report())
    assert [n["type"] for n in notifier.to(LEICESTERSHIRE)] == ["misroute-reported"]
    clock.to(misroute.deadline)
    gov.tick()
    assert gov.misroute(misroute.id).state == "overdue"
    for body in (*BOARD, LEICESTER, LEICESTERSHIRE):
        assert "deletion-overdue" in [n["type"] for n in notifier.to(body)], body
    gov.confirm_deletion(misroute.id, DPH, "deleted from every system that received it")
    assert [m.state for m in gov.misroutes(body=LEICESTERSHIRE)] == ["deleted"]


def test_quarantine_entries_of_any_other_shape_tell_no_one_and_do_not_stop_the_service(world: World) -> None:
    unresolved_rule = [{"rule": "jurisdiction-unresolved"}]
    odd: list[dict[str, Any]] = [{"reasons": "x"}, {"reasons": [None]}, {"reasons": unresolved_rule, "source": "gate"},
                                 {"reasons": unresolved_rule}, {}]
    assert world.run(lambda ctx: misroute_rules.jurisdiction_queries(ctx, odd)) == []
