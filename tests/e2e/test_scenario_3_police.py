"""Domain scenario 3, police request a standing T7 feed, on the real Kafka, OPA and gate.

Leicestershire Police ask for every instruction to self-isolate in Leicester and Leicestershire. Each tier refuses
on purpose limitation (the data was collected to pay self-isolation support, not for enforcement), the publisher
records the public-health counter-argument (people would stop getting tested), and the arbiter's refusal ends the
dispute. Throughout, T7 flows to Blaby's benefits team under its agreement and never to the police.
The per-case audited lookup the domain expects instead (notified yes/no and dates for one case) is not built yet.
"""

from __future__ import annotations

from typing import Any

import pytest

from broker.demo.synthetic import isolation_notifications
from broker.domain.adjudication import Decision, DisputeRequest
from broker.domain.topics import delivery_topic
from broker.errors import GovernanceError
from broker.local.stack import Endpoints
from broker.runtime.gate import GateThread
from broker.runtime.governance import GovernanceService
from tests.e2e.scenario_support import Cleanup, as_, events_of, from_sources, publish
from tests.integration.gate_support import Receiver, end_offsets, specimen_day

T7 = "ukhsa.isolation-notifications"
POLICE = "leicestershire-police"
POLICE_TOPIC = delivery_topic(POLICE, "investigations", T7)
BLABY_TOPIC = delivery_topic("blaby-district-council", "benefits", T7)
BLABY = "E07000129"
DETERRENCE = ("If isolation records reach the police, people will avoid testing and contact tracing; the "
              "deterrence costs more lives than enforcement saves.")


def test_standing_police_feed_is_refused_at_every_tier_while_the_stream_flows_to_its_agreed_subscriber(
        services: Endpoints, gate: GateThread, governance: GovernanceService, cleanup: Cleanup,
        receiver: Receiver) -> None:
    gov = governance.governance
    starts = end_offsets(services.kafka, [POLICE_TOPIC, BLABY_TOPIC])
    published = _publish(services, seed=1)

    police = as_(POLICE, "investigations", "Detective Inspector")
    dispute = gov.raise_dispute(police, DisputeRequest(
        kind="refusal", stream=T7, role="investigations", purpose="law-enforcement",
        fields=("ctas_id", "postcode", "ltla", "isolation_start", "isolation_end", "notified"),
        justification="A standing feed lets officers check breaches of self-isolation reported to us."))
    cleanup.grants([f"dispute-{dispute.id}"])     # nothing should be granted; if it were, undo it
    assert (dispute.publisher, dispute.tier) == ("ukhsa", 0)

    gov.decide(dispute.id, as_("ukhsa", "ig-lead"), _refusal(
        "purpose limitation: T7 was collected to pay self-isolation support, not for enforcement"))
    gov.comment(dispute.id, as_("ukhsa", "ig-lead"), DETERRENCE)
    gov.appeal(dispute.id, police, "Enforcement is a public-health measure too")
    board = _refusal("a standing feed of everyone told to isolate is disproportionate to any one investigation")
    for body in ("nhsd", "dhsc"):
        at_board = gov.decide(dispute.id, as_(body, "governance-board"), board)
    assert (at_board.state, at_board.tier) == ("enforced", 1)
    gov.appeal(dispute.id, police, "The board did not weigh the risk of unreported breaches")
    ended = gov.decide(dispute.id, as_("accord-arbiter", "arbiter"), _refusal("purpose limitation holds"))

    assert (ended.state, ended.tier) == ("closed", 2)
    assert events_of(ended) == [
        "raised", "tier-opened", "approved", "decided", "enforced", "commented", "appealed", "tier-opened",
        "approved", "approved", "decided", "enforced", "appealed", "tier-opened", "approved", "decided", "enforced",
        "closed"]
    comment = next(e for e in ended.timeline if e["type"] == "commented")
    assert (comment["actor"]["body"], comment["data"]["text"]) == ("ukhsa", DETERRENCE)
    decisions = [e["data"] for e in ended.timeline if e["type"] == "decided"]
    assert [(d["outcome"], len(d["by"]), "grant" in d) for d in decisions] == [
        ("refused", 1, False), ("refused", 2, False), ("refused", 1, False)]
    assert ended.timeline[-1]["data"]["why"] == "decided at the last tier"
    with pytest.raises(GovernanceError, match="is closed"):
        gov.appeal(dispute.id, police, "One more try")

    published |= _publish(services, seed=2)
    blaby = [row for row in published.values() if row["ltla"] == BLABY]
    received = receiver.records(BLABY_TOPIC, starts[BLABY_TOPIC], from_sources(published), want=len(blaby))
    assert sorted(value["ctas_id"] for value, _ in received) == sorted(row["ctas_id"] for row in blaby)
    assert receiver.records(POLICE_TOPIC, starts[POLICE_TOPIC], from_sources(published), want=1, timeout_s=2) == []


def _refusal(reason: str) -> Decision:
    return Decision(outcome="refused", reason=reason)


def _publish(services: Endpoints, seed: int) -> dict[bytes, dict[str, Any]]:
    rows = isolation_notifications(specimen_day(), {"leicester": 3, "blaby": 2, "charnwood": 2}, seed=seed)
    return publish(services, T7, rows)
