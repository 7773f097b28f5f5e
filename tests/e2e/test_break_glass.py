"""Break-glass on the real Kafka, OPA and gate: in a declared emergency an authorised DPH takes immediate,
time-limited access (its template tier), which opens a review dispute; the review, decided after the fact,
refuses, and access stops on the live stream. Unreviewed, the access ends at its expiry, revoked on the live
stream; and while one break-glass is under review the same body cannot take a second on the same stream."""

from __future__ import annotations

from typing import Any

import pytest
from fastapi.testclient import TestClient

from broker.adapters.kafka_log import KafkaLog
from broker.api.auth import Guard
from broker.api.governance_app import create_governance_app
from broker.config import Settings
from broker.demo.synthetic import positive_tests
from broker.domain.disputes import parse_stamp
from broker.domain.topics import CONTROL_TOPIC, STATUS_TOPIC
from broker.errors import NotAuthorisedError
from broker.local.stack import Endpoints
from broker.runtime.gate import GateThread
from broker.runtime.governance import GovernanceService
from broker.security.api_tokens import verifier_for
from broker.services import policy_changes
from broker.services.policy_changes import Announced
from tests.conftest import TEST_OPERATOR, bearer, control_writer, opa_as
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
NOTTINGHAM = "nottingham-city-council"
TOPIC = topic_for(NOTTINGHAM, "dph")


def test_break_glass_gives_access_at_once_and_its_review_can_end_it(
        services: Endpoints, gate: GateThread, governance: GovernanceService, cleanup: Cleanup,
        receiver: Receiver) -> None:
    gov = governance.governance
    dph = as_(NOTTINGHAM, "dph", "Director of Public Health")
    writer = control_writer(services.kafka, client_id="e2e-break-glass")
    try:
        cleanup.revocation("t1-nottingham")
        policy_changes.revoke(writer, "t1-nottingham", "break-glass test: no agreement in force", by=TEST_OPERATOR)
    finally:
        writer.close()
    with pytest.raises(NotAuthorisedError, match="break-glass needs"):
        gov.break_glass(dph, T1, "health-protection", "no emergency declared yet")

    cleanup.level(EAST_MIDLANDS)
    gov.declare(as_("ukhsa", "governance-board"), EAST_MIDLANDS, "emergency", "outbreak in Nottingham")
    review = gov.break_glass(dph, T1, "health-protection", "Care-home outbreak: cases must be called tonight.")
    grant_id = f"break-glass-{review.id}"
    cleanup.grants([grant_id])
    assert (review.kind, review.state, review.tier) == ("break-glass-review", "awaiting", 0)
    assert grant_id in gov.state.grants
    # The grant went to the control topic with the break-glass event; the gate applies it within a second.
    start, sources = _publish(services, "G")
    got = receiver.records(TOPIC, start, from_sources(sources), want=2)
    assert len(got) == 2 and all(v["ltla"] == "E06000018" for v, _ in got)
    assert {"specimen_id", "nhs_number", "name", "address"} <= set(got[0][0])    # the template's DPH tier

    decided_at = wall()
    ended = gov.decide(review.id, as_("ukhsa", "ig-lead", "UKHSA IG Lead"), _refusal())
    assert events_of(ended)[-2:] == ["decided", "enforced"]
    assert grant_id not in gov.state.grants
    wait_enforced(services, ended, decided_at)
    start, sources = _publish(services, "H")
    assert receiver.records(TOPIC, start, from_sources(sources), want=1, timeout_s=3) == []


def _without_an_agreement(services: Endpoints, cleanup: Cleanup) -> None:
    writer = control_writer(services.kafka, client_id="e2e-break-glass")
    try:
        cleanup.revocation("t1-nottingham")
        policy_changes.revoke(writer, "t1-nottingham", "break-glass test: no agreement in force", by=TEST_OPERATOR)
    finally:
        writer.close()


def test_an_unreviewed_break_glass_is_revoked_on_the_live_stream_at_its_expiry(
        services: Endpoints, gate: GateThread, governance: GovernanceService, cleanup: Cleanup,
        receiver: Receiver, clock: FakeClock) -> None:
    gov = governance.governance
    _without_an_agreement(services, cleanup)
    cleanup.level(EAST_MIDLANDS)
    gov.declare(as_("ukhsa", "governance-board"), EAST_MIDLANDS, "emergency", "outbreak in Nottingham")
    review = gov.break_glass(as_(NOTTINGHAM, "dph"), T1, "health-protection", "Care-home outbreak: call tonight.")
    grant_id = f"break-glass-{review.id}"
    cleanup.grants([grant_id])
    expiry = parse_stamp(gov.state.grants[grant_id]["valid_until"])

    unreviewed = review
    while unreviewed.state == "awaiting":       # nobody reviews it at any tier
        clock.to(deadline_of(unreviewed))
        gov.tick()
        unreviewed = gov.dispute(review.id)
    assert events_of(unreviewed)[-3:] == ["defaulted", "enforced", "closed"]
    assert (unreviewed.decision or {})["outcome"] == "granted-for-period"
    assert grant_id in gov.state.grants             # it runs its course, and no further
    start, sources = _publish(services, "I")
    assert len(receiver.records(TOPIC, start, from_sources(sources), want=2)) == 2

    clock.to(expiry)
    gov.tick()
    # The gate checks grants against its own clock, which is hours behind this service's: only the tombstone
    # the service wrote at the expiry stops delivery. Publish once the gate has applied it.
    _gate_caught_up(services)
    start, sources = _publish(services, "J")
    assert receiver.records(TOPIC, start, from_sources(sources), want=1, timeout_s=3) == []
    assert grant_id not in gov.state.grants


def test_a_second_break_glass_while_the_first_is_under_review_is_a_409(
        services: Endpoints, governance: GovernanceService, cleanup: Cleanup) -> None:
    gov = governance.governance
    cleanup.level(EAST_MIDLANDS)
    gov.declare(as_("ukhsa", "governance-board"), EAST_MIDLANDS, "emergency", "outbreak in Nottingham")
    guard = Guard(verifier_for(Settings().secrets_dir).verify, opa_as(services.opa_url, "reader"))
    client = TestClient(create_governance_app(gov, list, guard=guard))
    dph = bearer(NOTTINGHAM, "dph", "Director of Public Health")
    glass = {"stream": T1, "purpose": "health-protection", "justification": "Care-home outbreak: call tonight."}
    first = client.post("/break-glass", json=glass, headers=dph)
    assert first.status_code == 201, first.text
    cleanup.grants([f"break-glass-{first.json()['id']}"])
    second = client.post("/break-glass", json={**glass, "justification": "And a second care home."}, headers=dph)
    assert second.status_code == 409
    assert second.json()["error"].startswith(
        f"{NOTTINGHAM} already broke glass on {T1}: its review {first.json()['id']} is awaiting at tier 1")
    assert sorted(g for g in gov.state.grants if g.startswith("break-glass-")) == [
        f"break-glass-{first.json()['id']}"]


def _gate_caught_up(services: Endpoints) -> None:
    """Wait until the gate worker reports having applied the control topic up to its current end."""
    end = end_offsets(services.kafka, [CONTROL_TOPIC])[CONTROL_TOPIC]
    log = KafkaLog(services.kafka, client_id="e2e-break-glass-status")
    try:
        policy_changes.enforcement(log, Announced("", end - 1, 0), workers=1, timeout_s=30.0,
                                   status_topic=STATUS_TOPIC)
    finally:
        log.close()


def _refusal() -> Any:
    from broker.domain.adjudication import Decision
    return Decision(outcome="refused", reason="Reviewed: the outbreak team already has the cases; access ends.")


def _publish(services: Endpoints, tag: str) -> tuple[int, dict[bytes, dict[str, Any]]]:
    cases = positive_tests(specimen_day(), {"nottingham": 2, "leicester": 1}, prefix=f"BG{tag}")
    start = end_offsets(services.kafka, [TOPIC])[TOPIC]
    return start, publish(services, T1, cases)
