"""Domain scenario 1, "no DSA, no data" (Leicester, June 2020), on the real Kafka, OPA and gate.

Leicester's DPH has no agreement in force for T1 (its agreement is revoked here to stand for the missing DSA).
In a declared emergency for the East Midlands it disputes the refusal; the publisher's IG lead never answers,
nor does anyone else, so the dispute climbs every tier on its deadlines and ends in the decisive default: a
provisional grant of T1's minimised tier for 14 days, with a mandatory review. Data flows within a second.
"""

from __future__ import annotations

from typing import Any

from broker.demo.synthetic import positive_tests
from broker.domain.adjudication import DisputeRequest
from broker.local.stack import Endpoints
from broker.runtime.gate import GateThread
from broker.runtime.governance import GovernanceService
from broker.services import policy_changes
from tests.conftest import TEST_OPERATOR, control_writer
from tests.e2e.scenario_support import (
    Cleanup,
    FakeClock,
    as_,
    deadline_of,
    events_of,
    from_sources,
    publish,
    wait_enforced,
    wall,
)
from tests.integration.gate_support import T1, Receiver, end_offsets, specimen_day, topic_for

EAST_MIDLANDS = "E12000004"
LEICESTER = "leicester-city-council"
DPH_TOPIC = topic_for(LEICESTER, "dph")
MINIMISED = {"lsoa", "age_band", "sex"}


def test_no_dsa_dispute_ends_in_a_provisional_grant_by_default(
        services: Endpoints, gate: GateThread, governance: GovernanceService, clock: FakeClock,
        cleanup: Cleanup, receiver: Receiver) -> None:
    gov = governance.governance
    writer = control_writer(services.kafka, client_id="e2e-scenario-1")
    try:
        cleanup.revocation("t1-leicester")
        policy_changes.revoke(writer, "t1-leicester", "scenario 1: no DSA signed yet", by=TEST_OPERATOR)
    finally:
        writer.close()
    cleanup.level(EAST_MIDLANDS)
    gov.declare(as_("dhsc", "governance-board"), EAST_MIDLANDS, "emergency", "surge in Leicester")

    before = _publish_day(services, "B")
    assert receiver.records(DPH_TOPIC, before[0], from_sources(before[1]), want=1, timeout_s=3) == []

    dispute = gov.raise_dispute(as_(LEICESTER, "dph", "Director of Public Health"), DisputeRequest(
        kind="refusal", stream=T1, role="dph", purpose="health-protection",
        fields=("specimen_id", "nhs_number", "name", "address", "postcode", "specimen_date", "lsoa"),
        justification="Local figures show 80 cases, national 944: we need the line list to act now.",
        urgency="immediate", decision_id="t1-leicester", policy_revision="revoked"))
    assert (dispute.tier, dispute.level) == (0, "emergency")
    raised_at = dispute.raised_at
    bound = deadline_of(dispute)

    # Nobody decides: each tier's deadline passes in turn (publisher 2 h, board 4 h, arbiter 1 h in an emergency).
    for expected_tier in (1, 2):
        clock.to(deadline_of(gov.dispute(dispute.id)))
        governance.governance.tick()
        assert gov.dispute(dispute.id).tier == expected_tier
    bound = deadline_of(gov.dispute(dispute.id))
    assert (bound - raised_at).total_seconds() == (2 + 4 + 1) * 3600
    clock.to(bound)
    started = wall()
    gov.tick()
    ended = gov.dispute(dispute.id)

    assert events_of(ended) == ["raised", "tier-opened", "tier-opened", "tier-opened", "defaulted", "enforced",
                                "closed"]
    decision = ended.decision or {}
    assert decision["outcome"] == "granted-for-period" and decision["by"] == []
    assert "provisional grant" in decision["reason"] and "minimised tier" in decision["reason"]
    grant = decision["grant"]
    cleanup.grants([grant["id"]])
    assert grant["tiers"][0]["roles"] == ["dph"] and set(grant["tiers"][0]["fields"]) == {"lsoa", "dob", "sex"}
    review = gov.dispute(f"{dispute.id}-review")
    assert (review.kind, review.state, review.tier) == ("provisional-review", "awaiting", 0)

    wait_enforced(services, ended, started)

    start, sources = _publish_day(services, "A")
    received = receiver.records(DPH_TOPIC, start, from_sources(sources), want=3)
    leicester = [r for r in sources.values() if r["ltla"] == "E06000016"]
    assert len(received) == len(leicester) == 3
    for value, _ in received:
        assert set(value) == MINIMISED, value     # the minimised tier only, no identifiers


def _publish_day(services: Endpoints, tag: str) -> tuple[int, dict[bytes, dict[str, Any]]]:
    cases = positive_tests(specimen_day(), {"leicester": 3, "nottingham": 2, "blaby": 1}, prefix=f"S1{tag}")
    start = end_offsets(services.kafka, [DPH_TOPIC])[DPH_TOPIC]
    return start, publish(services, T1, cases)
