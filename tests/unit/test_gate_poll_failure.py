"""A gate whose poll fails part-way (librdkafka reports a subscribed topic deleted, as a drill's ingest topic is after
the drill, among the records of a batch) goes back to its committed positions: the next step takes in again what the
failed poll had consumed, so no record is skipped."""

from __future__ import annotations

import pytest

from broker.domain.messages import Record
from broker.domain.topics import delivery_topic
from broker.errors import ServiceError
from tests.unit.gate_fakes import T1, FakeStage, make_gate

LEICESTER_DPH = delivery_topic("leicester-city-council", "dph", T1)


class FailingPoll(FakeStage):
    """Its next poll consumes a batch but raises instead of handing it over; `abort` puts the batch back."""

    def __init__(self) -> None:
        super().__init__()
        self.fail_next = False
        self.lost: list[Record] = []

    def poll(self, timeout_s: float, max_records: int | None = None) -> list[Record]:
        batch = super().poll(timeout_s, max_records)
        if self.fail_next and batch:
            self.fail_next, self.lost = False, batch
            raise ServiceError("consuming failed: Subscribed topic not available: Broker: Unknown topic or partition")
        return batch

    def abort(self) -> None:
        super().abort()
        if self.lost:     # as a rewind to the committed offsets does: consumed again from there
            self.batches.appendleft(self.lost)
            self.lost = []


def test_a_poll_that_fails_part_way_is_consumed_again_and_nothing_is_skipped() -> None:
    stage = FailingPoll()
    h = make_gate(stage=stage)
    h.gate.start()
    stage.queue(h.record(0), h.record(1))
    stage.fail_next = True
    with pytest.raises(ServiceError, match="Subscribed topic not available"):
        h.gate.step()
    assert stage.calls[-1] == "abort"
    assert h.gate.step() == 2
    assert [r.offset for r in stage.transactions[-1].consumed] == [0, 1]
    assert len(h.delivered(LEICESTER_DPH)) == 2
