"""Transactions bounded by size and time (issue 18): a gate transaction takes in every batch ready at once, up to
its bounds, and routes all of it under the plans in force after the last poll."""

from __future__ import annotations

from collections.abc import Sequence

from broker.domain.audit_records import DELIVERY_BATCH, WITHHELD_BATCH
from broker.domain.messages import Record
from broker.domain.optout import OPTED_OUT
from broker.domain.plans import Plan
from broker.domain.topics import AUDIT_TOPIC, delivery_topic
from broker.services.batch_audit import BatchAudit, Placement
from broker.services.gate import TransactionBounds
from tests.unit.gate_fakes import INGEST, T1, make_gate

NOTTINGHAM_DPH = delivery_topic("nottingham-city-council", "dph", T1)
LEICESTER_DPH = delivery_topic("leicester-city-council", "dph", T1)


def test_batches_ready_at_once_commit_in_one_transaction_up_to_its_record_bound() -> None:
    h = make_gate(bounds=TransactionBounds(records=4))
    h.gate.start()
    h.stage.queue(h.record(0), h.record(1))
    h.stage.queue(h.record(2, "nottingham"), h.record(3))
    h.stage.queue(h.record(4), h.record(5, "nottingham"))

    assert h.gate.step() == 4
    assert h.gate.step() == 2

    assert [[r.offset for r in t.consumed] for t in h.stage.transactions] == [[0, 1, 2, 3], [4, 5]]
    assert [t.outcome for t in h.stage.transactions] == ["committed", "committed"]
    assert len(h.delivered(NOTTINGHAM_DPH)) == 2 and len(h.delivered(LEICESTER_DPH)) == 4
    # One audit record per delivery topic and transaction, covering every row the transaction delivered to it.
    first = h.stage.transactions[0].audit
    assert len(first) == len({s.topic for s in h.stage.transactions[0].sent})


def test_a_policy_change_read_during_a_transaction_applies_to_every_row_it_takes_in() -> None:
    """A revocation arriving after the first poll: the rows of that poll are routed after it too, as a batch's rows
    always were (the control topic is read after the last poll)."""
    h = make_gate()
    h.gate.start()
    h.stage.queue(h.record(0, "nottingham"))
    h.stage.queue(h.record(1, "nottingham"), h.record(2))
    revoked: list[int] = []

    def revoke_once() -> None:
        if not revoked:
            revoked.append(h.control.append("revocation/t1-nottingham",
                                            {"kind": "revocation", "agreement": "t1-nottingham"}))
    h.stage.after_poll = revoke_once

    assert h.gate.step() == 3

    assert len(h.stage.transactions) == 1
    assert h.delivered(NOTTINGHAM_DPH) == []
    assert len(h.delivered(LEICESTER_DPH)) == 1


def test_a_wide_fan_out_takes_in_fewer_records_per_transaction() -> None:
    h = make_gate(bounds=TransactionBounds(records=100, sends=4))  # four deliveries of T1: one record's worth
    h.gate.start()
    assert max(len(ds) for ds in h.gate.deliveries.values()) == 4
    h.stage.queue(h.record(0))
    h.stage.queue(h.record(1))

    assert h.gate.step() == 1
    assert h.gate.step() == 1


def test_a_callers_max_records_is_one_poll() -> None:
    h = make_gate()
    h.gate.start()
    h.stage.queue(h.record(0))
    h.stage.queue(h.record(1))

    assert h.gate.step(max_records=1) == 1
    assert h.stage.calls.count("poll") == 1


class RecordingSink:
    def __init__(self) -> None:
        self.calls: list[str] = []

    def flush(self) -> None:
        self.calls.append("flush")

    def send(self, topic: str, value: bytes | None, key: bytes | None = None,
             headers: Sequence[tuple[str, bytes]] = ()) -> Placement:
        self.calls.append(f"send {(key or b'').decode()}")
        return lambda: (0, len(self.calls))


def test_a_batch_that_only_withheld_rows_audits_them_without_a_flush() -> None:
    """Withheld rows name no offset the gate wrote, so there is nothing to wait for; a delivery still waits."""
    plan = Plan("leicester-city-council", "dph", T1, "service-planning", True, (), ("t1",), (), ("utla",),
                frozenset({"E06000016"}), None, "r/1")
    record = Record(INGEST, 0, 7, b"k", b"v", ())
    withheld_only, delivered = BatchAudit(), BatchAudit()
    withheld_only.withheld(plan.topic, plan, record, OPTED_OUT)
    delivered.withheld(plan.topic, plan, record, OPTED_OUT)
    sink = RecordingSink()
    delivered.delivered(plan.topic, plan, record, b"row", sink.send(plan.topic, b"row"))

    first, second = RecordingSink(), RecordingSink()
    withheld_only.write(first, AUDIT_TOPIC, "worker-1", "2020-06-26T09:00:00Z")
    delivered.write(second, AUDIT_TOPIC, "worker-1", "2020-06-26T09:00:00Z")

    assert first.calls == [f"send {WITHHELD_BATCH}"]
    assert second.calls == ["flush", f"send {DELIVERY_BATCH}", f"send {WITHHELD_BATCH}"]
