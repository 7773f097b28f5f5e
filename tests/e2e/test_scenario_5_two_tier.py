"""Domain scenario 5, two-tier conflict, on the real Kafka, OPA and gate: a district's environmental health team
wants T1 rows for a food-premises cluster and is refused; on appeal the governance board (2 of its members) grants
a subset for the named outbreak with an expiry: the district's own rows, three fields, 28 days.

The grant names the outbreak in its reason; rows are not yet linked to premises (T1 has no premises field).
"""

from __future__ import annotations

import datetime as dt
from typing import Any

import pytest

from broker.demo.synthetic import positive_tests
from broker.domain.adjudication import Decision, DisputeRequest
from broker.errors import NotAuthorisedError
from broker.local.stack import Endpoints
from broker.runtime.gate import GateThread
from broker.runtime.governance import GovernanceService
from tests.e2e.scenario_support import (
    Cleanup,
    FakeClock,
    as_,
    events_of,
    from_sources,
    publish,
    wait_enforced,
    wall,
)
from tests.integration.gate_support import T1, Receiver, end_offsets, specimen_day, topic_for

BLABY = "blaby-district-council"
TOPIC = topic_for(BLABY, "environmental-health")
GRANTED = {"lsoa", "specimen_date", "occupation"}


def test_district_gets_its_outbreak_subset_on_appeal(
        services: Endpoints, gate: GateThread, governance: GovernanceService, clock: FakeClock,
        cleanup: Cleanup, receiver: Receiver) -> None:
    gov = governance.governance
    eh = as_(BLABY, "environmental-health", "Head of Environmental Health")
    dispute = gov.raise_dispute(eh, DisputeRequest(
        kind="refusal", stream=T1, role="environmental-health", purpose="outbreak-control",
        fields=("lsoa", "specimen_date", "occupation", "postcode"), urgency="urgent",
        justification="Outbreak OB-2026-031: cases linked to a food premises in Blaby."))
    start, sources = _publish(services, "R")
    assert receiver.records(TOPIC, start, from_sources(sources), want=1, timeout_s=3) == []

    with pytest.raises(NotAuthorisedError, match="not one of its deciders"):
        gov.decide(dispute.id, eh, Decision("granted", "we grant ourselves"))
    gov.decide(dispute.id, as_("ukhsa", "ig-lead"), Decision("refused", "The county DPH leads outbreak control."))
    gov.appeal(dispute.id, eh, "Premises inspection is a district duty; we need the linked cases.")
    until = clock() + dt.timedelta(days=28)
    part = Decision("granted-in-part", "OB-2026-031: Blaby's rows, no postcode, 28 days.",
                    fields=("lsoa", "specimen_date", "occupation"), until=until)
    after_one = gov.decide(dispute.id, as_("dhsc", "governance-board", "Board member"), part)
    assert after_one.state == "awaiting" and len(after_one.approvals) == 1
    started = wall()
    decided = gov.decide(dispute.id, as_("nhse", "governance-board", "Board member"), part)
    grant = (decided.decision or {})["grant"]
    cleanup.grants([grant["id"]])
    assert events_of(decided)[-3:] == ["approved", "decided", "enforced"]
    assert grant["row_scope"]["areas"] == ["E07000129"] and grant["valid_until"].startswith(until.strftime("%Y-%m-%dT"))
    wait_enforced(services, decided, started)

    start, sources = _publish(services, "G")
    got = receiver.records(TOPIC, start, from_sources(sources), want=2)
    assert len(got) == 2
    for value, _ in got:
        assert set(value) == GRANTED and value["lsoa"].startswith("E01")


def _publish(services: Endpoints, tag: str) -> tuple[int, dict[bytes, dict[str, Any]]]:
    cases = positive_tests(specimen_day(), {"blaby": 2, "charnwood": 2, "leicester": 1}, prefix=f"S5{tag}")
    start = end_offsets(services.kafka, [TOPIC])[TOPIC]
    return start, publish(services, T1, cases)
