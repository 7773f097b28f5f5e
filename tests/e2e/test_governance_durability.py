"""The governance service on the real Kafka: its topic is the source of truth. Stopped mid-dispute and started
again after deadlines passed, it loses nothing, and the missed deadlines fire at start, counted from when they
passed, so the dispute still ends within the ladder's bound. Webhooks reach the parties and deciders."""

from __future__ import annotations

import uuid
from secrets import token_bytes
from typing import Any

from broker.domain.adjudication import DisputeRequest
from broker.domain.audit import new_signing_key
from broker.domain.webhooks import parse_allow
from broker.local.stack import Endpoints
from broker.runtime.governance import GovernanceService
from tests.conftest import SCHEMAS, governance_service
from tests.e2e.scenario_support import FakeClock, as_, deadline_of, events_of
from tests.integration.gate_support import T1

LEICESTER = "leicester-city-council"
WEBHOOK_SECRET = token_bytes(32)


def _service(services: Endpoints, clock: FakeClock, run: str) -> GovernanceService:
    return governance_service(services, audit_key=new_signing_key(), schemas_dir=SCHEMAS,
                             webhook_secret=WEBHOOK_SECRET, webhook_allow=parse_allow("127.0.0.1/32"), clock=clock,
                             tick_s=3600.0, transactional_id=f"e2e-gov-{run}",
                             topic=f"_accord.governance.e2e-{run}", audit_topic=f"_accord.audit.e2e-{run}",
                             webhook_backoff_s=0.05).start()


def _request() -> DisputeRequest:
    return DisputeRequest(kind="restriction", stream=T1, role="dph", purpose="health-protection",
                          fields=("occupation", "lab_report_date"), urgency="routine",
                          justification="Occupation is needed to find workplace clusters.")


def test_restart_mid_dispute_loses_nothing_and_missed_deadlines_fire(
        services: Endpoints, applied_catalog: dict[str, Any], clock: FakeClock) -> None:
    run = uuid.uuid4().hex[:8]
    first = _service(services, clock, run)
    try:
        gov = first.governance
        dispute = gov.raise_dispute(as_(LEICESTER, "dph"), _request())
        gov.comment(dispute.id, as_("ukhsa", "ig-lead"), "Looking at it; occupation is sparse in this feed.")
        before = gov.dispute(dispute.id)
    finally:
        first.stop()
    assert (before.tier, before.level) == (0, "normal")

    # Down for eleven days: the publisher's 5 days and the board's 10 days both pass unanswered.
    clock.to(deadline_of(before))
    clock.advance(days=11)
    second = _service(services, clock, run)
    try:
        after = second.governance.dispute(dispute.id)
        assert after.timeline[:3] == before.timeline
        assert events_of(after) == ["raised", "tier-opened", "commented", "tier-opened", "tier-opened"]
        assert after.tier == 2
        assert (deadline_of(after) - before.raised_at).days == 5 + 10 + 5      # the bound at the normal level
        clock.to(deadline_of(after))
        second.governance.tick()
        ended = second.governance.dispute(dispute.id)
    finally:
        second.stop()
    assert events_of(ended)[-3:] == ["defaulted", "enforced", "closed"]
    assert (ended.decision or {})["outcome"] == "refused" and "refusal stands" in (ended.decision or {})["reason"]
    assert ended.decision is not None and "grant" not in ended.decision


def test_every_transition_is_sent_to_the_parties_and_the_current_deciders(
        services: Endpoints, applied_catalog: dict[str, Any], clock: FakeClock,
        inbox: tuple[str, list[tuple[str, dict[str, Any]]]]) -> None:
    url, received = inbox
    service = _service(services, clock, uuid.uuid4().hex[:8])
    try:
        gov = service.governance
        for body, role in ((LEICESTER, "dph"), ("ukhsa", "ig-lead"), ("dhsc", "governance-board")):
            gov.register_webhook(as_(body, role), f"{url}/{body}")
        dispute = gov.raise_dispute(as_(LEICESTER, "dph"), _request())
        clock.to(deadline_of(dispute))
        gov.tick()          # escalates to the board: dhsc is now a decider
        assert service.notifier.wait_idle(10)
        log = service.notifier.log()
    finally:
        service.stop()
    by_body: dict[str, list[str]] = {}
    for path, payload in received:
        if (payload.get("dispute") or {}).get("id") == dispute.id:
            by_body.setdefault(path.strip("/"), []).append(payload["type"])
    assert by_body[LEICESTER] == ["raised", "tier-opened", "tier-opened"]
    assert by_body["ukhsa"] == ["raised", "tier-opened", "tier-opened"]       # publisher: a party throughout
    assert by_body["dhsc"] == ["tier-opened"]                                 # a decider from tier 2 only
    mine = [d for d in log if d.body == "dhsc" and d.type == "tier-opened"]
    assert mine and all(d.outcome == "delivered" for d in mine)
