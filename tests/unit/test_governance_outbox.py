"""The webhook outbox on the governance topic, over in-memory fakes: notifications are appended in the transaction of
the events they tell of, a delivery's end takes it out, and a restart sends exactly what is still owed."""

from __future__ import annotations

import pytest

from broker.domain.governance import FINISHED, QUEUED
from broker.errors import ServiceError
from broker.services.governance import Governance
from tests.unit.governance_catalog import LEICESTER, catalog
from tests.unit.governance_fakes import FakeClock, FakeControl, MemoryGovernanceLog
from tests.unit.governance_support import DPH, UKHSA_IG, refusal
from tests.unit.notifier_fakes import RecordingNotifier


def _service(log: MemoryGovernanceLog, control: FakeControl, notifier: RecordingNotifier) -> Governance:
    governance = Governance(log, control, control, FakeClock(), notifier)
    governance.start()
    return governance


def test_each_notification_is_queued_with_its_event_and_handed_over_with_its_delivery_id() -> None:
    log, control, notifier = MemoryGovernanceLog(), FakeControl(catalog()), RecordingNotifier()
    gov = _service(log, control, notifier)
    gov.raise_dispute(DPH, refusal())
    # raised and tier-opened, then one outbox entry for each of the two parties for each
    assert log.types() == ["raised", "tier-opened", QUEUED, QUEUED, QUEUED, QUEUED]
    queued = [e["data"] for e in log.events if e["type"] == QUEUED]
    assert [(q["body"], q["notification"]["type"]) for q in queued] == [
        (LEICESTER, "raised"), ("ukhsa", "raised"), (LEICESTER, "tier-opened"), ("ukhsa", "tier-opened")]
    assert notifier.deliveries == [q["delivery"] for q in queued]
    assert [n for _, n in notifier.sent] == [q["notification"] for q in queued]
    assert set(gov.state.outbox) == {q["delivery"] for q in queued}


def test_a_restart_sends_again_only_what_was_not_delivered_under_the_same_ids() -> None:
    log, control, first = MemoryGovernanceLog(), FakeControl(catalog()), RecordingNotifier()
    gov = _service(log, control, first)
    ident = gov.raise_dispute(DPH, refusal()).id
    first.deliver_all(gov)
    gov.comment(ident, UKHSA_IG, "Looking at it.")        # owed to both parties when the service stops
    owed = first.deliveries[4:]
    assert len(owed) == 2 and [e["type"] for e in log.events].count(FINISHED) == 4

    again = RecordingNotifier()
    restarted = _service(log.reader(), control, again)
    assert again.deliveries == owed
    assert [n["type"] for _, n in again.sent] == ["commented", "commented"]
    again.deliver_all(restarted)
    third = RecordingNotifier()
    _service(log.reader(), control, third)
    assert third.sent == []


def test_an_end_that_cannot_be_written_leaves_the_delivery_owed() -> None:
    log, control, notifier = MemoryGovernanceLog(), FakeControl(catalog()), RecordingNotifier()
    gov = _service(log, control, notifier)
    gov.raise_dispute(DPH, refusal())
    log.fail_append()
    gov.webhook_finished(notifier.deliveries[0] or "", "delivered", 1, 204, None)   # logged, not raised
    assert notifier.deliveries[0] in gov.state.outbox
    gov.webhook_finished("not-a-delivery", "delivered", 1, 204, None)             # unknown: nothing written
    assert FINISHED not in log.types()
    log.fail_append()
    with pytest.raises(ServiceError):
        gov.raise_dispute(DPH, refusal())
    assert len(notifier.sent) == 4          # a command that failed to append queued nothing
