"""The writer compiled from a schema writes fastavro's bytes, byte for byte, or leaves the record to fastavro; and it
does write the records a publisher sends, so the fast path is the one taken."""

from __future__ import annotations

import datetime as dt
import io
import json
import math
from pathlib import Path
from typing import Any

import pytest
from fastavro import parse_schema, schemaless_writer
from hypothesis import given, settings
from hypothesis import strategies as st

from broker.domain.avro_writer import Unfit, compile_writer, zigzag

SCHEMAS_DIR = Path(__file__).resolve().parents[2] / "schemas"
SHIPPED = [json.loads(path.read_text(encoding="utf-8")) for path in sorted(SCHEMAS_DIR.glob("*.avsc"))]
# Every type the compiled writer covers, null in either branch order, and fields with defaults.
COVERED: dict[str, Any] = {
    "type": "record", "name": "Covered", "namespace": "test",
    "fields": [
        {"name": "text", "type": "string"},
        {"name": "count", "type": "int"},
        {"name": "total", "type": "long"},
        {"name": "flag", "type": "boolean"},
        {"name": "ratio", "type": "float"},
        {"name": "rate", "type": "double"},
        {"name": "day", "type": {"type": "int", "logicalType": "date"}},
        {"name": "at", "type": {"type": "long", "logicalType": "timestamp-millis"}},
        {"name": "grade", "type": {"type": "enum", "name": "Grade", "symbols": ["A", "B", "C"]}},
        {"name": "maybe_text", "type": ["string", "null"]},
        {"name": "maybe_day", "type": ["null", {"type": "int", "logicalType": "date"}], "default": None},
        {"name": "maybe_total", "type": ["null", "long"]},
        {"name": "spelled", "type": {"type": "string"}},
    ],
}
SCHEMAS = [*SHIPPED, COVERED]
PARSED = [parse_schema(schema) for schema in SCHEMAS]
WRITERS = [compile_writer(parsed) for parsed in PARSED]
INT32, INT64 = 2**31, 2**63


def _fastavro(parsed: Any, record: dict[str, Any]) -> bytes | None:
    """fastavro's bytes for the record, or None where it refuses it."""
    buffer = io.BytesIO()
    try:
        schemaless_writer(buffer, parsed, record)
    except (TypeError, ValueError, KeyError, AttributeError, OverflowError):
        return None
    return buffer.getvalue()


_TEXT = st.text(st.characters(codec="utf-8"), max_size=80) | st.text(max_size=3)   # the second may hold surrogates
_MOMENTS = st.datetimes(min_value=dt.datetime(1900, 1, 1), max_value=dt.datetime(2200, 1, 1),
                        timezones=st.sampled_from([dt.UTC, dt.timezone(dt.timedelta(hours=5, minutes=30))]))
_PRIMITIVES: dict[str, st.SearchStrategy[Any]] = {
    "string": _TEXT,
    "int": st.integers(-INT32, INT32 - 1),
    "long": st.integers(-INT64, INT64 - 1),
    "boolean": st.booleans(),
    "float": st.floats(width=32),
    "double": st.floats(),
    "null": st.none(),
}
# Values of some other type, or out of range: each must come out as fastavro's bytes or as Unfit.
_STRAYS = st.one_of(
    st.none(), st.booleans(), st.integers(-2 * INT64, 2 * INT64), st.floats(), st.text(max_size=5),
    st.binary(max_size=3), st.dates(), st.datetimes(), _MOMENTS, st.lists(st.integers(), max_size=2))


def _fitting(kind: Any) -> st.SearchStrategy[Any]:
    if isinstance(kind, list):
        return st.one_of([_fitting(branch) for branch in kind])
    if isinstance(kind, str):
        return _PRIMITIVES[kind]
    logical = kind.get("logicalType")
    if logical == "date":
        return st.dates() | st.integers(-INT32, INT32 - 1)
    if logical == "timestamp-millis":
        return _MOMENTS | st.integers(-(2**50), 2**50)
    if kind["type"] == "enum":
        return st.sampled_from(kind["symbols"])
    return _fitting(kind["type"])


def _records(schema: dict[str, Any], strays: bool) -> st.SearchStrategy[dict[str, Any]]:
    fields = {}
    for field in schema["fields"]:
        values = _fitting(field["type"])
        fields[field["name"]] = values | _STRAYS if strays else values
    optional = {f["name"] for f in schema["fields"] if strays or "null" in json.dumps(f["type"])}
    return st.fixed_dictionaries(fields).flatmap(
        lambda record: st.sets(st.sampled_from(sorted(optional)) if optional else st.nothing()).map(
            lambda dropped: {k: v for k, v in record.items() if k not in dropped}))


def test_every_shipped_schema_compiles() -> None:
    assert all(writer is not None for writer in WRITERS)


@pytest.mark.parametrize("index", range(len(SCHEMAS)), ids=[s["name"] for s in SCHEMAS])
@settings(max_examples=300, deadline=None)
@given(data=st.data())
def test_a_fitting_record_is_written_as_fastavro_writes_it(index: int, data: st.DataObject) -> None:
    record = data.draw(_records(SCHEMAS[index], strays=False))
    expected, writer = _fastavro(PARSED[index], record), WRITERS[index]
    assert writer is not None
    try:
        written = writer(record)
    except Unfit:
        # Left to fastavro only where it is a value the writer is told to leave: text with a lone surrogate, a
        # naive time, a float beyond 32 bits, or a missing field that has a default.
        assert _left_for_a_reason(SCHEMAS[index], record), record
        return
    assert written == expected


@pytest.mark.parametrize("index", range(len(SCHEMAS)), ids=[s["name"] for s in SCHEMAS])
@settings(max_examples=300, deadline=None)
@given(data=st.data())
def test_any_other_record_is_fastavros_bytes_or_left_to_it(index: int, data: st.DataObject) -> None:
    record = data.draw(_records(SCHEMAS[index], strays=True))
    writer = WRITERS[index]
    assert writer is not None
    try:
        written = writer(record)
    except Unfit:
        return
    assert written == _fastavro(PARSED[index], record)


def _left_for_a_reason(schema: dict[str, Any], record: dict[str, Any]) -> bool:
    for field in schema["fields"]:
        name, value = field["name"], record.get(field["name"])
        if name not in record and "default" in field:
            return True
        if isinstance(value, str) and any(0xD800 <= ord(c) <= 0xDFFF for c in value):
            return True
        if isinstance(value, float) and field["type"] == "float" and math.isfinite(value) and abs(value) > 3.4e38:
            return True
    return False


def test_the_line_list_record_of_a_publisher_takes_the_fast_path() -> None:
    index = [schema["accord.stream"] for schema in SHIPPED].index("ukhsa.positive-tests")
    writer = WRITERS[index]
    assert writer is not None
    record = {"specimen_id": "S-1", "nhs_number": "9434765919", "name": "Alex Sample", "dob": dt.date(1987, 1, 8),
              "sex": "FEMALE", "ethnicity": None, "address": "142 Church Lane, Leicester", "postcode": "LE1 9GX",
              "occupation": None, "specimen_date": dt.date(2026, 12, 1), "lab_report_date": dt.date(2026, 12, 2),
              "test_type": "LFD", "pillar": "PILLAR_2", "lsoa": "E01013671", "msoa": "E02002761",
              "ltla": "E06000016", "utla": "E06000016"}
    assert writer(record) == _fastavro(PARSED[index], record)


@pytest.mark.parametrize("kind", [
    "bytes", {"type": "array", "items": "string"}, {"type": "map", "values": "int"},
    {"type": "fixed", "name": "F", "size": 2}, ["null", "string", "int"], ["int", "string"],
    {"type": "long", "logicalType": "timestamp-micros"}, {"type": "bytes", "logicalType": "decimal", "precision": 4},
    {"type": "record", "name": "Inner", "fields": []},
])
def test_a_schema_with_a_type_it_does_not_cover_gets_no_compiled_writer(kind: Any) -> None:
    schema = {"type": "record", "name": "Other", "fields": [{"name": "v", "type": kind}]}
    assert compile_writer(parse_schema(schema)) is None


@pytest.mark.parametrize("n", [0, 1, -1, 63, 64, -65, 2**31 - 1, -(2**31), 2**63 - 1, -(2**63)])
def test_zigzag_is_avros_long(n: int) -> None:
    buffer = io.BytesIO()
    schemaless_writer(buffer, parse_schema({"type": "long"}), n)
    assert zigzag(n) == buffer.getvalue()
