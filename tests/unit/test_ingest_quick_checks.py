"""The quick checks ingest runs on each record give the answers of the full ones they stand in for: the glance at the
fields the Avro writer is lax with (schema_fit), each field's quick rule test, orjson's parsing and its answers."""

from __future__ import annotations

import datetime as dt
import io
import json
from typing import Any

import pytest
from fastapi.responses import JSONResponse
from fastavro import schemaless_writer
from fastavro.validation import validate
from hypothesis import example, given, settings
from hypothesis import strategies as st

from broker.adapters.registry_memory import InMemorySchemaRegistry
from broker.api.bodies import CompactJSONResponse, parse_json
from broker.domain.json_avro import from_json
from broker.domain.topics import ingest_topic
from broker.domain.validation import RecordRules
from broker.services.ingest import MAX_REASONS, Ingest, answer
from broker.services.schema_fit import FitGlance
from broker.services.serde import AvroSerializer, SerializationContext
from tests.unit.ingest_fakes import MemoryLog
from tests.unit.test_fuzz_ingest import (
    JSON_VALUES,
    LA_TABLE,
    PARSED,
    PYTHON_VALUES,
    STREAMS,
    TODAY,
    _changed,
    _records,
)

CASES = 400
RULES = {stream: RecordRules.of(schema) for stream, schema in STREAMS.items()}
T1 = "ukhsa.positive-tests"


def _writes(stream: str, record: dict[str, Any]) -> bool:
    try:
        schemaless_writer(io.BytesIO(), PARSED[stream], record)
    except Exception:  # whatever the writer raises, it refused the record
        return False
    return True


def _validates(stream: str, record: dict[str, Any]) -> bool:
    try:
        return bool(validate(record, PARSED[stream], raise_errors=False))
    except ValueError:  # a date field holding text the date logic cannot read: it does not fit either
        return False


@settings(max_examples=CASES, deadline=None, derandomize=True, database=None)
@given(case=_records(PYTHON_VALUES))
@example(case=_changed(T1, {"dob": True}))
@example(case=_changed(T1, {"dob": 1.5}))
@example(case=_changed("nhstt.cases-to-trace", {"case_created_ts": 2**70}))
def test_a_record_the_glance_passes_and_the_writer_writes_fits_the_schema(case: tuple[str, dict[str, Any]]) -> None:
    stream, record = case
    if FitGlance(STREAMS[stream]).surely_fits(record) and _writes(stream, record):
        assert _validates(stream, record)


@pytest.mark.parametrize(("field_type", "value"), [
    ("int", True), ("int", 1.5), ("int", 2**31), ("long", False), ("boolean", "yes"), ("boolean", None),
    ("double", True), ({"type": "int", "logicalType": "date"}, 3.0), ({"type": "array", "items": "string"}, "x"),
])
def test_the_glance_never_passes_what_the_writer_would_write_wrongly(field_type: Any, value: Any) -> None:
    schema = {"type": "record", "name": "R", "fields": [{"name": "f", "type": field_type}]}
    assert not FitGlance(schema).surely_fits({"f": value})


def test_the_glance_passes_plain_values_of_lax_types() -> None:
    schema = {"type": "record", "name": "R", "fields": [
        {"name": "n", "type": "int"}, {"name": "b", "type": "boolean"}, {"name": "x", "type": "double"},
        {"name": "d", "type": {"type": "int", "logicalType": "date"}}, {"name": "s", "type": ["null", "string"]},
        {"name": "t", "type": {"type": "long", "logicalType": "timestamp-millis"}}]}
    record = {"n": 2**31 - 1, "b": False, "x": 2, "d": dt.date(2020, 6, 1), "s": 7,
              "t": dt.datetime(2020, 6, 1, tzinfo=dt.UTC)}
    assert FitGlance(schema).surely_fits(record)  # `s` is the writer's to refuse


@settings(max_examples=CASES, deadline=None, derandomize=True, database=None)
@given(case=_records(PYTHON_VALUES))
@example(case=_changed(T1, {"nhs_number": "9434765918"}))
@example(case=_changed(T1, {"postcode": "LE1 1ZZZ", "utla": "E10000018"}))
@example(case=_changed(T1, {"name": " \u2003"}))
@example(case=_changed(T1, {"specimen_date": dt.datetime(2020, 6, 27, tzinfo=dt.UTC)}))
def test_the_quick_rule_tests_find_what_every_check_finds(case: tuple[str, dict[str, Any]]) -> None:
    stream, record = case
    rules = RULES[stream]  # shared between examples, as ingest shares them: the area codes' answers are kept
    assert rules.violations(record, TODAY, LA_TABLE) == rules.all_violations(record, TODAY, LA_TABLE)


@settings(max_examples=CASES, deadline=None, derandomize=True, database=None)
@given(case=_records(JSON_VALUES))
@example(case=_changed(T1, {"dob": True}))
@example(case=_changed(T1, {"specimen_date": 1.5}))
@example(case=_changed(T1, {"name": 7}))
@example(case=_changed(T1, {"ethnicity": 7, "nhs_number": "1"}))
def test_publishing_gives_the_reasons_and_bytes_of_the_full_checks(case: tuple[str, dict[str, Any]]) -> None:
    """Before the quick checks, ingest validated each record against its schema, then ran the field rules, then
    encoded it: the same records are accepted, with the same bytes, and the rest refused for the same reasons."""
    stream, raw = case
    log = MemoryLog()
    ingest = Ingest(log, InMemorySchemaRegistry(), STREAMS, LA_TABLE, lambda: TODAY)
    [outcome] = ingest.publish(stream, [raw])
    record, problems = from_json(STREAMS[stream], raw)
    expected = problems or ingest.violations(stream, record)
    if len(expected) > MAX_REASONS:
        expected = expected[:MAX_REASONS - 1]
        assert list(outcome.reasons[:-1]) == expected
    else:
        assert list(outcome.reasons) == expected
    if not expected:
        serializer = AvroSerializer(InMemorySchemaRegistry(), json.dumps(STREAMS[stream]))
        assert log.sent[ingest_topic(stream)][0].value == serializer(record, SerializationContext(ingest_topic(stream)))
    reply = answer([outcome])
    assert CompactJSONResponse(reply).body == JSONResponse(reply).body


def _standard(raw: bytes) -> str:
    try:
        return repr(json.loads(raw, parse_constant=_refuse, parse_float=_finite))
    except ValueError:
        return "refused"


def _refuse(constant: str) -> Any:
    raise ValueError(constant)


def _finite(text: str) -> float:
    value = float(text)
    if value in (float("inf"), float("-inf")):
        raise ValueError(text)
    return value


def _ours(raw: bytes) -> str:
    try:
        return repr(parse_json(raw))
    except ValueError:
        return "refused"


BODY_PIECES = st.sampled_from([b"{", b"}", b"[", b"]", b",", b":", b'"a"', b'"\\ud800"', b'"\\u00e9"', b"1", b"-0",
                               b"1.5e3", b"1e999", b"NaN", b"Infinity", b"true", b"null", b" ", b"\t", b"\xff",
                               b"\xef\xbb\xbf", b"12345678901234567890123", b"-9223372036854775809",
                               b"18446744073709551615", b'"\x01"', b"\xc3\xa9"])


@settings(max_examples=CASES, deadline=None, derandomize=True, database=None)
@given(value=JSON_VALUES, ascii_only=st.booleans())
def test_a_body_parses_to_what_the_standard_parser_reads(value: Any, ascii_only: bool) -> None:
    raw = json.dumps({"records": [value]}, ensure_ascii=ascii_only).encode("utf-8", "surrogatepass")
    assert _ours(raw) == _standard(raw)


@settings(max_examples=CASES, deadline=None, derandomize=True, database=None)
@given(pieces=st.lists(BODY_PIECES, max_size=12))
@example(pieces=[b"[", b"12345678901234567890123", b"]"])
@example(pieces=[b"-9223372036854775809"])
@example(pieces=[b"1e999"])
@example(pieces=[b'"\\ud800"'])
def test_any_bytes_parse_or_are_refused_as_the_standard_parser_does(pieces: list[bytes]) -> None:
    raw = b"".join(pieces)
    assert _ours(raw) == _standard(raw)


def test_an_integer_beyond_64_bits_stays_exact() -> None:
    assert parse_json(b'{"n": 123456789012345678901234567890}') == {"n": 123456789012345678901234567890}
