"""The file sink on in-memory fakes: CSV and Parquet files committed by their manifests, rotation by rows, time and
schema, resuming after a crash (half-written files removed, nothing lost or repeated), a full disk waited out, the
positions a sync cannot take away; and the `sink: files` config's errors."""

from __future__ import annotations

import csv
import datetime as dt
import gc
import hashlib
import io
import json
from decimal import Decimal
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from broker.adapters.local_files import LocalDirectory
from broker.adapters.registry_memory import InMemorySchemaRegistry
from broker.domain.messages import Record
from broker.domain.receipts import Claim
from broker.errors import ConfigError, ServiceError
from connectors.config import FileSinkConfig, SinkConfigError, load
from connectors.sinks.file_formats import arrow_type
from connectors.sinks.files import FileSink
from tests.unit.sink_fakes import FakeDirectory, FakeSource
from tests.unit.test_postgres_sink import TOPIC, delivered

DAY = dt.date(2026, 11, 30)
FIELDS: list[dict[str, Any]] = [
    {"name": "specimen_id", "type": "string"},
    {"name": "name", "type": "string"},
    {"name": "dob", "type": {"type": "int", "logicalType": "date"}},
    {"name": "sex", "type": {"type": "enum", "name": "Sex", "symbols": ["FEMALE", "MALE"]}},
    {"name": "nhs_number", "type": ["null", "string"], "default": None}]
T1 = {"type": "record", "name": "PositiveTest", "fields": FIELDS}
NARROWED = {"type": "record", "name": "PositiveTest", "fields": [f for f in FIELDS if f["name"] != "name"]}


def case(n: int) -> dict[str, Any]:
    return {"specimen_id": f"S-{n}", "name": f"Case {n}", "dob": DAY - dt.timedelta(days=9000 + n),
            "sex": "FEMALE" if n % 2 else "MALE", "nhs_number": None if n % 3 else f"94{n:08d}"}


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def source_of(registry: InMemorySchemaRegistry, values: list[dict[str, Any]],
              schemas: list[dict[str, Any]] | None = None) -> FakeSource:
    return FakeSource(TOPIC, [delivered(registry, n, v, (schemas or [T1] * len(values))[n])
                              for n, v in enumerate(values)])


def sink_on(source: FakeSource, registry: InMemorySchemaRegistry, directory: FakeDirectory, kind: str = "csv",
            max_rows: int | None = 100, max_seconds: float | None = 60.0, **options: Any) -> FileSink:
    return FileSink(source, registry, directory, "t1", kind, max_rows, max_seconds,  # type: ignore[arg-type]
                    now=lambda: dt.datetime(2026, 12, 7, 9, 30, tzinfo=dt.UTC), **options)


def manifest(directory: FakeDirectory, name: str) -> dict[str, Any]:
    return dict(json.loads(directory.files[name + ".manifest.json"]))


def csv_rows(directory: FakeDirectory, name: str) -> list[list[str]]:
    return list(csv.reader(io.StringIO(directory.files[name].decode(), newline="")))


def test_a_full_file_is_committed_by_its_manifest_with_rows_sha256_and_offsets() -> None:
    registry, directory = InMemorySchemaRegistry(), FakeDirectory()
    values = [case(n) for n in range(3)]
    values[1]["name"] = 'O\'Neil, "Pat"\r\nJr'  # RFC 4180: quoted, quotes doubled, line break kept inside
    values[2]["name"] = "=HYPERLINK(1)"
    sink = sink_on(source_of(registry, values), registry, directory, max_rows=3)
    assert sink.step() == 3
    assert sorted(directory.files) == [".t1.positions.json", "t1-00000001.csv", "t1-00000001.csv.manifest.json"]
    assert not directory.writing
    data = directory.files["t1-00000001.csv"]
    assert data.startswith(b"specimen_id,name,dob,sex,nhs_number,_accord_source\r\n")
    assert b'"O\'Neil, ""Pat""\r\nJr"' in data
    _header, *rows = csv_rows(directory, "t1-00000001.csv")
    assert rows[0] == ["S-0", "Case 0", (DAY - dt.timedelta(days=9000)).isoformat(), "MALE", "9400000000",
                       "ingest.ukhsa.positive-tests/0/0"]
    assert rows[1][1] == 'O\'Neil, "Pat"\r\nJr' and rows[1][4] == ""  # a null is an empty cell
    assert rows[2][1] == "'=HYPERLINK(1)"  # a spreadsheet would run it: defused as in the pull API's CSV
    assert manifest(directory, "t1-00000001.csv") == {
        "file": "t1-00000001.csv", "format": "csv", "rows": 3, "bytes": len(data),
        "sha256": hashlib.sha256(data).hexdigest(), "topic": TOPIC, "sequence": 1,
        "schema_ids": [registry.register(f"{TOPIC}-value", json.dumps(T1))],
        "columns": ["specimen_id", "name", "dob", "sex", "nhs_number"],
        "partitions": {"0": {"first_offset": 0, "last_offset": 2}},
        "sources": {"first": "ingest.ukhsa.positive-tests/0/0", "last": "ingest.ukhsa.positive-tests/0/2"},
        "positions": {"0": 3}, "written_at": "2026-12-07T09:30:00Z"}
    assert sink.stored_positions() == {0: 3}


def test_parquet_columns_are_typed_from_the_avro_schema() -> None:
    registry, directory = InMemorySchemaRegistry(), FakeDirectory()
    values = [case(n) for n in range(4)]
    sink = sink_on(source_of(registry, values), registry, directory, kind="parquet", max_rows=4)
    assert sink.step() == 4
    data = directory.files["t1-00000001.parquet"]
    assert manifest(directory, "t1-00000001.parquet")["sha256"] == hashlib.sha256(data).hexdigest()
    table = pq.read_table(io.BytesIO(data))
    assert [(f.name, f.type, f.nullable) for f in table.schema] == [
        ("specimen_id", pa.string(), False), ("name", pa.string(), False), ("dob", pa.date32(), False),
        ("sex", pa.string(), False), ("nhs_number", pa.string(), True), ("_accord_source", pa.string(), False)]
    assert [{k: v for k, v in row.items() if k != "_accord_source"} for row in table.to_pylist()] == values


@pytest.mark.parametrize(("avro", "expected"), [
    ("long", (pa.int64(), False, False)), ("double", (pa.float64(), False, False)),
    ({"type": "long", "logicalType": "timestamp-millis"}, (pa.timestamp("ms", tz="UTC"), False, False)),
    ({"type": "bytes", "logicalType": "decimal", "precision": 9, "scale": 2}, (pa.decimal128(9, 2), False, False)),
    (["null", {"type": "int", "logicalType": "date"}], (pa.date32(), True, False)),
    ({"type": "array", "items": "string"}, (pa.string(), False, True)),
    (["null", "string", "long"], (pa.string(), True, True)),
])
def test_avro_types_map_to_arrow_types(avro: Any, expected: tuple[Any, bool, bool]) -> None:
    assert arrow_type(avro) == expected


def test_files_rotate_by_rows_and_by_time_even_when_nothing_new_comes() -> None:
    registry, directory, clock = InMemorySchemaRegistry(), FakeDirectory(), Clock()
    sink = sink_on(source_of(registry, [case(n) for n in range(5)]), registry, directory, max_rows=2,
                   max_seconds=30, clock=clock)
    assert sink.step() == 5
    assert [n for n in directory.names() if n.endswith(".csv")] == ["t1-00000001.csv", "t1-00000002.csv"]
    assert list(directory.writing) == [".t1-00000003.csv.partial"]  # the fifth row, not yet committed
    assert sink.stored_positions() == {0: 4}
    clock.now += 29
    assert sink.step() == 0 and "t1-00000003.csv" not in directory.files
    clock.now += 1
    assert sink.step() == 0  # no record came, but the file is 30 s old
    assert len(csv_rows(directory, "t1-00000003.csv")) == 2 and sink.stored_positions() == {0: 5}
    assert manifest(directory, "t1-00000003.csv")["partitions"] == {"0": {"first_offset": 4, "last_offset": 4}}


def test_a_schema_change_starts_a_new_file_whose_header_matches_its_rows() -> None:
    registry, directory = InMemorySchemaRegistry(), FakeDirectory()
    narrowed = {k: v for k, v in case(2).items() if k != "name"}
    source = source_of(registry, [case(0), case(1), narrowed, case(3)], [T1, T1, NARROWED, T1])
    sink = sink_on(source, registry, directory)
    assert sink.step() == 4
    sink.close()
    assert [csv_rows(directory, f"t1-0000000{n}.csv")[0][:3] for n in (1, 2, 3)] == [
        ["specimen_id", "name", "dob"], ["specimen_id", "dob", "sex"], ["specimen_id", "name", "dob"]]
    assert [manifest(directory, f"t1-0000000{n}.csv")["rows"] for n in (1, 2, 3)] == [2, 1, 1]
    assert manifest(directory, "t1-00000002.csv")["positions"] == {"0": 3}


def committed_ids(directory: FakeDirectory) -> list[str]:
    """Every row's specimen_id in the committed files, in file order."""
    names = sorted(n[:-len(".manifest.json")] for n in directory.files if n.endswith(".manifest.json"))
    return [str(i) for n in names for i in (
        pq.read_table(io.BytesIO(directory.files[n])).column("specimen_id").to_pylist() if n.endswith(".parquet")
        else [row[0] for row in csv_rows(directory, n)[1:]])]


def test_a_crash_mid_file_loses_and_repeats_nothing() -> None:
    registry, directory = InMemorySchemaRegistry(), FakeDirectory()
    values = [case(n) for n in range(7)]
    source = source_of(registry, values)
    first = sink_on(source, registry, directory, max_rows=3)
    assert first.step(max_records=5) == 5  # one file committed, two rows in the next one
    assert list(directory.writing) == [".t1-00000002.csv.partial"]
    # The process dies here (SIGKILL): nothing of `first` runs again, its half-written file stays behind. And a
    # crash between a file's rename and its manifest left a complete-looking file that nothing committed:
    directory.files["t1-00000003.csv"] = b"specimen_id\r\nnot committed\r\n"
    again = FakeSource(TOPIC, source.records)
    second = sink_on(again, registry, directory, max_rows=3)
    second.start()
    assert directory.names() == [".t1.positions.json", "t1-00000001.csv", "t1-00000001.csv.manifest.json"]
    assert again.seeks == [{0: 3}]
    assert second.step() == 4  # read again from the last committed file: offsets 3 to 6
    second.close()
    assert committed_ids(directory) == [v["specimen_id"] for v in values]
    assert [manifest(directory, f"t1-0000000{n}.csv")["rows"] for n in (1, 2, 3)] == [3, 3, 1]


@pytest.mark.parametrize("kind", ["csv", "parquet"])
def test_a_full_disk_is_waited_out_and_read_again_from_the_last_committed_file(kind: str) -> None:
    registry, directory, waits = InMemorySchemaRegistry(), FakeDirectory(), list[float]()
    values = [case(n) for n in range(6)]
    source = source_of(registry, values)
    sink = sink_on(source, registry, directory, kind, max_rows=2, wait=waits.append)
    assert sink.step_or_wait(max_records=3) == 3
    directory.full = True
    assert sink.step_or_wait(max_records=3) == 0
    assert sink.step_or_wait(max_records=3) == 0
    assert waits == [0.5, 1.0]
    assert "No space left on device" in sink.last_error and "/srv/drop" in sink.last_error
    directory.full = False
    while sink.step_or_wait(max_records=3):
        pass
    sink.close()
    assert committed_ids(directory) == [v["specimen_id"] for v in values]
    assert source.seeks[-1] == {0: 2}  # every retry resumed after the one committed file
    assert not directory.writing and not any(n.endswith(".partial") for n in directory.files)


def test_the_position_survives_a_sync_that_moves_the_files_away() -> None:
    registry, directory = InMemorySchemaRegistry(), FakeDirectory()
    values = [case(n) for n in range(4)]
    sink = sink_on(source_of(registry, values), registry, directory, max_rows=2)
    assert sink.step() == 4
    for name in [n for n in directory.files if n.startswith("t1-")]:
        del directory.files[name]  # picked up and moved away by the council's SFTP job
    again = FakeSource(TOPIC, source_of(registry, values).records)
    restarted = sink_on(again, registry, directory, max_rows=2)
    assert restarted.step() == 0 and again.seeks == [{0: 4}]
    assert [s.lag for s in restarted.status()] == [0]


def test_a_newer_manifest_wins_over_the_positions_file() -> None:
    # The crash came after the manifest, before the positions file: the manifest is the commit.
    registry, directory = InMemorySchemaRegistry(), FakeDirectory()
    sink = sink_on(source_of(registry, [case(n) for n in range(4)]), registry, directory, max_rows=2)
    sink.step(max_records=2)
    before = directory.files[".t1.positions.json"]
    sink.step(max_records=2)
    directory.files[".t1.positions.json"] = before
    assert sink.stored_positions() == {0: 4}


def test_status_reads_the_position_from_the_folder_and_shows_the_lag() -> None:
    registry, directory = InMemorySchemaRegistry(), FakeDirectory()
    source = source_of(registry, [case(n) for n in range(5)])
    sink = sink_on(source, registry, directory, max_rows=2)
    sink.step()
    watcher = sink_on(FakeSource(TOPIC, source.records), registry, directory, max_rows=2)
    (row,) = watcher.status()
    assert (row.stored, row.end, row.lag) == (4, 5, 1)  # the fifth row is in a file not yet committed
    assert directory.writing  # status leaves the running sink's file alone


def test_a_folder_holding_another_topics_files_under_the_prefix_is_refused() -> None:
    registry, directory = InMemorySchemaRegistry(), FakeDirectory()
    directory.files[".t1.positions.json"] = json.dumps({"topic": "another", "sequence": 1,
                                                        "positions": {"0": 9}}).encode()
    with pytest.raises(ConfigError, match="holds 'another'"):
        sink_on(source_of(registry, [case(0)]), registry, directory).step()


def test_the_local_folder_fsyncs_renames_and_names_what_failed(tmp_path: Path) -> None:
    folder = LocalDirectory(tmp_path / "drop")
    assert folder.names() == []  # created
    handle = folder.create(".a.csv.partial")
    handle.write(b"x,y\r\n")
    assert folder.publish(handle, ".a.csv.partial", "a.csv") == (hashlib.sha256(b"x,y\r\n").hexdigest(), 5)
    assert handle.closed and folder.read("a.csv") == b"x,y\r\n"
    folder.write_atomically("a.csv.manifest.json", b"{}", ".a.csv.manifest.json.partial")
    assert folder.names() == ["a.csv", "a.csv.manifest.json"]
    (tmp_path / "file").write_text("")
    with pytest.raises(ServiceError, match=r"cannot list .*file/drop: Not a directory"):
        LocalDirectory(tmp_path / "file" / "drop").names()
    (tmp_path / "drop" / ".b.partial").symlink_to("/dev/full")  # every write to it: no space left
    full = folder.create(".b.partial")
    full.write(b"rows")
    with pytest.raises(ServiceError, match="No space left on device"):
        folder.publish(full, ".b.partial", "b.csv")
    assert "b.csv" not in folder.names()


GOOD = """sink: files
body: leicester-city-council
role: dph
kafka: {bootstrap: 127.0.0.1:9092, password_file: kafka.password}
registry: {url: http://127.0.0.1:8081, token_file: registry.token}
files: {directory: drop, format: parquet, max_rows: 50000}
deliveries:
  - {stream: ukhsa.positive-tests}
"""


def test_a_good_files_config_loads_with_the_folder_beside_it(tmp_path: Path) -> None:
    path = tmp_path / "sink.yaml"
    path.write_text(GOOD)
    config = load(path)
    assert isinstance(config, FileSinkConfig)
    assert config.files.directory == tmp_path / "drop" and config.files.format == "parquet"
    assert (config.files.max_rows, config.files.max_seconds) == (50000, 300.0)
    assert config.topics() == [TOPIC] and config.kafka_user() == "leicester-city-council.dph"


@pytest.mark.parametrize(("text", "problem"), [
    (GOOD.replace("sink: files", "sink: ftp"), ":1: sink: Input should be 'postgres' or 'files' or 'webhook'"),
    (GOOD.replace("format: parquet", "format: xlsx"), ":6: files.format: Input should be 'csv' or 'parquet'"),
    (GOOD.replace("max_rows: 50000", "max_rows: 0"), ":6: files.max_rows: Input should be greater than or equal"),
    (GOOD.replace("max_rows: 50000", "max_rows: null, max_seconds: null"), ":6: files: Value error, max_rows and "
                                                                             "max_seconds are both null"),
    (GOOD.replace("files: {directory: drop, ", "files: {"), ":6: files.directory: Field required"),
    (GOOD + "  - {stream: ukhsa.positive-tests}\n", ":8: deliveries: Value error, two deliveries would write"),
    (GOOD.replace("{stream: ukhsa.positive-tests}", "{stream: ukhsa.positive-tests, table: t1}"),
     ":8: deliveries[0].table: Extra inputs are not permitted"),
])
def test_a_bad_files_config_names_file_line_and_field(tmp_path: Path, text: str, problem: str) -> None:
    path = tmp_path / "sink.yaml"
    path.write_text(text)
    with pytest.raises(SinkConfigError) as caught:
        load(path)
    assert any(line.startswith(f"{path}{problem}") for line in caught.value.problems), caught.value.problems


class TransactionalSource(FakeSource):
    """The records, then a transaction's commit marker: once all are read, the position is past the marker."""

    def positions(self) -> dict[int, int]:
        return {0: self.next + 1 if self.next >= len(self.records) else self.next}

    def end_offsets(self) -> dict[int, int]:
        return {0: len(self.records) + 1}


def test_a_position_past_a_commit_marker_is_saved_even_with_no_file_open() -> None:
    registry, directory, clock = InMemorySchemaRegistry(), FakeDirectory(), Clock()
    source = TransactionalSource(TOPIC, source_of(registry, [case(n) for n in range(3)]).records)
    sink = sink_on(source, registry, directory, max_rows=3, clock=clock)
    assert sink.step() == 3
    assert manifest(directory, "t1-00000001.csv")["positions"] == {"0": 3}
    assert [(s.stored, s.end, s.lag) for s in sink.status()] == [(4, 4, 0)]
    restarted = TransactionalSource(TOPIC, source.records)
    assert sink_on(restarted, registry, directory).step() == 0 and restarted.seeks == [{0: 4}]


class FlakySource(FakeSource):
    """Kafka failing once, when told."""

    fail_next = False

    def poll(self, max_records: int, timeout_s: float) -> list[Record]:
        if self.fail_next:
            self.fail_next = False
            raise ServiceError("reading the delivery topic failed: connection reset")
        return super().poll(max_records, timeout_s)


@pytest.mark.parametrize("kind", ["csv", "parquet"])
def test_a_file_given_up_after_a_kafka_failure_is_read_again_whole(kind: str) -> None:
    # The open file is given up, and pyarrow's writer with it: collected later, it must not try to finish a file
    # that is closed by then (an "Exception ignored" outside any caller, an error under pytest).
    registry, directory, waits = InMemorySchemaRegistry(), FakeDirectory(), list[float]()
    values = [case(n) for n in range(6)]
    source = FlakySource(TOPIC, source_of(registry, values).records)
    sink = sink_on(source, registry, directory, kind, max_rows=4, wait=waits.append)
    assert sink.step_or_wait(max_records=2) == 2  # two rows in an open file
    source.fail_next = True
    assert sink.step_or_wait(max_records=2) == 0
    while sink.step_or_wait(max_records=2):
        gc.collect()
    sink.close()
    assert waits == [0.5] and source.seeks == [{}, {}]
    assert committed_ids(directory) == [v["specimen_id"] for v in values]


def test_parquet_keeps_structures_as_json_text_and_other_values_typed() -> None:
    registry, directory = InMemorySchemaRegistry(), FakeDirectory()
    avro = {"type": "record", "name": "Cell", "fields": [
        {"name": "when", "type": {"type": "long", "logicalType": "timestamp-millis"}},
        {"name": "codes", "type": {"type": "array", "items": "string"}},
        {"name": "either", "type": ["null", "string", "long"], "default": None},
        {"name": "rate", "type": {"type": "bytes", "logicalType": "decimal", "precision": 6, "scale": 2}}]}
    moment = dt.datetime(2026, 12, 1, 8, 30, tzinfo=dt.UTC)
    values = [{"when": moment, "codes": ["E06000016", "E07000129"], "either": 7, "rate": Decimal("12.50")},
              {"when": moment, "codes": [], "either": "text", "rate": Decimal("0.01")}]
    sink = sink_on(FakeSource(TOPIC, [delivered(registry, n, v, avro) for n, v in enumerate(values)]), registry,
                   directory, "parquet", max_rows=2)
    assert sink.step() == 2
    rows = pq.read_table(io.BytesIO(directory.files["t1-00000001.parquet"])).to_pylist()
    assert [{k: v for k, v in r.items() if k != "_accord_source"} for r in rows] == [
        {"when": moment, "codes": '["E06000016","E07000129"]', "either": "7", "rate": Decimal("12.50")},
        {"when": moment, "codes": "[]", "either": "text", "rate": Decimal("0.01")}]


class Receipts:
    key_id = "0123456789abcdef"

    def __init__(self) -> None:
        self.sent: list[Claim] = []

    def send(self, claim: Claim) -> None:
        self.sent.append(claim)


def test_a_batchs_receipts_wait_for_the_commit_of_the_files_holding_it() -> None:
    registry, directory, receipts = InMemorySchemaRegistry(), FakeDirectory(), Receipts()
    sink = sink_on(source_of(registry, [case(n) for n in range(8)]), registry, directory, max_rows=3,
                   receipts=receipts)

    def sent() -> list[tuple[int, int]]:
        return [(c.first_offset, c.last_offset) for c in receipts.sent]

    assert sink.step(max_records=2) == 2 and sent() == []  # rows 0-1 in an open file: not durable yet
    assert sink.step(max_records=2) == 2                    # file 1 (rows 0-2) committed; row 3 in file 2
    assert sent() == [(0, 1)]
    assert sink.step(max_records=2) == 2                    # file 2 (rows 3-5) committed, no file open
    assert sent() == [(0, 1), (2, 3), (4, 5)]
    assert sink.step(max_records=2) == 2 and sent() == [(0, 1), (2, 3), (4, 5)]  # rows 6-7 in an open file
    sink.close()                                            # a clean stop commits it
    assert sent() == [(0, 1), (2, 3), (4, 5), (6, 7)]
