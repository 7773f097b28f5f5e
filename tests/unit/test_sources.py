"""The sources' base (run_source, batching, the state directory), the coercion rules and the files source, with an
in-memory publisher."""

from __future__ import annotations

import json
import threading
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from broker.errors import ConfigError, ServiceError
from connectors.config import SinkConfigError, is_source, load, load_source
from connectors.sources.base import (
    MemoryPublisher,
    PublishOutcome,
    Reject,
    Row,
    SourceState,
    batched,
    idempotency_key,
    run_source,
)
from connectors.sources.coercion import CoercionError, mapper, to_date, to_float, to_int, to_timestamp
from connectors.sources.files import FileSource, FileSourceError

SCHEMA: dict[str, Any] = {"type": "record", "name": "T", "accord.stream": "t.s", "fields": [
    {"name": "id", "type": "string"},
    {"name": "day", "type": {"type": "int", "logicalType": "date"}},
    {"name": "beds", "type": ["null", "int"], "default": None},
    {"name": "rate", "type": "double"},
    {"name": "open", "type": "boolean", "default": True},
    {"name": "kind", "type": {"type": "enum", "name": "K", "symbols": ["A", "B"]}},
]}
HEADER = "id,day,beds,rate,open,kind\n"


def test_uk_dates_numbers_with_thousands_and_empty_values() -> None:
    fields = mapper(SCHEMA)
    assert to_date("25/06/2020") == "2020-06-25" == to_date("2020-06-25") == to_date("25/6/2020")
    assert to_date("01.02.2021") == "2021-02-01"  # day first, never month first
    assert to_int("1,234") == 1234 and to_float("1,234.5") == 1234.5 and to_int(" 12 ".strip()) == 12
    assert to_timestamp("25/06/2020 14:30") == "2020-06-25T14:30:00+01:00"  # UK summer time
    assert to_timestamp("2020-01-05T09:00:00Z") == "2020-01-05T09:00:00+00:00"
    record = fields.record({"id": "a", "day": "25/06/2020", "beds": "", "rate": "1,234.5", "open": "", "kind": "A"})
    assert record == {"id": "a", "day": "2020-06-25", "beds": None, "rate": 1234.5, "open": True, "kind": "A"}
    for bad in ("31/02/2020", "06/25/2020", "2020-13-01", "yesterday"):
        with pytest.raises(ValueError, match="is not a date"):
            to_date(bad)
    for bad in ("1,23", "1.2.3", "12a", "1,2345"):
        with pytest.raises(ValueError, match="is not a number"):
            to_float(bad)
    with pytest.raises(ValueError, match="not a whole number"):
        to_int("1.5")


def test_a_row_that_cannot_be_coerced_names_every_field() -> None:
    fields = mapper(SCHEMA, {"id": "Ref"})
    with pytest.raises(CoercionError) as caught:
        fields.record({"Ref": "", "day": "32/01/2020", "beds": "x", "rate": "1", "kind": "A"})
    message = str(caught.value)
    assert "id (column 'Ref'): a value is required" in message
    assert "day: '32/01/2020' is not a date" in message and "beds: 'x' is not a number" in message
    assert fields.record({"Ref": "r", "day": "1/1/2020", "rate": "2", "kind": "B"})["open"] is True
    with pytest.raises(CoercionError, match="row has no such column"):
        fields.record({"Ref": "r", "rate": "2", "kind": "B"})
    assert fields.required_columns() == ["Ref", "day", "rate", "kind"]


def test_a_header_without_a_required_column_is_warned_of_and_each_row_quarantined(tmp_path: Path) -> None:
    data = tmp_path / "in.csv"
    data.write_text("id,day,rate\nr1,01/01/2020,1\n")
    warnings: list[str] = []
    state = SourceState(tmp_path / "state")
    summary = run_source("src", "t.s", FileSource(data, mapper(SCHEMA), on_warning=warnings.append),
                         MemoryPublisher(), state)
    assert warnings == [f"{data}:1: the header has no column 'kind', which the stream requires: each row will be "
                        "quarantined (map fields to columns with `columns: {field: column}`)"]
    assert summary.run.rejected == 1 and "kind: a value is required and the row has no such column" in \
        state.rejects()[0]["reason"]


def test_a_column_mapping_to_no_field_is_a_config_error() -> None:
    with pytest.raises(ConfigError, match=r"nope is not a field of t\.s"):
        mapper(SCHEMA, {"nope": "x"})


def _rows(n: int) -> list[Row]:
    return [Row({"i": i} if i % 5 else Reject(f"f:{i}", "bad", i), f"f:{i}", {"row": i}) for i in range(1, n + 1)]


def test_batches_cut_by_rows_and_bytes_the_same_way_every_time() -> None:
    by_rows = list(batched(_rows(25), None, 10, 10_000))
    assert [b.rows for b in by_rows] == [10, 10, 5]
    assert [b.end for b in by_rows] == [{"row": 10}, {"row": 20}, {"row": 25}]
    assert by_rows[1].start == {"row": 10} and by_rows[0].start is None
    assert [len(b.rejects) for b in by_rows] == [2, 2, 1] and by_rows[0].wheres[:2] == ["f:1", "f:2"]
    by_bytes = list(batched(_rows(25), None, 100, 30))  # {"i": 12} is 9 bytes with its separator: 3 per batch
    assert all(len(b.records) <= 3 for b in by_bytes) and sum(b.rows for b in by_bytes) == 25
    assert [(b.start, b.end) for b in by_bytes] == [(b.start, b.end) for b in batched(_rows(25), None, 100, 30)]
    assert idempotency_key("s", None, {"row": 1}) == idempotency_key("s", None, {"row": 1})
    assert idempotency_key("s", None, {"row": 1}) != idempotency_key("s", {"row": 0}, {"row": 1})


def _csv(path: Path, lines: list[str]) -> Path:
    path.write_text(HEADER + "".join(line + "\n" for line in lines), encoding="utf-8")
    return path


def _good(i: int) -> str:
    return f"r{i},25/06/2020,\"1,{i:03d}\",{i}.5,yes,A"


def _not_b(record: Mapping[str, Any]) -> str | None:
    return "kind: B is withdrawn" if record.get("kind") == "B" else None


def test_a_csv_file_is_published_with_its_bad_rows_quarantined_by_line(tmp_path: Path) -> None:
    lines = [_good(i) for i in range(1, 8)]
    lines[2] = "r3,31/02/2020,,1,no,A"             # line 4: bad date
    lines[4] = "r5,01/01/2020,,1,no,B"             # line 6: the API quarantines it
    lines[5] = "r6,01/01/2020,,1"                  # line 7: short row
    data = _csv(tmp_path / "in.csv", [*lines[:3], "", *lines[3:]])  # a blank line: lines after it move down one
    publisher, state = MemoryPublisher(_not_b), SourceState(tmp_path / "state")
    source = FileSource(data, mapper(SCHEMA), max_rows=3)
    summary = run_source("src", "t.s", source, publisher, state)
    assert (summary.run.rows, summary.run.accepted, summary.run.rejected, summary.run.quarantined) == (7, 4, 2, 1)
    assert [r["id"] for r in publisher.published["t.s"]] == ["r1", "r2", "r4", "r7"]
    assert publisher.published["t.s"][0] == {"id": "r1", "day": "2020-06-25", "beds": 1001, "rate": 1.5,
                                             "open": True, "kind": "A"}
    rejects = {r["where"]: r for r in state.rejects()}
    assert set(rejects) == {"in.csv:4", "in.csv:7", "in.csv:8"}
    assert "is not a date" in rejects["in.csv:4"]["reason"] and rejects["in.csv:4"]["by"] == "source"
    assert rejects["in.csv:7"] == {"where": "in.csv:7", "reason": "kind: B is withdrawn", "by": "api",
                                   "raw": {"id": "r5", "day": "2020-01-01", "beds": None, "rate": 1.0,
                                           "open": False, "kind": "B"}}
    assert "4 values where the header has 6 columns" in rejects["in.csv:8"]["reason"]
    assert "quarantined 3 (2 by the source, 1 by the API)" in summary.line()
    assert state.rejects_path.stat().st_mode & 0o777 == 0o600, "rows with identifiers: the owner's only"
    again = run_source("src", "t.s", FileSource(data, mapper(SCHEMA), max_rows=3), publisher, state)
    assert again.run.rows == 0 and len(publisher.published["t.s"]) == 4  # the file is in the ledger


class Crash(Exception):
    pass


class CrashingState(SourceState):
    """Dies (like kill -9) after the batch was published and its rejects written, before its position is stored."""

    def __init__(self, directory: Path, after: int) -> None:
        super().__init__(directory)
        self.left = after

    def store(self, *args: Any, **kwargs: Any) -> None:
        if self.left == 0:
            raise Crash
        self.left -= 1
        super().store(*args, **kwargs)


@pytest.mark.parametrize("in_flight", [1, 3])
def test_a_crash_between_publishing_and_storing_repeats_the_batch_with_the_same_key(tmp_path: Path,
                                                                                      in_flight: int) -> None:
    lines = [_good(i) if i % 4 else f"r{i},bad,,1,no,A" for i in range(1, 41)]
    data = _csv(tmp_path / "in.csv", lines)
    publisher = MemoryPublisher()
    for crash_after in (1, 2, 0, 1):
        with pytest.raises(Crash):
            run_source("src", "t.s", FileSource(data, mapper(SCHEMA), max_rows=7), publisher,
                       CrashingState(tmp_path / "state", crash_after), in_flight=in_flight)
    state = SourceState(tmp_path / "state")
    summary = run_source("src", "t.s", FileSource(data, mapper(SCHEMA), max_rows=7), publisher, state,
                         in_flight=in_flight)
    assert sorted(r["id"] for r in publisher.published["t.s"]) == sorted(f"r{i}" for i in range(1, 41) if i % 4)
    assert [r["where"] for r in state.rejects()] == [f"in.csv:{i + 1}" for i in range(4, 41, 4)]
    assert (summary.totals.rows, summary.totals.accepted, summary.totals.rejected) == (40, 30, 10)


class Flaky(MemoryPublisher):
    def __init__(self, failures: int) -> None:
        super().__init__()
        self.failures = failures
        self.keys: list[str] = []

    def publish(self, stream: str, records: Any, idempotency_key: str) -> list[PublishOutcome]:
        self.keys.append(idempotency_key)
        if self.failures:
            self.failures -= 1
            raise ServiceError("API away")
        return super().publish(stream, records, idempotency_key)


def test_a_batch_the_api_cannot_take_now_is_sent_again_with_the_same_key(tmp_path: Path) -> None:
    data = _csv(tmp_path / "in.csv", [_good(i) for i in range(1, 4)])
    waits: list[float] = []
    publisher = Flaky(3)
    run_source("src", "t.s", FileSource(data, mapper(SCHEMA)), publisher, SourceState(tmp_path / "s"),
               wait=waits.append)
    assert waits == [0.5, 1.0, 2.0] and len(set(publisher.keys)) == 1 and len(publisher.keys) == 4
    assert len(publisher.published["t.s"]) == 3


def test_jsonl_and_parquet_files_name_their_lines_and_rows(tmp_path: Path) -> None:
    folder = tmp_path / "in"
    folder.mkdir()
    (folder / "a.jsonl").write_text('{"id": "j1", "day": "2020-06-25", "rate": 1, "kind": "A"}\n\nnot json\n'
                                    '[1]\n{"id": "j2", "day": "25/06/2020", "rate": "2", "kind": "A"}\n')
    table = pa.table({"id": ["p1", "p2"], "day": ["01/02/2021", None], "rate": [1.5, 2.0], "kind": ["A", "A"]})
    pq.write_table(table, folder / "b.parquet")
    publisher, state = MemoryPublisher(), SourceState(tmp_path / "state")
    run_source("src", "t.s", FileSource(folder, mapper(SCHEMA)), publisher, state)
    assert [r["id"] for r in publisher.published["t.s"]] == ["j1", "j2", "p1"]
    assert publisher.published["t.s"][2]["day"] == "2021-02-01"
    assert [(r["where"], r["reason"][:12]) for r in state.rejects()] == [
        ("a.jsonl:3", "not JSON: Ex"), ("a.jsonl:4", "the line is "), ("b.parquet:row 2", "day: a value")]


def test_a_watched_directory_takes_settled_files_in_name_order_each_once(tmp_path: Path) -> None:
    folder = tmp_path / "in"
    folder.mkdir()
    _csv(folder / "b.csv", [_good(2)])
    _csv(folder / "a.csv", [_good(1)])
    _csv(folder / "c.csv.partial", [_good(3)])
    (folder / ".hidden.csv").write_text("x")
    now = [0.0]
    polls = [0]

    def wait(seconds: float) -> None:
        now[0] += seconds
        polls[0] += 1
        if polls[0] == 20:
            (folder / "c.csv.partial").rename(folder / "c.csv")

    publisher = MemoryPublisher()
    source = FileSource(folder, mapper(SCHEMA), watch=True, poll_s=1, settle_s=1, wait=wait, clock=lambda: now[0],
                        stop=lambda: polls[0] > 60)
    run_source("src", "t.s", source, publisher, SourceState(tmp_path / "state"))
    assert [r["id"] for r in publisher.published["t.s"]] == ["r1", "r2", "r3"]
    _csv(folder / "a.csv", [_good(9)])  # same name, new content: a new file
    polls[0] = 21
    run_source("src", "t.s", FileSource(folder, mapper(SCHEMA), watch=True, poll_s=1, settle_s=0, wait=wait,
                                        stop=lambda: polls[0] > 40), publisher, SourceState(tmp_path / "state"))
    assert [r["id"] for r in publisher.published["t.s"]] == ["r1", "r2", "r3", "r9"]


def test_a_file_changed_while_it_was_being_published_stops_the_source(tmp_path: Path) -> None:
    data = _csv(tmp_path / "in.csv", [_good(i) for i in range(1, 10)])
    with pytest.raises(Crash):
        run_source("src", "t.s", FileSource(data, mapper(SCHEMA), max_rows=2), MemoryPublisher(),
                   CrashingState(tmp_path / "state", 2))
    _csv(data, [_good(i) for i in range(1, 11)])
    with pytest.raises(FileSourceError, match="changed while it was being published"):
        run_source("src", "t.s", FileSource(data, mapper(SCHEMA), max_rows=2), MemoryPublisher(),
                   SourceState(tmp_path / "state"))


def test_a_state_directory_belongs_to_one_source(tmp_path: Path) -> None:
    data = _csv(tmp_path / "in.csv", [_good(1)])
    state = SourceState(tmp_path / "state")
    run_source("src", "t.s", FileSource(data, mapper(SCHEMA)), MemoryPublisher(), state)
    with pytest.raises(Exception, match="belongs to source 'src'"):
        run_source("other", "t.s", FileSource(data, mapper(SCHEMA)), MemoryPublisher(), state)
    with state.lock(), pytest.raises(Exception, match="another source is running"), state.lock():
        pass
    assert json.loads((tmp_path / "state" / "position.json").read_text())["totals"]["accepted"] == 1


class SlowFirst(MemoryPublisher):
    """Answers the first batch last, so later batches finish before it."""

    def __init__(self) -> None:
        super().__init__()
        self.first = threading.Event()
        self.seen = 0
        self._count = threading.Lock()

    def publish(self, stream: str, records: Any, idempotency_key: str) -> list[PublishOutcome]:
        with self._count:
            self.seen += 1
            mine = self.seen
        if mine == 1:
            self.first.wait(5)
        elif mine == 3:
            self.first.set()
        return super().publish(stream, records, idempotency_key)


class Recording(SourceState):
    def __init__(self, directory: Path) -> None:
        super().__init__(directory)
        self.ends: list[int] = []

    def store(self, source: str, stream: str, position: Any, rejects_bytes: int, totals: Any) -> None:
        self.ends.append(int(position.get("row", -1)) if position.get("file") else 10**9)
        super().store(source, stream, position, rejects_bytes, totals)


def test_batches_in_flight_are_stored_in_order_whichever_finishes_first(tmp_path: Path) -> None:
    data = _csv(tmp_path / "in.csv", [_good(i) for i in range(1, 21)])
    publisher, state = SlowFirst(), Recording(tmp_path / "state")
    summary = run_source("src", "t.s", FileSource(data, mapper(SCHEMA), max_rows=4), publisher, state, in_flight=3)
    assert publisher.first.is_set(), "the third batch was sent while the first was in flight"
    assert state.ends == [4, 8, 12, 16, 10**9] and summary.run.accepted == 20


def test_a_source_config_names_each_problem_with_its_line(tmp_path: Path) -> None:
    config = tmp_path / "source.yaml"
    config.write_text("source: files\nname: Bad Name\nstream: t.s\nstate_dir: st\napi: {url: ftp://x, token_file: t}\n"
                      "files: {path: in.csv, format: xls}\n")
    with pytest.raises(SinkConfigError) as caught:
        load_source(config)
    problems = "\n".join(caught.value.problems)
    assert f"{config}:2: name: String should match pattern" in problems
    assert f"{config}:5: api.url: String should match pattern" in problems
    assert f"{config}:6: files.format: Input should be 'csv', 'jsonl' or 'parquet'" in problems
    config.write_text("source: files\nname: ok\nstream: t.s\nstate_dir: st\napi: {url: 'http://x', token_file: t}\n"
                      "files: {path: in}\n")
    with pytest.raises(SinkConfigError, match=r":1: \(top\): Value error, give the stream's schema as `schema_file`"):
        load_source(config)
    config.write_text("source: files\nname: ok\nstream: t.s\nstate_dir: st\napi: {url: 'http://x', token_file: t}\n"
                      "schema_file: s.avsc\nfiles: {path: in}\n")
    checked = load_source(config)
    assert checked.state_dir == tmp_path / "st" and checked.files.path == tmp_path / "in"
    assert checked.api.token_file == tmp_path / "t" and checked.schema_file == tmp_path / "s.avsc"
    assert is_source(config)
    with pytest.raises(SinkConfigError, match="this configures a source"):
        load(config)
