"""Domain scenario 2, granularity (vaccination 2021), on the real Kafka, OPA and gate.

Nottingham's DPH has no T6 agreement and asks for vaccination uptake at LSOA x ethnic group. The publisher's IG
lead refuses, citing re-identification, and offers UTLA counts only; the DPH appeals, and the governance board
(two members, neither a party) grants the restricted channel to the DPH role. The DPH then receives its own
cells unsuppressed, small counts included: small-cell suppression applies on publication, not here.
"""

from __future__ import annotations

from typing import Any

import pytest

from broker.demo.synthetic import vaccination_cells
from broker.domain.adjudication import Decision, DisputeRequest
from broker.domain.topics import delivery_topic
from broker.errors import NotAuthorisedError
from broker.local.stack import Endpoints
from broker.runtime.gate import GateThread
from broker.runtime.governance import GovernanceService
from tests.e2e.scenario_support import Cleanup, as_, events_of, from_sources, publish, wait_enforced, wall
from tests.integration.gate_support import Receiver, end_offsets, specimen_day

T6 = "nis.vaccination-uptake"
NOTTINGHAM = "nottingham-city-council"
NOTTINGHAM_UTLA = "E06000018"
DPH_TOPIC = delivery_topic(NOTTINGHAM, "dph", T6)
CELL = ("as_at_date", "lsoa", "utla", "age_band", "ethnicity_group", "dose", "vaccinated_n", "eligible_n")
GRANTED = Decision(outcome="granted", reason="the DPH role needs LSOA x ethnic group to target outreach; the "
                   "restricted channel is unsuppressed and small-cell suppression applies on publication")


def test_board_grants_the_restricted_channel_after_the_publisher_offers_utla_counts_only(
        services: Endpoints, gate: GateThread, governance: GovernanceService, cleanup: Cleanup,
        receiver: Receiver) -> None:
    gov = governance.governance
    before = _publish_cells(services, seed=1)
    assert receiver.records(DPH_TOPIC, before[0], from_sources(before[1]), want=1, timeout_s=3) == []

    dph = as_(NOTTINGHAM, "dph", "Director of Public Health")
    dispute = gov.raise_dispute(dph, DisputeRequest(
        kind="restriction", stream=T6, role="dph", purpose="health-protection", fields=CELL,
        justification="Uptake among Black Caribbean residents lags in three LSOAs; UTLA totals hide where."))
    cleanup.grants([f"dispute-{dispute.id}"])
    assert (dispute.publisher, dispute.tier, set(dispute.sought["fields"])) == ("nis", 0, set(CELL))

    refused = gov.decide(dispute.id, as_("nis", "ig-lead"), Decision(
        outcome="refused", reason="LSOA x ethnic group cells under 3 risk re-identification; we offer UTLA "
        "counts only"))
    assert (refused.state, (refused.decision or {}).get("grant")) == ("enforced", None)
    appealed = gov.appeal(dispute.id, dph, "UTLA counts cannot show which neighbourhoods to visit")
    assert (appealed.state, appealed.tier) == ("awaiting", 1)

    with pytest.raises(NotAuthorisedError, match="party"):
        gov.decide(dispute.id, as_("nis", "governance-board"), GRANTED)
    first = gov.decide(dispute.id, as_("ukhsa", "governance-board"), GRANTED)
    assert (first.state, len(first.approvals), first.decision) == ("awaiting", 1, None), \
        "one board member alone must not decide"
    started = wall()
    decided = gov.decide(dispute.id, as_("dhsc", "governance-board"), GRANTED)

    assert events_of(decided)[-4:] == ["approved", "approved", "decided", "enforced"]
    decision = decided.decision or {}
    assert [a["body"] for a in decision["by"]] == ["ukhsa", "dhsc"]
    grant = decision["grant"]
    assert grant["tiers"][0]["roles"] == ["dph"] and set(grant["tiers"][0]["fields"]) == set(CELL)
    assert grant["row_scope"]["areas"] == [NOTTINGHAM_UTLA]
    wait_enforced(services, decided, started)

    start, sources = _publish_cells(services, seed=2)
    ours = [cell for cell in sources.values() if cell["utla"] == NOTTINGHAM_UTLA]
    received = receiver.records(DPH_TOPIC, start, from_sources(sources), want=len(ours))
    assert sorted(_key(value) for value, _ in received) == sorted(_key(cell) for cell in ours)
    assert {value["vaccinated_n"] for value, _ in received} >= {0, 1, 2}, "small cells arrive unsuppressed"
    assert all(value["utla"] == NOTTINGHAM_UTLA for value, _ in received), "another council's cells leaked"


def _publish_cells(services: Endpoints, seed: int) -> tuple[int, dict[bytes, dict[str, Any]]]:
    cells = vaccination_cells(specimen_day(), {"nottingham": 5, "leicester": 3, "blaby": 2}, seed=seed)
    start = end_offsets(services.kafka, [DPH_TOPIC])[DPH_TOPIC]
    return start, publish(services, T6, cells)


def _key(cell: dict[str, Any]) -> tuple[Any, ...]:
    return tuple(cell[name] for name in CELL)
