"""The PostgreSQL sink's pure parts: Avro types to columns, the primary key, the SQL, schema evolution, and that
rows and position go to the database in one transaction; and the sink config's errors."""

from __future__ import annotations

import datetime as dt
import io
import json
from pathlib import Path
from typing import Any

import pytest
from fastavro import parse_schema, schemaless_writer

from broker.adapters.registry_memory import InMemorySchemaRegistry
from broker.domain.messages import Record
from broker.domain.wire import frame
from broker.errors import ConfigError
from connectors.config import SinkConfigError, load
from connectors.sinks.postgres import (
    SOURCE_COLUMN,
    Column,
    PostgresSink,
    columns,
    default_table,
    key_fields,
    sql_type,
    upsert,
)
from tests.unit.sink_fakes import FakeDatabase, FakeSource

ROOT = Path(__file__).resolve().parents[2]
TOPIC = "deliver.leicester-city-council.dph.ukhsa.positive-tests"


def schema(*extra: dict[str, Any]) -> dict[str, Any]:
    return {"type": "record", "name": "PositiveTest", "fields": [
        {"name": "specimen_id", "type": "string"},
        {"name": "specimen_date", "type": {"type": "int", "logicalType": "date"}},
        {"name": "lsoa", "type": ["null", "string"], "default": None}, *extra]}


@pytest.mark.parametrize(("avro", "expected"), [
    ("string", ("text", False)), ("int", ("bigint", False)), ("long", ("bigint", False)),
    ("double", ("double precision", False)), ("boolean", ("boolean", False)), ("bytes", ("bytea", False)),
    ({"type": "int", "logicalType": "date"}, ("date", False)),
    ({"type": "long", "logicalType": "timestamp-millis"}, ("timestamptz", False)),
    ({"type": "long", "logicalType": "timestamp-micros"}, ("timestamptz", False)),
    ({"type": "enum", "name": "Sex", "symbols": ["F", "M"]}, ("text", False)),
    (["null", "string"], ("text", True)),
    (["null", {"type": "int", "logicalType": "date"}], ("date", True)),
    ({"type": "array", "items": "string"}, ("jsonb", False)),
    (["null", "string", "long"], ("jsonb", True)),
    ({"type": "bytes", "logicalType": "decimal", "precision": 9, "scale": 2}, ("numeric(9, 2)", False)),
])
def test_avro_types_map_to_postgres_types(avro: Any, expected: tuple[str, bool]) -> None:
    assert sql_type(avro) == expected


def test_the_shipped_t1_schema_maps_every_field() -> None:
    shipped = json.loads((ROOT / "schemas" / "ukhsa.positive-tests.avsc").read_text())
    cols = {c.name: c for c in columns(shipped)}
    assert cols["specimen_id"] == Column("specimen_id", "text", False)
    assert cols["dob"] == Column("dob", "date", False)
    assert cols["nhs_number"] == Column("nhs_number", "text", True)
    assert cols["sex"].sql_type == "text"
    assert len(cols) == len(shipped["fields"])


def test_the_key_is_configured_or_the_schemas_or_the_records_source() -> None:
    assert key_fields(schema(), ["specimen_id"]) == ["specimen_id"]
    assert key_fields(schema() | {"accord.key": ["specimen_id"]}, []) == ["specimen_id"]
    assert key_fields(schema(), []) == [SOURCE_COLUMN]
    with pytest.raises(ConfigError, match="'nhs_number' is not in the delivered schema"):
        key_fields(schema(), ["nhs_number"])
    with pytest.raises(ConfigError, match="'lsoa' may be null"):
        key_fields(schema(), ["lsoa"])


def test_an_upsert_updates_every_column_but_the_key() -> None:
    sql = upsert("t1", columns(schema()), ["specimen_id"])
    assert sql.startswith('INSERT INTO "t1" ("specimen_id", "specimen_date", "lsoa", "_accord_source") VALUES '
                          "(%s, %s, %s, %s) ON CONFLICT (\"specimen_id\") DO UPDATE SET ")
    assert '"specimen_id" = EXCLUDED' not in sql and '"lsoa" = EXCLUDED."lsoa"' in sql


def test_identifiers_are_quoted_and_tables_named_from_the_stream() -> None:
    assert default_table("ukhsa.positive-tests") == "ukhsa_positive_tests"
    assert 'INSERT INTO "a""b"' in upsert('a"b', columns(schema()), ["specimen_id"])


def delivered(registry: InMemorySchemaRegistry, offset: int, value: dict[str, Any],
              avro: dict[str, Any]) -> Record:
    schema_id = registry.register(f"{TOPIC}-value", json.dumps(avro))
    body = io.BytesIO()
    schemaless_writer(body, parse_schema(avro), value)
    return Record(TOPIC, 0, offset, None, frame(schema_id, body.getvalue()),
                  (("accord.source", f"ingest.ukhsa.positive-tests/0/{offset}".encode()),))


def test_rows_and_position_are_stored_in_one_transaction_and_a_new_field_adds_a_column() -> None:
    registry, day = InMemorySchemaRegistry(), dt.date(2026, 11, 30)
    later = schema({"name": "ltla", "type": ["null", "string"], "default": None})
    source = FakeSource(TOPIC, [
        delivered(registry, 0, {"specimen_id": "a", "specimen_date": day, "lsoa": None}, schema()),
        delivered(registry, 1, {"specimen_id": "b", "specimen_date": day, "lsoa": "E01"}, schema()),
        delivered(registry, 2, {"specimen_id": "c", "specimen_date": day, "lsoa": None, "ltla": "E06"}, later)])
    database = FakeDatabase()
    sink = PostgresSink(source, registry, database, "t1", ["specimen_id"])
    assert sink.step(max_records=2) == 2
    (first,) = database.transactions
    assert [s.split(" (")[0] for s, _ in first] == [
        'CREATE TABLE IF NOT EXISTS "t1"', "CREATE TABLE IF NOT EXISTS accord_positions", 'INSERT INTO "t1"',
        "INSERT INTO accord_positions"]
    assert first[2][1] == [["a", day, None, "ingest.ukhsa.positive-tests/0/0"],
                           ["b", day, "E01", "ingest.ukhsa.positive-tests/0/1"]]
    assert first[3][1] == [["t1", TOPIC, 0, 2]]
    assert sink.step() == 1
    second = database.transactions[1]
    assert second[0][0] == 'ALTER TABLE "t1" ADD COLUMN IF NOT EXISTS "ltla" text'
    assert second[1][1] == [["c", day, None, "E06", "ingest.ukhsa.positive-tests/0/2"]]
    assert second[2][1] == [["t1", TOPIC, 0, 3]]


def test_each_table_keeps_its_own_position_in_a_topic() -> None:
    registry, day = InMemorySchemaRegistry(), dt.date(2026, 11, 30)
    records = [delivered(registry, n, {"specimen_id": str(n), "specimen_date": day, "lsoa": None}, schema())
               for n in range(3)]
    database = FakeDatabase()
    assert PostgresSink(FakeSource(TOPIC, records), registry, database, "t1", ["specimen_id"]).step() == 3
    copy = FakeSource(TOPIC, records)
    assert PostgresSink(copy, registry, database, "t1_copy", ["specimen_id"]).step() == 3
    assert copy.seeks == [{}]


def test_a_failed_write_is_read_again_from_the_stored_position() -> None:
    registry, day = InMemorySchemaRegistry(), dt.date(2026, 11, 30)
    source = FakeSource(TOPIC, [delivered(registry, n, {"specimen_id": str(n), "specimen_date": day, "lsoa": None},
                                          schema()) for n in range(4)])
    database, waits = FakeDatabase(), list[float]()
    sink = PostgresSink(source, registry, database, "t1", ["specimen_id"], wait=waits.append)
    assert sink.step_or_wait(max_records=2) == 2
    database.fail_next = True
    assert sink.step_or_wait(max_records=2) == 0
    assert waits == [0.5] and "connection refused" in sink.last_error
    assert sink.step_or_wait(max_records=2) == 2
    assert source.seeks == [{}, {0: 2}]
    stored = [row[0] for t in database.transactions for s, rows in t if s.startswith('INSERT INTO "t1"')
              for row in rows]
    assert stored == ["0", "1", "2", "3"]


GOOD = """sink: postgres
body: leicester-city-council
role: dph
kafka: {bootstrap: 127.0.0.1:9092, password_file: kafka.password}
registry: {url: http://127.0.0.1:8081, token_file: registry.token}
postgres: {dsn: postgresql://accord@127.0.0.1:5432/accord}
deliveries:
  - {stream: ukhsa.positive-tests, key: [specimen_id]}
"""


def test_a_good_config_loads_with_paths_beside_it(tmp_path: Path) -> None:
    path = tmp_path / "sink.yaml"
    path.write_text(GOOD)
    config = load(path)
    assert config.topics() == [TOPIC]
    assert config.kafka.password_file == tmp_path / "kafka.password"
    assert config.kafka_user() == "leicester-city-council.dph"  # the role's own login


@pytest.mark.parametrize(("text", "problem"), [
    (GOOD.replace("sink: postgres", "sink: mysql"), ":1: sink: Input should be 'postgres'"),
    (GOOD.replace("role: dph", "role: DPH!"), ":3: role: String should match pattern"),
    (GOOD.replace("stream: ukhsa", "stream: Ukhsa"), ":8: deliveries[0].stream: String should match pattern"),
    (GOOD.replace("dsn: postgresql://", "dsn: mysql://"), ":6: postgres.dsn: String should match pattern"),
    (GOOD.replace("token_file: registry.token", "token: x"), ":5: registry.token: Extra inputs are not permitted"),
    (GOOD.replace("body: leicester-city-council\n", ""), ":1: body: Field required"),
    (GOOD.replace("deliveries:\n  - {stream: ukhsa.positive-tests, key: [specimen_id]}\n",
                  "deliveries: []\n"), ":7: deliveries: List should have at least 1 item"),
    ("sink: [postgres\n", ":2: YAML error"),
])
def test_a_bad_config_names_file_line_and_field(tmp_path: Path, text: str, problem: str) -> None:
    path = tmp_path / "sink.yaml"
    path.write_text(text)
    with pytest.raises(SinkConfigError) as caught:
        load(path)
    assert any(line.startswith(f"{path}{problem}") for line in caught.value.problems), caught.value.problems


def test_a_first_write_that_fails_creates_the_table_again_on_the_retry() -> None:
    # The CREATE TABLE rolled back with the failed transaction: the retry must not take the table for made.
    registry, day = InMemorySchemaRegistry(), dt.date(2026, 11, 30)
    source = FakeSource(TOPIC, [delivered(registry, n, {"specimen_id": str(n), "specimen_date": day, "lsoa": None},
                                          schema()) for n in range(2)])
    database, waits = FakeDatabase(), list[float]()
    sink = PostgresSink(source, registry, database, "t1", ["specimen_id"], wait=waits.append)
    sink.step_or_wait(max_records=0)  # the positions table and the starting seek
    database.fail_next = True
    assert sink.step_or_wait(max_records=2) == 0
    assert sink.step_or_wait(max_records=2) == 2
    retried = [s for s, _ in database.transactions[-1]]
    assert any(s.startswith('CREATE TABLE IF NOT EXISTS "t1"') for s in retried), retried


def test_a_record_a_later_plan_left_without_its_key_is_kept_aside_with_the_reason_and_the_rest_move_on() -> None:
    # A decision narrowed the plan: the delivered schema no longer carries specimen_id. Its records cannot be rows
    # keyed by it; they must neither stop the delivery (retried forever) nor vanish.
    registry, day = InMemorySchemaRegistry(), dt.date(2026, 11, 30)
    narrowed = {"type": "record", "name": "PositiveTest", "fields": [
        {"name": "specimen_date", "type": {"type": "int", "logicalType": "date"}},
        {"name": "lsoa", "type": ["null", "string"], "default": None}]}
    source = FakeSource(TOPIC, [
        delivered(registry, 0, {"specimen_id": "a", "specimen_date": day, "lsoa": None}, schema()),
        delivered(registry, 1, {"specimen_date": day, "lsoa": "E01013704"}, narrowed),
        delivered(registry, 2, {"specimen_id": "c", "specimen_date": day, "lsoa": None}, schema())])
    database, warnings = FakeDatabase(), list[str]()
    sink = PostgresSink(source, registry, database, "t1", ["specimen_id"], on_warning=warnings.append)
    assert sink.step() == 3
    (only,) = database.transactions
    stored = [row[0] for s, rows in only if s.startswith('INSERT INTO "t1"') for row in rows]
    assert stored == ["a", "c"]
    (kept,) = [rows for s, rows in only if s.startswith("INSERT INTO accord_rejected")]
    assert [r[:5] for r in kept] == [["t1", TOPIC, 0, 1, "ingest.ukhsa.positive-tests/0/1"]]
    assert "no key field specimen_id" in kept[0][5]
    assert json.loads(kept[0][6]) == {"specimen_date": str(day), "lsoa": "E01013704"}
    assert only[-1] == ("INSERT INTO accord_positions (table_name, topic, partition, next_offset) VALUES "
                        "(%s, %s, %s, %s) ON CONFLICT (table_name, topic, partition) DO UPDATE SET next_offset = "
                        "EXCLUDED.next_offset", [["t1", TOPIC, 0, 3]])
    assert sink.rejected == 1 and sink.rejected_count() == 1 and "accord_rejected" in warnings[0]


def test_a_batch_of_only_unkeyable_records_still_moves_the_position() -> None:
    registry, day = InMemorySchemaRegistry(), dt.date(2026, 11, 30)
    narrowed = {"type": "record", "name": "PositiveTest", "fields": [
        {"name": "specimen_date", "type": {"type": "int", "logicalType": "date"}}]}
    source = FakeSource(TOPIC, [delivered(registry, 0, {"specimen_date": day}, narrowed)])
    database = FakeDatabase()
    sink = PostgresSink(source, registry, database, "t1", ["specimen_id"])
    assert sink.step() == 1
    assert not any(s.startswith('CREATE TABLE IF NOT EXISTS "t1"') for s, _ in database.transactions[0])
    assert database.transactions[0][-1][1] == [["t1", TOPIC, 0, 1]]
