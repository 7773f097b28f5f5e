"""The parties of an agreement whose legal basis is ending are told in advance by webhook (14 and 3 days before, by
default), and a review date raises a review task, on the real Kafka with the governance service's fake clock."""

from __future__ import annotations

import datetime as dt
import time
from typing import Any

from broker.runtime.governance import GovernanceService
from tests.e2e.scenario_support import FakeClock, as_
from tests.integration.gate_support import PLANNING_BASIS_UNTIL

LEICESTER = "leicester-city-council"
AGREEMENT = "t1-test-leicester-planning"
ENDS = dt.datetime.combine(PLANNING_BASIS_UNTIL + dt.timedelta(days=1), dt.time(), tzinfo=dt.UTC)
ENDS_STAMP = f"{ENDS.date().isoformat()}T00:00:00.000000Z"
Inbox = tuple[str, list[tuple[str, dict[str, Any]]]]


def _notices(received: list[tuple[str, dict[str, Any]]], kind: str) -> list[dict[str, Any]]:
    return [payload["event"]["data"] for path, payload in list(received)
            if path == "/leicester" and payload["type"] == kind]


def _wait_for(received: list[tuple[str, dict[str, Any]]], kind: str, count: int) -> list[dict[str, Any]]:
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline and len(_notices(received, kind)) < count:
        time.sleep(0.1)
    return _notices(received, kind)


def test_the_subscriber_is_told_before_its_legal_basis_ends(
        governance: GovernanceService, clock: FakeClock, inbox: Inbox) -> None:
    url, received = inbox
    gov = governance.governance
    gov.register_webhook(as_(LEICESTER, "ig-lead"), f"{url}/leicester")

    clock.to(ENDS - dt.timedelta(days=14, seconds=1))
    gov.tick()
    clock.to(ENDS - dt.timedelta(days=14))
    gov.tick()
    first = _wait_for(received, "legal-basis-ending", 1)
    clock.to(ENDS - dt.timedelta(days=3))
    gov.tick()
    gov.tick()
    notices = [n for n in _wait_for(received, "legal-basis-ending", 2) if n["agreement"] == AGREEMENT]
    assert [(n["days_before"], n["legal_basis_until"], n["ends_at"]) for n in notices] == [
        (14, PLANNING_BASIS_UNTIL.isoformat(), ENDS_STAMP), (3, PLANNING_BASIS_UNTIL.isoformat(), ENDS_STAMP)]
    assert first[0]["agreement"] == AGREEMENT and sorted(first[0]["told"]) == [LEICESTER, "ukhsa"]


def test_a_review_date_raises_a_review_task_the_parties_are_told_of(
        governance: GovernanceService, clock: FakeClock, inbox: Inbox) -> None:
    url, received = inbox
    gov = governance.governance
    gov.register_webhook(as_(LEICESTER, "ig-lead"), f"{url}/leicester")
    review = dt.date.fromisoformat(gov.context().catalog["agreements"]["t1-leicester"]["review_date"])
    clock.to(dt.datetime.combine(review, dt.time(9), tzinfo=dt.UTC))
    gov.tick()
    tasks = {t["task"]: t for t in gov.reviews(LEICESTER, "open")}
    assert f"review-t1-leicester-{review.isoformat()}" in tasks
    told = [n["task"] for n in _wait_for(received, "review-due", 1)]
    assert f"review-t1-leicester-{review.isoformat()}" in told
