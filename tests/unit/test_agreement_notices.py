"""An agreement's own dates: notices N days before its legal basis ends, review tasks when its review date comes,
and grants that end with the basis; pure rules, then the governance service sending them through its outbox."""

from __future__ import annotations

import datetime as dt
from typing import Any

import pytest
from fastapi.testclient import TestClient
from typer.testing import CliRunner

from broker.adapters.governance_http import GovernanceClient
from broker.api.governance_app import create_governance_app
from broker.cli import app
from broker.cli import governance as cli_governance
from broker.domain import agreement_notices
from broker.domain.adjudication import Decision, legal_basis_end
from broker.domain.agreement_notices import due_notices, due_reviews, notice_schedule, parse_notice_days
from broker.domain.disputes import stamp
from broker.domain.flows import legal_basis_ends_at
from broker.domain.governance import LEGAL_BASIS_ENDING, REVIEW_DUE
from broker.errors import GovernanceError, NotAuthorisedError
from broker.services.governance import Governance
from tests.unit.auth_fakes import guard, token
from tests.unit.governance_catalog import EAST_MIDLANDS, LEICESTER, MANCHESTER, T1, catalog
from tests.unit.governance_fakes import START, FakeClock, FakeControl, MemoryGovernanceLog
from tests.unit.governance_support import UKHSA_IG, World, board, person, refusal, types
from tests.unit.notifier_fakes import RecordingNotifier

DAY = dt.timedelta(days=1)
ENDS = dt.datetime(2026, 7, 1, tzinfo=dt.UTC)  # legal_basis_until 2026-06-30: the basis stops at the day's end


def lapsing(until: str = "2026-06-30", review: str = "2027-06-30") -> dict[str, Any]:
    doc = catalog()
    doc["agreements"]["t1-manchester"] |= {"legal_basis_until": until, "review_date": review}
    return doc


def test_notice_days_parse_largest_first_and_refuse_nonsense() -> None:
    assert parse_notice_days("3, 14") == (14, 3)
    for bad in ("", "0", "fourteen", "14,-3"):
        with pytest.raises(ValueError, match="days"):
            parse_notice_days(bad)


def test_the_schedule_is_n_days_before_the_end_of_the_last_day() -> None:
    assert legal_basis_ends_at({"legal_basis_until": "2026-06-30"}) == ENDS
    assert legal_basis_ends_at({"legal_basis_until": None}) is None
    assert notice_schedule(ENDS, (3, 14)) == [(14, ENDS - 14 * DAY), (3, ENDS - 3 * DAY)]


def test_each_notice_is_sent_once_when_due_and_never_after_the_end() -> None:
    world = World(lapsing(), now=ENDS - 15 * DAY)
    assert world.run(due_notices) == []
    world.at(ENDS - 14 * DAY)
    (first,) = world.run(due_notices)
    assert first["type"] == LEGAL_BASIS_ENDING
    assert {k: first["data"][k] for k in ("agreement", "days_before", "legal_basis_until", "ends_at", "told")} == {
        "agreement": "t1-manchester", "days_before": 14, "legal_basis_until": "2026-06-30",
        "ends_at": "2026-07-01T00:00:00.000000Z", "told": sorted([MANCHESTER, "ukhsa"])}
    assert world.later(days=1).run(due_notices) == [], "sent once"
    world.at(ENDS - 3 * DAY)
    (second,) = world.run(due_notices)
    assert second["data"]["days_before"] == 3
    assert world.at(ENDS).run(due_notices) == []


def test_a_service_down_past_both_notices_sends_only_the_most_urgent() -> None:
    world = World(lapsing(), now=ENDS - 2 * DAY)
    (only,) = world.run(due_notices)
    assert only["data"]["days_before"] == 3
    assert world.later(hours=1).run(due_notices) == [], "the 14-day notice is covered, never sent late"


def test_a_revoked_agreement_gets_no_notice() -> None:
    world = World(lapsing(), now=ENDS - 3 * DAY)
    world.state = world.state.__class__(revocations={"t1-manchester": {"reason": "ended early"}})
    assert world.run(due_notices) == []


def test_a_review_date_raises_one_task_for_an_agreement_in_force() -> None:
    world = World(lapsing(until="2027-12-31", review="2026-06-30"), now=dt.datetime(2026, 6, 29, 23, tzinfo=dt.UTC))
    assert world.run(due_reviews) == []
    world.at(dt.datetime(2026, 6, 30, 8, tzinfo=dt.UTC))
    assert types(world.run(due_reviews)) == [REVIEW_DUE]
    assert world.later(days=3).run(due_reviews) == []
    (task,) = world.state.reviews.values()
    assert (task["task"], task["state"], task["agreement"]) == ("review-t1-manchester-2026-06-30", "open",
                                                                "t1-manchester")
    world.at(dt.datetime(2028, 1, 2, tzinfo=dt.UTC))
    world.catalog["agreements"]["t1-manchester"]["review_date"] = "2028-01-01"
    assert world.run(due_reviews) == [], "an agreement that has ended needs no review"


def test_a_review_is_completed_by_a_partys_ig_lead_or_the_board_with_a_note() -> None:
    world = World(lapsing(until="2027-12-31", review="2026-06-30"), now=dt.datetime(2026, 7, 1, tzinfo=dt.UTC))
    world.run(due_reviews)
    task = "review-t1-manchester-2026-06-30"
    with pytest.raises(NotAuthorisedError, match="IG lead"):
        world.run(lambda ctx: agreement_notices.complete_review(ctx, task, person(LEICESTER, "dph"), "fine"))
    with pytest.raises(GovernanceError, match="note"):
        world.run(lambda ctx: agreement_notices.complete_review(ctx, task, UKHSA_IG, " "))
    world.run(lambda ctx: agreement_notices.complete_review(ctx, task, board("dhsc"), "Renewed to 2027."))
    done = world.state.reviews[task]
    assert done["state"] == "completed" and done["completed"]["note"] == "Renewed to 2027."
    with pytest.raises(GovernanceError, match="already"):
        world.run(lambda ctx: agreement_notices.complete_review(ctx, task, UKHSA_IG, "again"))
    assert agreement_notices.reviews_of(world.state.reviews.values(), body=LEICESTER) == []
    assert len(agreement_notices.reviews_of(world.state.reviews.values(), body=MANCHESTER, state="completed")) == 1


def _grant_for_manchester(world: World, until: dt.datetime) -> dt.datetime:
    world.raise_(person(MANCHESTER, "dph"), refusal())
    world.decide(UKHSA_IG, Decision(outcome="granted-for-period", reason="ok", until=until))
    return dt.datetime.fromisoformat(world.dispute().decision["grant"]["valid_until"].replace("Z", "+00:00"))  # type: ignore[index]


def test_a_grant_ends_with_the_legal_basis_of_the_agreements_it_extends() -> None:
    world = World(lapsing(), now=ENDS - 10 * DAY)
    assert legal_basis_end(world.catalog, MANCHESTER, T1) == ENDS
    assert legal_basis_end(world.catalog, LEICESTER, T1) is None
    assert _grant_for_manchester(world, ENDS + 30 * DAY) == ENDS
    after = World(lapsing(), now=ENDS + DAY)
    with pytest.raises(GovernanceError, match="legal basis"):
        _grant_for_manchester(after, ENDS + 30 * DAY)


def test_the_service_tells_both_parties_by_webhook_through_its_outbox() -> None:
    clock, notifier = FakeClock(ENDS - 20 * DAY), RecordingNotifier()
    control = FakeControl(lapsing(review="2026-06-20"))
    gov = Governance(MemoryGovernanceLog(), control, control, clock, notifier, notice_days=(14, 3))
    gov.start()
    assert notifier.sent == []
    clock.to(ENDS - 14 * DAY)
    gov.tick()
    clock.to(ENDS - 3 * DAY)
    gov.tick()
    gov.tick()
    for body in (MANCHESTER, "ukhsa"):
        sent = notifier.to(body)
        assert [(n["type"], n["event"]["data"].get("days_before")) for n in sent] == [
            (LEGAL_BASIS_ENDING, 14), (LEGAL_BASIS_ENDING, 3), (REVIEW_DUE, None)], body
    assert notifier.to(LEICESTER) == []
    assert [t["task"] for t in gov.reviews(MANCHESTER, "open")] == ["review-t1-manchester-2026-06-20"]


def test_review_tasks_through_the_real_api_and_the_cli(monkeypatch: pytest.MonkeyPatch) -> None:
    control = FakeControl(lapsing(until="2027-12-31", review="2026-06-30"))
    governance = Governance(MemoryGovernanceLog(), control, control, FakeClock(dt.datetime(2026, 7, 1, tzinfo=dt.UTC)),
                            RecordingNotifier())
    governance.start()
    api = create_governance_app(governance, lambda: [], guard=guard())
    monkeypatch.setattr(cli_governance, "_client", lambda: GovernanceClient(client=TestClient(api)))
    listed = CliRunner().invoke(app, ["agreement", "reviews", "--body", MANCHESTER,
                                      "--token", token(MANCHESTER, "dph", "ivan")])
    assert listed.exit_code == 0, listed.output
    assert listed.stdout.startswith("review-t1-manchester-2026-06-30  open  agreement t1-manchester review date "
                                    "2026-06-30")
    refused = CliRunner().invoke(app, ["agreement", "review-done", "review-t1-manchester-2026-06-30", "--note", "ok",
                                       "--token", token(MANCHESTER, "dph", "ivan")])
    assert refused.exit_code == 1 and "IG lead" in refused.stderr
    done = CliRunner().invoke(app, ["agreement", "review-done", "review-t1-manchester-2026-06-30", "--note",
                                    "Still needed; renewed.", "--token", token("ukhsa", "ig-lead", "jo")])
    assert done.exit_code == 0, done.output
    assert "completed by jo (ig-lead, ukhsa)" in done.stdout
    assert governance.reviews(state="completed")[0]["completed"]["note"] == "Still needed; renewed."


def _leicester_until(day: dt.date) -> World:
    doc = catalog()
    doc["agreements"]["t1-leicester"] = {**doc["agreements"]["t1-manchester"], "subscriber": LEICESTER,
                                         "row_scope": {"areas": ["E06000016"]}, "legal_basis_until": day.isoformat()}
    world = World(doc)
    world.declare(EAST_MIDLANDS, "emergency")
    world.raise_()
    return world


def test_a_decisive_default_grants_only_until_the_legal_basis_ends() -> None:
    world = _leicester_until(START.date() + 3 * DAY)
    world.at(START + 7 * dt.timedelta(hours=1)).tick()
    decision = world.dispute().decision or {}
    ends = dt.datetime.combine(START.date() + 4 * DAY, dt.time(), tzinfo=dt.UTC)
    assert decision["outcome"] == "granted-for-period" and decision["grant"]["valid_until"] == stamp(ends)
    assert decision["until"] == stamp(ends)


def test_after_the_legal_basis_ended_a_decisive_default_grants_nothing() -> None:
    world = _leicester_until(START.date() - DAY)
    world.at(START + 7 * dt.timedelta(hours=1)).tick()
    decision = world.dispute().decision or {}
    assert decision["outcome"] == "refused" and "legal basis" in decision["reason"] and "grant" not in decision
    assert world.state.grants == {}
