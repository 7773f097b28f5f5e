"""What reaches the raw audit topic besides governance events: the gate's policy decisions and delivery batches
(in-memory Kafka and OPA), and the policy changes announced on the control topic."""

from __future__ import annotations

import datetime as dt
from typing import Any

import pytest

from broker.domain.audit_records import records_digest
from broker.domain.ladder import Actor
from broker.domain.topics import AUDIT_TOPIC, delivery_topic
from broker.errors import ServiceError
from broker.services import policy_changes
from tests.unit.gate_fakes import INGEST, T1, FakePolicyEngine, GateHarness, catalog_document, make_gate

LEICESTER_DPH = delivery_topic("leicester-city-council", "dph", T1)
LEICESTER_ANALYST = delivery_topic("leicester-city-council", "analyst", T1)
NOTTINGHAM_DPH = delivery_topic("nottingham-city-council", "dph", T1)


@pytest.fixture
def h() -> GateHarness:
    harness = make_gate()
    harness.gate.start()
    return harness


def subscriptions(decisions: list[dict[str, Any]]) -> list[tuple[str, str]]:
    return sorted((d["subscriber"], d["role"]) for d in decisions)


# -- policy decisions --------------------------------------------------------------------------------------------
def test_starting_records_every_decision_with_the_engines_id_and_the_revisions(h: GateHarness) -> None:
    revision = catalog_document()["revision"]
    assert subscriptions(h.decisions) == [
        ("leicester-city-council", "analyst"), ("leicester-city-council", "dph"),
        ("leicestershire-county-council", "dph"), ("nottingham-city-council", "dph")]
    assert {d["kind"] for d in h.decisions} == {"policy-decision"}
    assert len({d["decision_id"] for d in h.decisions}) == 4 and all(d["decision_id"] for d in h.decisions)
    assert {(d["revision"], d["catalog_revision"], d["worker"], d["allow"]) for d in h.decisions} == {
        (f"{revision}/1", revision, "worker-1", True)}


def test_a_periodic_replan_that_changes_nothing_records_nothing(h: GateHarness) -> None:
    h.clock.now += dt.timedelta(seconds=10)
    h.gate.sync()
    assert len(h.engine.plan_requests()) == 8  # OPA was asked again
    assert len(h.decisions) == 4


def test_a_revocation_records_the_new_decisions_before_any_record_is_delivered_under_them(h: GateHarness) -> None:
    h.control.append("revocation/t1-nottingham", {"kind": "revocation", "agreement": "t1-nottingham"})
    h.stage.queue(h.record(0, "nottingham"))
    h.gate.step()

    later = h.decisions[4:]
    assert subscriptions(later) == subscriptions(h.decisions[:4])  # every plan's revision moved on
    [nottingham] = [d for d in later if d["subscriber"] == "nottingham-city-council"]
    assert (nottingham["allow"], nottingham["agreements"]) == (False, [])
    assert h.delivered(NOTTINGHAM_DPH) == [] and h.stage.audited() == []


def test_a_failing_audit_write_fails_the_replan_closed() -> None:
    h = make_gate(audit=_refuse)
    with pytest.raises(ServiceError, match="audit topic"):
        h.gate.start()
    assert h.gate.deliveries == {}


def _refuse(kind: str, record: dict[str, Any]) -> None:
    raise ServiceError("writing to the audit topic failed")


# -- delivery batches ----------------------------------------------------------------------------------------------
def test_each_delivery_topic_of_a_batch_gets_one_record_in_the_batch_transaction(h: GateHarness) -> None:
    h.stage.queue(h.record(4), h.record(5, "nottingham"), h.record(6))
    h.gate.step()

    [transaction] = h.stage.transactions
    assert transaction.outcome == "committed"
    records = {r["topic"]: r for r in h.stage.audited()}
    assert sorted(records) == sorted([LEICESTER_DPH, LEICESTER_ANALYST, NOTTINGHAM_DPH])
    assert {s.key for s in transaction.audit} == {b"delivery-batch"}
    assert {s.topic for s in transaction.audit} == {AUDIT_TOPIC}
    assert records[LEICESTER_DPH]["sources"] == [
        {"topic": INGEST, "partition": 0, "first_offset": 4, "last_offset": 6, "records": 2}]
    assert records[NOTTINGHAM_DPH]["revision"] == f"{catalog_document()['revision']}/1"


def test_a_batch_records_offsets_and_digest_match_what_was_delivered(h: GateHarness) -> None:
    h.stage.queue(h.record(0))
    h.gate.step()
    h.stage.queue(h.record(1), h.record(2), h.record(3, "nottingham"))
    h.gate.step()

    [_, second] = [r for r in h.stage.audited() if r["topic"] == LEICESTER_DPH]
    delivered = h.delivered(LEICESTER_DPH)[1:]  # the fake numbers each topic's sends from 0, as a new topic would
    assert (second["first_offset"], second["last_offset"], second["records"], second["offsets"]) == (1, 2, 2, [[1, 2]])
    assert second["records_digest"] == records_digest((s.key, s.value) for s in delivered)
    # Offsets are read once per batch, after one flush; then the batch's three audit records go with its commit.
    assert h.stage.calls.count("flush") == 2 and h.stage.calls[-5:] == ["flush", "send", "send", "send", "commit"]


def test_an_aborted_batch_leaves_no_audit_record(h: GateHarness) -> None:
    h.stage.fail_on_send = 3
    h.stage.queue(h.record(0), h.record(1))
    with pytest.raises(ServiceError):
        h.gate.step()
    h.stage.fail_on_send = None
    h.stage.queue(h.record(0), h.record(1))
    h.gate.step()

    assert h.stage.audited("aborted") == []
    assert {(r["topic"], r["records"]) for r in h.stage.audited()} == {(LEICESTER_DPH, 2), (LEICESTER_ANALYST, 2)}


def test_a_batch_that_only_quarantines_gets_a_quarantine_batch_record_and_no_delivery_record(h: GateHarness) -> None:
    h.stage.queue(h.raw(0, b"not avro"), h.raw(1, b"\x00nor this"))
    h.gate.step()
    assert h.stage.transactions[-1].outcome == "committed"
    [audited] = h.stage.audited()
    quarantined = [s for s in h.stage.committed() if s.topic == audited["topic"]]
    assert (audited["kind"], audited["stream"], audited["records"], audited["rules"]) == (
        "quarantine-batch", INGEST.removeprefix("ingest."), 2, {"avro-decode": 2})
    assert audited["sources"] == [{"topic": INGEST, "partition": 0, "first_offset": 0, "last_offset": 1, "records": 2}]
    assert audited["records_digest"] == records_digest((s.key, s.value) for s in quarantined)


def test_a_batch_that_sends_nothing_has_no_audit_record(h: GateHarness) -> None:
    h.stage.queue(h.record(0, "cornwall"))
    h.gate.step()
    assert h.stage.transactions[-1].outcome == "committed" and h.stage.audited() == []


# -- policy changes ------------------------------------------------------------------------------------------------
class FakeWriter:
    def __init__(self) -> None:
        self.appended: list[tuple[str, str, dict[str, Any] | None]] = []

    def append(self, key: str, value: dict[str, Any] | None, topic: str = "_accord.control",
               timeout_s: float = 30.0) -> tuple[int, int]:
        self.appended.append((topic, key, value))
        return len(self.appended) - 1, 1_000

    def audited(self) -> list[dict[str, Any]]:
        return [value or {} for topic, key, value in self.appended if topic == AUDIT_TOPIC]


OPERATOR = Actor("accord", "operator", "Ops on call")
IG_LEAD = Actor("ukhsa", "ig-lead", "UKHSA IG Lead")
BOARD = Actor("dhsc", "governance-board", "Board member")


def test_each_policy_change_is_audited_after_its_control_record() -> None:
    writer, document = FakeWriter(), catalog_document()
    policy_changes.apply_catalog(writer, FakePolicyEngine(), document, by=OPERATOR)
    policy_changes.revoke(writer, "t1-nottingham", "DSA withdrawn", by=IG_LEAD)
    policy_changes.reinstate(writer, "t1-nottingham", by=BOARD)
    policy_changes.declare_level(writer, "emergency", by=BOARD)

    assert [(topic, key) for topic, key, _ in writer.appended[1::2]] == [(AUDIT_TOPIC, "catalog-change")] * 4
    applied, revoked, reinstated, declared = writer.audited()
    assert (applied["change"], applied["control"], applied["by"], applied["revision"]) == (
        "catalog-applied", {"key": "catalog", "offset": 0}, OPERATOR.to_json(), document["revision"])
    assert applied["agreements"] == sorted(document["agreements"])
    assert (revoked["change"], revoked["agreement"], revoked["reason"], revoked["control"]["offset"]) == (
        "agreement-revoked", "t1-nottingham", "DSA withdrawn", 2)
    # the person the token named, on the control record as in the audit record
    assert revoked["by"] == {"body": "ukhsa", "role": "ig-lead", "person": "UKHSA IG Lead"}
    assert writer.appended[2][2] is not None and writer.appended[2][2]["by"] == revoked["by"]
    assert (reinstated["change"], reinstated["by"]) == ("agreement-reinstated", BOARD.to_json())
    assert (declared["change"], declared["level"], declared["scope"]) == ("emergency-declared", "emergency",
                                                                          "national")
