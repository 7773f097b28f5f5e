"""Domain scenario 6, onward sharing of T3 to a processor, on the real Kafka, OPA and gate.

Leicester City Council receives the Shielded Patient List under its T3 agreement and asks that its food-parcel
provider, a voluntary-sector processor, receive it too, NHS numbers included. NHS Digital's IG lead grants in part,
for a period: name, address and phone, which is all a delivery needs. The processor then receives exactly those
fields of Leicester's patients, and never a row of a neighbouring council's.
"""

from __future__ import annotations

import datetime as dt
from typing import Any

from broker.demo.synthetic import shielded_patients
from broker.domain.adjudication import Decision, DisputeRequest
from broker.domain.topics import delivery_topic
from broker.local.stack import Endpoints
from broker.runtime.gate import GateThread
from broker.runtime.governance import GovernanceService
from tests.e2e.scenario_support import Cleanup, as_, events_of, from_sources, publish
from tests.integration.gate_support import Receiver, end_offsets, specimen_day

T3 = "nhsd.shielded-patients"
LEICESTER = "leicester-city-council"
FOOD_BANK = "leicester-food-bank-network"
FOOD_BANK_TOPIC = delivery_topic(FOOD_BANK, "food-parcels", T3)
LEICESTER_UTLA = "E06000016"
CONTACT = {"name", "address", "phone"}


def test_publisher_grants_the_processor_contact_fields_only_for_a_period(
        services: Endpoints, gate: GateThread, governance: GovernanceService, cleanup: Cleanup,
        receiver: Receiver) -> None:
    gov = governance.governance
    before = _publish_patients(services, seed=1)
    assert receiver.records(FOOD_BANK_TOPIC, before[0], from_sources(before[1]), want=1, timeout_s=3) == []

    dispute = gov.raise_dispute(as_(LEICESTER, "dph", "Director of Public Health"), DisputeRequest(
        kind="refusal", stream=T3, role="food-parcels", purpose="shielding-support", subscriber=FOOD_BANK,
        fields=("name", "address", "phone", "nhs_number"),
        justification="Our food-parcel provider delivers to shielded residents; it needs to know who and where."))
    cleanup.grants([f"dispute-{dispute.id}"])
    assert (dispute.subscriber, dispute.challenger.body, dispute.tier) == (FOOD_BANK, LEICESTER, 0)
    assert dispute.sought["areas"] == [LEICESTER_UTLA]

    until = dt.datetime.now(dt.UTC).replace(microsecond=0) + dt.timedelta(days=56)
    decided = gov.decide(dispute.id, as_("nhsd", "ig-lead"), Decision(
        outcome="granted-in-part", fields=tuple(sorted(CONTACT)), until=until,
        reason="as the council's processor, for parcels only: name, address and phone; an NHS number is not "
               "needed to deliver food"))

    assert events_of(decided)[-3:] == ["approved", "decided", "enforced"]
    grant = (decided.decision or {})["grant"]
    assert (grant["subscriber"], grant["tiers"][0]["roles"]) == (FOOD_BANK, ["food-parcels"])
    assert set(grant["tiers"][0]["fields"]) == CONTACT and grant["tiers"][0]["other_fields"] == "drop"
    assert grant["valid_until"].startswith(until.strftime("%Y-%m-%dT%H:%M:%S"))

    start, sources = _publish_patients(services, seed=2)
    leicester = [row for row in sources.values() if row["utla"] == LEICESTER_UTLA]
    received = receiver.records(FOOD_BANK_TOPIC, start, from_sources(sources), want=len(leicester))
    assert all(set(value) == CONTACT for value, _ in received), [sorted(value) for value, _ in received]
    assert sorted(map(_contact, (v for v, _ in received)), key=repr) == sorted(map(_contact, leicester), key=repr)
    for value, _ in received:
        assert not {"nhs_number", "dob", "gp_practice_code"} & set(value), value


def _publish_patients(services: Endpoints, seed: int) -> tuple[int, dict[bytes, dict[str, Any]]]:
    patients = shielded_patients(specimen_day(), {"leicester": 4, "blaby": 2, "nottingham": 2}, seed=seed)
    start = end_offsets(services.kafka, [FOOD_BANK_TOPIC])[FOOD_BANK_TOPIC]
    return start, publish(services, T3, patients)


def _contact(row: dict[str, Any]) -> tuple[Any, ...]:
    return tuple(row[name] for name in sorted(CONTACT))
