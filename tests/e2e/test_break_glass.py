"""Break-glass on the real Kafka, OPA and gate: in a declared emergency an authorised DPH takes immediate,
time-limited access (its template tier), which opens a review dispute; the review, decided after the fact,
refuses, and access stops on the live stream."""

from __future__ import annotations

from typing import Any

import pytest

from broker.adapters.kafka_control import ControlWriter
from broker.demo.synthetic import positive_tests
from broker.errors import NotAuthorisedError
from broker.local.stack import Endpoints
from broker.runtime.gate import GateThread
from broker.runtime.governance import GovernanceService
from broker.services import policy_changes
from tests.e2e.scenario_support import Cleanup, as_, enforced_within, events_of, from_sources, publish, wall
from tests.integration.gate_support import T1, Receiver, end_offsets, specimen_day, topic_for

EAST_MIDLANDS = "E12000004"
NOTTINGHAM = "nottingham-city-council"
TOPIC = topic_for(NOTTINGHAM, "dph")


def test_break_glass_gives_access_at_once_and_its_review_can_end_it(
        services: Endpoints, gate: GateThread, governance: GovernanceService, cleanup: Cleanup,
        receiver: Receiver) -> None:
    gov = governance.governance
    dph = as_(NOTTINGHAM, "dph", "Director of Public Health")
    writer = ControlWriter(services.kafka, client_id="e2e-break-glass")
    try:
        cleanup.revocation("t1-nottingham")
        policy_changes.revoke(writer, "t1-nottingham", "break-glass test: no agreement in force", by="e2e")
    finally:
        writer.close()
    with pytest.raises(NotAuthorisedError, match="break-glass needs"):
        gov.break_glass(dph, T1, "health-protection", "no emergency declared yet")

    cleanup.level(EAST_MIDLANDS)
    gov.declare(as_("ukhsa", "governance-board"), EAST_MIDLANDS, "emergency", "outbreak in Nottingham")
    started = wall()
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
    assert wall() - started < 20

    decided_at = wall()
    ended = gov.decide(review.id, as_("ukhsa", "ig-lead", "UKHSA IG Lead"), _refusal())
    assert events_of(ended)[-2:] == ["decided", "enforced"]
    assert grant_id not in gov.state.grants
    assert enforced_within(services, ended, decided_at) < 1.0
    start, sources = _publish(services, "H")
    assert receiver.records(TOPIC, start, from_sources(sources), want=1, timeout_s=3) == []


def _refusal() -> Any:
    from broker.domain.adjudication import Decision
    return Decision(outcome="refused", reason="Reviewed: the outbreak team already has the cases; access ends.")


def _publish(services: Endpoints, tag: str) -> tuple[int, dict[bytes, dict[str, Any]]]:
    cases = positive_tests(specimen_day(), {"nottingham": 2, "leicester": 1}, prefix=f"BG{tag}")
    start = end_offsets(services.kafka, [TOPIC])[TOPIC]
    return start, publish(services, T1, cases)
