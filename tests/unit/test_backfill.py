"""History on a new grant: what `backfill` may say, the log of marks and progress, and the gate's replay against
in-memory Kafka, control topic, OPA and registry."""

from __future__ import annotations

import datetime as dt
import json
from dataclasses import replace
from typing import Any

import pytest

from broker.catalog.models import Agreement
from broker.domain.backfill import BackfillLog, HistoryRequest, Job, Partition, bar, parse_history
from broker.domain.messages import Record
from broker.domain.topics import BACKFILL_TOPIC, delivery_topic
from tests.unit.gate_fakes import (
    INGEST,
    START,
    T1,
    FakeStage,
    GateHarness,
    agreement,
    catalog_document,
    make_gate,
)

NOTTINGHAM_DPH = delivery_topic("nottingham-city-council", "dph", T1)
DAY_MS = 86_400_000
NOW_MS = int(START.timestamp() * 1000)


# -- what `backfill` may say --------------------------------------------------------------------------------
@pytest.mark.parametrize(("text", "span"), [
    ("P28D", dt.timedelta(days=28)), ("P4W", dt.timedelta(weeks=4)), ("PT36H", dt.timedelta(hours=36)),
    ("P1DT12H", dt.timedelta(days=1, hours=12)),
])
def test_a_duration_reaches_back_from_the_moment_the_grant_is_applied(text: str, span: dt.timedelta) -> None:
    request = parse_history(text)
    assert request == HistoryRequest(text, span=span)
    assert request.since(START) == START - span


def test_a_date_starts_at_its_midnight_utc_whenever_the_grant_is_applied() -> None:
    request = parse_history("2020-06-01")
    assert request.since(START) == dt.datetime(2020, 6, 1, tzinfo=dt.UTC)
    assert parse_history(dt.date(2020, 6, 1)) == request


@pytest.mark.parametrize("bad", ["P1M", "P1Y", "P0D", "PT0H", "28 days", "", "P", "2020-13-01", "PT30M", 28, None])
def test_anything_else_is_refused_saying_what_to_write(bad: Any) -> None:
    with pytest.raises(ValueError, match="ISO 8601 duration in weeks, days or hours"):
        parse_history(bad)


def test_an_agreement_names_a_bad_backfill_in_the_catalog() -> None:
    base = {"agreement": "a", "template": "t", "subscriber": "s", "valid_from": "2020-01-01T00:00:00Z",
            "valid_until": "2021-01-01T00:00:00Z", "review_date": "2020-06-01",
            "signatories": [{"body": "s", "name": "N", "role": "r"}]}
    assert Agreement.model_validate({**base, "backfill": "P28D"}).backfill == "P28D"
    assert Agreement.model_validate({**base, "backfill": dt.date(2020, 3, 1)}).backfill == "2020-03-01"
    with pytest.raises(ValueError, match="backfill 'P1M'"):
        Agreement.model_validate({**base, "backfill": "P1M"})


# -- the log ------------------------------------------------------------------------------------------------
JOB = Job("t1-nottingham", NOTTINGHAM_DPH, T1, parse_history("P28D"))


def _mark(offset: int, worker: str, since_ms: int = 100) -> tuple[str, dict[str, Any]]:
    return f"boundary/{worker}", {"kind": "boundary", "grant": JOB.grant, "topic": JOB.topic, "stream": T1,
                                  "ingest": INGEST, "partition": 0, "offset": offset, "since_ms": since_ms,
                                  "backfill": "P28D"}


def test_the_earliest_mark_holds_whatever_order_workers_wrote_them_in() -> None:
    log = BackfillLog()
    log.apply_all([_mark(40, "w2", since_ms=400), _mark(25, "w1", since_ms=250), _mark(30, "w3")])
    part = log.replays[(JOB.grant, JOB.topic)].partitions[(INGEST, 0)]
    assert (part.boundary, part.since_ms) == (25, 100)


def test_applying_the_log_twice_changes_nothing() -> None:
    records = [_mark(25, "w1"), ("progress/x", {"kind": "progress", "grant": JOB.grant, "topic": JOB.topic,
                                                "ingest": INGEST, "partition": 0, "start": 5, "next": 15,
                                                "delivered": 4})]
    once, twice = BackfillLog(), BackfillLog()
    once.apply_all(records)
    twice.apply_all(records + records)
    assert once.replays == twice.replays
    assert once.replays[(JOB.grant, JOB.topic)].counts() == (10, 20)


def test_progress_read_late_never_takes_a_partition_back() -> None:
    def progress(next_offset: int, delivered: int) -> tuple[str, dict[str, Any]]:
        return "progress/x", {"kind": "progress", "grant": JOB.grant, "topic": JOB.topic, "ingest": INGEST,
                              "partition": 0, "start": 5, "next": next_offset, "delivered": delivered}
    log = BackfillLog()
    log.apply_all([_mark(25, "w1"), progress(20, 9), progress(15, 4)])
    part = log.replays[(JOB.grant, JOB.topic)].partitions[(INGEST, 0)]
    assert (part.next, part.delivered) == (20, 9)


def test_the_range_left_runs_from_the_progress_to_the_mark() -> None:
    assert Partition(boundary=None, start=0).remaining() is None  # the live gate has not marked it yet
    assert Partition(boundary=20, start=None).remaining() is None  # its start is not looked up yet
    assert Partition(boundary=20, start=5).remaining() == (5, 20)
    assert Partition(boundary=20, start=5, next=12).remaining() == (12, 20)
    assert Partition(boundary=20, start=5, next=20).remaining() is None
    assert Partition(boundary=20, start=5, next=20).done


def test_the_progress_bar() -> None:
    assert bar(5, 10, width=10) == "[#####.....]  50%"
    assert bar(0, 0, width=4) == "[####] 100%"


# -- the gate's replay -------------------------------------------------------------------------------------
class FakeHistory:
    """The ingest topic's past: records by offset on partition 0, each with its timestamp."""

    def __init__(self, records: list[Record]) -> None:
        self.records = records
        self.reads: list[tuple[int, int]] = []

    def start_offset(self, topic: str, partition: int, since_ms: int) -> int:
        return next((r.offset for r in self.records if (r.timestamp_ms or 0) >= since_ms), len(self.records))

    def read(self, topic: str, partition: int, start: int, end: int, max_records: int
             ) -> tuple[list[Record], int]:
        self.reads.append((start, end))
        found = [r for r in self.records if start <= r.offset < end][:max_records]
        return found, (found[-1].offset + 1 if found else end)


class CommittedLog:
    """The backfill topic as a read_committed reader sees it: what committed transactions sent there."""

    def __init__(self, stage: FakeStage) -> None:
        self.stage, self.position, self.reads = stage, 0, 0

    def read_new(self) -> list[tuple[str, dict[str, Any] | None]]:
        self.reads += 1
        sent = [s for s in self.stage.committed() if s.topic == BACKFILL_TOPIC]
        new, self.position = sent[self.position:], len(sent)
        return [((s.key or b"").decode(), json.loads(s.value or b"null")) for s in new]


def _with_history(backfill: str = "P28D") -> tuple[GateHarness, FakeHistory, CommittedLog]:
    """A gate whose Nottingham agreement asks for `backfill`, over ten days of history on partition 0: each day
    (40, 36, ..., 4 days ago) one Nottingham and one Leicester case."""
    document = catalog_document(**{"t1-nottingham": {**agreement("nottingham-city-council", "E06000018"),
                                                     "backfill": backfill}})
    stage = FakeStage()
    history = FakeHistory([])
    log = CommittedLog(stage)
    h = make_gate(document, history=history, backfill_log=log, stage=stage)
    for n, age in enumerate(range(40, 0, -4)):
        for place in ("nottingham", "leicester"):
            record = h.record(len(history.records), place, specimen_id=f"D{age}-{place}-{n}")
            history.records.append(replace(record, timestamp_ms=NOW_MS - age * DAY_MS))
    stage.assigned[(INGEST, 0)] = len(history.records)
    h.gate.start()
    return h, history, log


def _replayed(h: GateHarness) -> list[int]:
    """The ingest offsets of the records replayed to Nottingham (the DPH tier drops the specimen id)."""
    return [int(s.headers["accord.source"].rsplit(b"/", 1)[1]) for s in h.delivered(NOTTINGHAM_DPH)
            if "accord.backfill" in s.headers]


NOTTINGHAM_LAST_28_DAYS = [6, 8, 10, 12, 14, 16, 18]  # 28, 24, ..., 4 days ago


def _run(h: GateHarness, steps: int = 5) -> None:
    for _ in range(steps):
        h.gate.step()


def test_the_subscriber_receives_its_rows_of_the_last_28_days_and_nobody_else_anything() -> None:
    h, _, _ = _with_history()
    _run(h)
    assert sorted(_replayed(h)) == NOTTINGHAM_LAST_28_DAYS
    assert all((h.decode(s) or {})["ltla"] == "E06000018" for s in h.delivered(NOTTINGHAM_DPH))
    sent = [s for s in h.stage.committed() if s.topic != BACKFILL_TOPIC]
    assert {s.topic for s in sent} == {NOTTINGHAM_DPH}, "only the grant's delivery topic, no quarantine"
    assert {s.headers["accord.backfill"] for s in sent} == {b"t1-nottingham"}


def test_a_date_replays_from_that_day() -> None:
    h, _, _ = _with_history(backfill=(START - dt.timedelta(days=10)).date().isoformat())
    _run(h)
    assert sorted(_replayed(h)) == [16, 18]


def test_the_mark_is_the_first_record_the_live_gate_evaluated_under_the_grant() -> None:
    h, history, _ = _with_history()
    live = h.record(20, "nottingham")
    h.stage.assigned[(INGEST, 0)] = 21
    h.stage.queue(live)
    _run(h)
    replayed, delivered = _replayed(h), [s.headers["accord.source"] for s in h.delivered(NOTTINGHAM_DPH)]
    assert replayed == NOTTINGHAM_LAST_28_DAYS
    assert delivered.count(f"{INGEST}/0/20".encode()) == 1, "the live gate delivered it, once"
    assert history.reads and max(end for _, end in history.reads) == 20


def test_a_replay_that_fails_is_aborted_and_done_again_without_duplicates() -> None:
    h, _, _ = _with_history()
    h.gate.step()  # the mark
    h.stage.fail_on_send = 3
    with pytest.raises(Exception, match="producing"):
        h.gate.step()
    assert h.stage.transactions[-1].outcome == "aborted"
    h.stage.fail_on_send = None
    _run(h)
    assert len(_replayed(h)) == len(set(_replayed(h))) == 7


def test_once_replayed_a_step_with_nothing_to_do_opens_no_transaction() -> None:
    h, _, _ = _with_history()
    _run(h)
    opened = len(h.stage.transactions)
    _run(h)
    assert len(h.stage.transactions) == opened


def test_a_restarted_worker_and_a_reapplied_catalog_replay_nothing_again() -> None:
    h, history, _ = _with_history()
    _run(h)
    assert len(_replayed(h)) == 7
    again = make_gate(catalog_document(**{"t1-nottingham": {**agreement("nottingham-city-council", "E06000018"),
                                                            "backfill": "P28D"}}),
                      history=history, backfill_log=CommittedLog(h.stage), stage=h.stage, worker="worker-2",
                      registry=h.registry)
    again.gate.start()
    _run(again)
    again.control.append_catalog(catalog_document(**{"t1-nottingham": {
        **agreement("nottingham-city-council", "E06000018"), "backfill": "P28D"}}))
    _run(again)
    assert len(_replayed(h)) == 7


def test_a_partition_owned_by_another_worker_is_not_replayed_here() -> None:
    h, history, _ = _with_history()
    h.stage.assigned.clear()
    h.stage.assigned[(INGEST, 1)] = 0
    _run(h)
    assert _replayed(h) == []
    assert history.reads == []


def test_without_a_grant_asking_for_history_nothing_is_read() -> None:
    stage = FakeStage()
    history = FakeHistory([])
    log = CommittedLog(stage)
    h = make_gate(history=history, backfill_log=log, stage=stage)
    h.gate.start()
    _run(h)
    assert stage.transactions == [] and log.position == 0


def test_once_replayed_the_log_is_read_once_a_second_not_before_every_batch() -> None:
    h, _, log = _with_history()
    _run(h)
    before = log.reads
    _run(h, steps=10)
    assert log.reads == before
    h.clock.now += dt.timedelta(seconds=1)
    _run(h, steps=10)
    assert log.reads == before + 1


def test_a_grant_on_the_control_topic_asking_for_history_is_replayed_like_an_agreement() -> None:
    stage = FakeStage()
    history = FakeHistory([])
    h = make_gate(history=history, backfill_log=CommittedLog(stage), stage=stage)
    for n, age in enumerate((40, 20, 4)):
        record = h.record(n, "manchester")
        history.records.append(replace(record, timestamp_ms=NOW_MS - age * DAY_MS))
    stage.assigned[(INGEST, 0)] = len(history.records)
    grant = {**agreement("manchester-city-council", "E08000003"), "id": "dispute-d-1", "backfill": "P28D",
             "valid_from": "2020-06-01T00:00:00Z"}
    h.control.append("grant/dispute-d-1", grant)
    h.gate.start()
    _run(h)
    manchester = delivery_topic("manchester-city-council", "dph", T1)
    assert [s.headers["accord.source"] for s in h.delivered(manchester)] == [f"{INGEST}/0/{n}".encode()
                                                                            for n in (1, 2)]
    assert {s.headers["accord.backfill"] for s in h.delivered(manchester)} == {b"dispute-d-1"}


def test_the_gate_shows_each_replay_as_it_last_committed_it() -> None:
    h, _, _ = _with_history()
    assert h.gate.history_progress == ()
    _run(h)
    assert list(h.gate.history_progress) == [{"grant": "t1-nottingham", "topic": NOTTINGHAM_DPH, "backfill": "P28D",
                                              "read": 14, "to_read": 14, "delivered": 7, "finished": True}]
