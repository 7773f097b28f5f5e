"""The gate applies the National Data Opt-out per plan: a covered plan's subscriber does not receive an opted-out
patient's row (nor one naming no patient), an exempt plan's does; withheld rows are counted and audited apart from
quarantine."""

from __future__ import annotations

import json
from typing import Any

import pytest

from broker.domain.optout import NO_NHS_NUMBER, OPTED_OUT, digest
from broker.domain.plans import Plan
from broker.domain.topics import QUARANTINE_PREFIX, delivery_topic
from broker.errors import PolicyEngineError
from broker.services.planner import PLAN_RULE
from tests.unit.gate_fakes import DPH_TIER, INGEST, T1, FakeControl, GateHarness, agreement, catalog_document, make_gate

KEY = b"unit-test-optout-key-32-bytes!!!"
OPTED = "9434765919"
NOT_OPTED = "4010232137"
COVERED = {"applies": True, "why": "section 251 support (COPI regulations 2 and 5) for research or planning"}
EXEMPT = {"applies": False, "why": "COPI regulation 3"}
PLANNING = delivery_topic("leicester-city-council", "dph", T1)
COPI = delivery_topic("leicester-city-council", "ig-lead", T1)


class Withheld:
    def __init__(self) -> None:
        self.counts: dict[tuple[str, str, str, str], int] = {}

    def __call__(self, subscriber: str, role: str, stream: str, reason: str, n: int) -> None:
        key = (subscriber, role, stream, reason)
        self.counts[key] = self.counts.get(key, 0) + n


def harness(withheld: Withheld, optout: FakeControl) -> GateHarness:
    planning = {**agreement("leicester-city-council", "E06000016", DPH_TIER, purpose="service-planning"),
                "legal_basis": ["copi-reg-5-s251"], "national_data_opt_out": COVERED}
    copi = {**agreement("leicester-city-council", "E06000016",
                        {**DPH_TIER, "name": "ig", "roles": ["ig-lead"]}), "national_data_opt_out": EXEMPT}
    document = catalog_document(**{"t1-leicester": planning, "t1-leicester-copi": copi})
    h = make_gate(document, optout=optout, optout_key=KEY, withheld=withheld)
    h.gate.start()
    return h


def subscriptions(h: GateHarness, purpose: str, role: str) -> Any:
    return [p for p in h.engine.plan_requests() if p["purpose"] == purpose and p["role"] == role]


def test_an_opted_out_patient_is_withheld_from_the_covered_plan_only() -> None:
    withheld, optout = Withheld(), FakeControl()
    optout.append_record(digest(KEY, OPTED), b'{"opted_out": true}', 1)
    h = harness(withheld, optout)
    h.stage.queue(h.record(0, nhs_number=OPTED), h.record(1, nhs_number=NOT_OPTED), h.record(2, nhs_number=None))
    h.gate.step()

    planning = [h.decode(s)["nhs_number"] for s in h.delivered(PLANNING)]  # type: ignore[index]
    copi = [h.decode(s)["nhs_number"] for s in h.delivered(COPI)]  # type: ignore[index]
    assert planning == [NOT_OPTED]
    assert copi == [OPTED, NOT_OPTED, None]
    assert withheld.counts == {("leicester-city-council", "dph", T1, OPTED_OUT): 1,
                               ("leicester-city-council", "dph", T1, NO_NHS_NUMBER): 1}
    assert not [s for s in h.stage.committed() if s.topic.startswith(QUARANTINE_PREFIX)], "withheld is not quarantine"
    audit = [json.loads(s.value or b"") for s in h.stage.transactions[-1].audit if s.key == b"withheld-batch"]
    assert audit == [{
        "topic": PLANNING, "subscriber": "leicester-city-council", "role": "dph", "stream": T1,
        "purpose": "service-planning", "revision": audit[0]["revision"], "rule": "national-data-opt-out",
        "records": 2, "reasons": {NO_NHS_NUMBER: 1, OPTED_OUT: 1},
        "sources": [{"topic": INGEST, "partition": 0, "offsets": [[0, 0], [2, 2]]}],
        "worker": "worker-1", "at": audit[0]["at"]}]
    assert OPTED not in json.dumps(audit) and NOT_OPTED not in json.dumps(audit)


def test_a_patient_opting_back_in_is_delivered_from_the_next_batch() -> None:
    withheld, optout = Withheld(), FakeControl()
    optout.append_record(digest(KEY, OPTED), b'{"opted_out": true}', 1)
    h = harness(withheld, optout)
    h.stage.queue(h.record(0, nhs_number=OPTED))
    h.gate.step()
    optout.append_record(digest(KEY, OPTED), None, 2)
    h.stage.queue(h.record(1, nhs_number=OPTED))
    h.gate.step()

    assert [s.headers["accord.source"] for s in h.delivered(PLANNING)] == [f"{INGEST}/0/1".encode()]
    assert len(h.gate.opted_out) == 0


def test_the_plan_says_whether_the_opt_out_applies_and_why() -> None:
    h = harness(Withheld(), FakeControl())
    plans = {d.plan.topic: d.plan for ds in h.gate.deliveries.values() for d in ds}
    assert plans[PLANNING].opt_out and plans[PLANNING].opt_out_reasons == (f"t1-leicester: {COVERED['why']}",)
    assert not plans[COPI].opt_out and plans[COPI].opt_out_reasons == ("t1-leicester-copi: COPI regulation 3",)
    assert subscriptions(h, "service-planning", "dph")


def test_an_entry_that_is_not_a_keyed_hash_is_ignored_and_never_logged(caplog: Any) -> None:
    withheld, optout = Withheld(), FakeControl()
    optout.append_record(OPTED, b'{"opted_out": true}', 1)   # a plain number written by mistake
    h = harness(withheld, optout)
    h.stage.queue(h.record(0, nhs_number=OPTED))
    h.gate.step()
    assert len(h.gate.opted_out) == 0 and len(h.delivered(PLANNING)) == 1
    assert "not a keyed hash" in caplog.text and OPTED not in caplog.text


def test_a_plan_with_a_malformed_opt_out_is_refused() -> None:
    h = harness(Withheld(), FakeControl())
    request = next(r for r in h.engine.plan_requests() if r["purpose"] == "service-planning")
    plan = h.engine.evaluate(PLAN_RULE, request)
    assert Plan.from_opa(plan).opt_out is True
    with pytest.raises(PolicyEngineError, match="opt_out"):
        Plan.from_opa({**plan, "opt_out": {"applies": "yes", "reasons": []}})
