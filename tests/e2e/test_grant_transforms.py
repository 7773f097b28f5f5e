"""A dispute decision grants fields transformed (issue 21 part 4), on the real Kafka, OPA, registry and gate.

Blaby's environmental health, refused T1, asks for date of birth, postcode, name, NHS number and LSOA; the
publisher's IG lead grants them, but dob only as a 5-year age band at the specimen date, the postcode cut to its
district, the name masked and the NHS number pseudonymised. The district then receives exactly that, and the
schema delivered with the rows says so.
"""

from __future__ import annotations

import re
from typing import Any

from broker.demo.synthetic import nhs_number, positive_tests
from broker.domain.adjudication import Decision, DisputeRequest
from broker.domain.grant_fields import FieldGrant
from broker.domain.transforms import age_band, postcode_district
from broker.local.stack import Endpoints
from broker.runtime.gate import GateThread
from broker.runtime.governance import GovernanceService
from tests.e2e.scenario_support import Cleanup, as_, from_sources, publish, wait_enforced, wall
from tests.integration.gate_support import T1, Receiver, end_offsets, specimen_day, topic_for

BLABY = "blaby-district-council"
TOPIC = topic_for(BLABY, "environmental-health")
SOUGHT = ("dob", "postcode", "name", "nhs_number", "lsoa", "specimen_date")
TRANSFORMS = {
    "dob": FieldGrant("generalise", "age-band", at="specimen_date"),
    "postcode": FieldGrant("generalise", "postcode-district"),
    "name": FieldGrant("mask", keep_last=2),
    "nhs_number": FieldGrant("pseudonymise"),
}


def test_a_decision_grants_dob_as_an_age_band_and_the_delivery_carries_only_the_transformed_values(
        services: Endpoints, gate: GateThread, governance: GovernanceService, cleanup: Cleanup,
        receiver: Receiver) -> None:
    gov = governance.governance
    eh = as_(BLABY, "environmental-health", "Head of Environmental Health")
    dispute = gov.raise_dispute(eh, DisputeRequest(
        kind="refusal", stream=T1, role="environmental-health", purpose="outbreak-control", fields=SOUGHT,
        urgency="urgent", justification="Outbreak OB-2026-044: we need ages and districts, not identities."))
    cleanup.grants([f"dispute-{dispute.id}"])
    started = wall()
    decided = gov.decide(dispute.id, as_("ukhsa", "ig-lead"), Decision(
        "granted-in-part", "Ages and districts suffice for the cluster; identities stay with the county DPH.",
        transforms=TRANSFORMS))
    fields = (decided.decision or {})["grant"]["tiers"][0]["fields"]
    assert fields["dob"] == {"transform": "generalise", "method": "age-band", "as": "age_band",
                             "params": {"at": "specimen_date"}}
    wait_enforced(services, decided, started)

    cases = positive_tests(specimen_day(), {"blaby": 3, "charnwood": 1}, prefix="GT")
    for n, published in enumerate(cases):
        published["nhs_number"] = nhs_number(7700 + n)
    start = end_offsets(services.kafka, [TOPIC])[TOPIC]
    sources = publish(services, T1, cases)
    got = receiver.records(TOPIC, start, from_sources(sources), want=3)
    assert len(got) == 3, "Blaby's three rows, not Charnwood's"
    pseudonyms = set()
    for value, headers in got:
        case: dict[str, Any] = sources[headers["accord.source"]]
        assert set(value) == {"age_band", "postcode_district", "name", "nhs_number", "lsoa", "specimen_date"}
        assert value["age_band"] == age_band(case["dob"], case["specimen_date"])
        assert value["postcode_district"] == postcode_district(case["postcode"])
        assert value["name"] == "****" + case["name"][-2:]
        assert re.fullmatch("[0-9a-f]{32}", value["nhs_number"]) and value["nhs_number"] != case["nhs_number"]
        assert (value["lsoa"], value["specimen_date"]) == (case["lsoa"], case["specimen_date"])
        pseudonyms.add(value["nhs_number"])
    assert len(pseudonyms) == 3, "three people, three pseudonyms"
