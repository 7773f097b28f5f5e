"""Hostile records at ingest: each JSON record is accepted (and then decodes on the ingest topic) or quarantined with
its reasons, and every answer can be sent back as strict JSON; the field rules return Violations, never raise."""

from __future__ import annotations

import datetime as dt
import json
from collections.abc import Sequence
from typing import Any

from fastavro import parse_schema
from fastavro.validation import validate
from hypothesis import example, given, settings
from hypothesis import strategies as st

from broker.adapters.registry_memory import InMemorySchemaRegistry
from broker.domain.geography_files import load_la_table
from broker.domain.messages import Outgoing
from broker.domain.topics import ingest_topic
from broker.domain.validation import EXCERPT_MAX, validate_record
from broker.domain.wire import frame
from broker.services.ingest import Ingest, Outcome, load_stream_schemas
from broker.services.serde import AvroDeserializer, SerializationContext
from tests.unit.catalog_support import SCHEMAS

# Case counts per test: keep all three fuzz files under ~60 s on a slow 2-core machine.
PUBLISHED_BATCH_CASES = 300
FIELD_RULE_CASES = 300
SCREENED_BYTES_CASES = 200

STREAMS = load_stream_schemas(SCHEMAS)
LA_TABLE = load_la_table()
TODAY = dt.date(2020, 6, 26)
PARSED = {stream: parse_schema(schema) for stream, schema in STREAMS.items()}
# A valid value for each tag that the field rules check, so a base record passes them.
TAGGED = {"geography:ltla": "E07000130", "geography:utla": "E10000018", "geography:lsoa": "E01013627",
          "geography:msoa": "E02002830", "geography:icb": "E54000015", "geography:postcode": "LE1 6ZG"}


def _valid_json(field: dict[str, Any], required: bool) -> Any:
    """A JSON value that fits `field` and its tags; null for an optional field."""
    kind = field["type"]
    if isinstance(kind, list):
        if not required:
            return None
        kind = next(branch for branch in kind if branch != "null")
    if field.get("accord.format") == "nhs-number":
        return "9434765919"
    if "accord.codes" in field:
        return field["accord.codes"][0]
    tag = next((tag for tag in field.get("accord.tags", []) if tag in TAGGED), None)
    if tag is not None:
        return TAGGED[tag]
    if isinstance(kind, dict):
        return {"date": "2020-06-20", "timestamp-millis": "2020-06-20T09:00:00Z"}.get(
            kind.get("logicalType", ""), kind.get("symbols", ["?"])[0])
    return {"string": "X-1", "int": 3, "long": 3, "boolean": True}[kind]


BASE: dict[str, dict[str, Any]] = {
    stream: {f["name"]: _valid_json(f, f["name"] in schema.get("accord.required", [])) for f in schema["fields"]}
    for stream, schema in STREAMS.items()
}


def _changed(stream: str, changes: dict[str, Any]) -> tuple[str, dict[str, Any]]:
    return stream, BASE[stream] | changes


SYMBOLS = sorted({symbol for schema in STREAMS.values() for f in schema["fields"] if isinstance(f["type"], dict)
                  for symbol in f["type"].get("symbols", [])})
STRINGS = [
    *TAGGED.values(), *SYMBOLS, "E06000016", "E99999999", "e07000130", "GIR 0AA", "SW1A1AA", "", " ", "\u202e",
    "\ufeff", "\x00", "\ud800", "a\udfffb", "2020-06-26", "2020-06-27", "0001-01-01", "9999-12-31", "2020-02-30",
    "+10000-01-01", "2020-06-26T09:00:00Z", "2020-06-26T09:00:00", "2020-06-27T00:00:00+00:00",
    "0001-01-01T00:00:00+01:00", "9999-12-31T23:59:59-23:59", "2020-06-26T24:00:00Z", "NaN", "x" * 500, "x" * 1001,
    "9434765919", "9434765918", "943 476 5919", "99", "A", "I",
]
JSON_SCALARS = (st.none() | st.booleans() | st.integers() | st.integers(min_value=2**31 - 2, max_value=2**80)
                | st.floats() | st.text(max_size=12) | st.sampled_from(STRINGS)
                | st.text(st.characters(categories=["Cs"]), min_size=1, max_size=2))
JSON_VALUES = st.recursive(JSON_SCALARS, lambda inner: st.lists(inner, max_size=3)
                           | st.dictionaries(st.text(max_size=5), inner, max_size=3), max_leaves=6)
TIMEZONES = st.sampled_from([dt.UTC, dt.timezone(dt.timedelta(hours=23, minutes=59)),
                             dt.timezone(-dt.timedelta(hours=23, minutes=59))])
# What a decoded Avro record or a caller could hand validate_record besides JSON: dates, times, bytes, huge ints.
PYTHON_VALUES = (JSON_VALUES | st.dates() | st.datetimes(timezones=st.none() | TIMEZONES) | st.binary(max_size=8)
                 | st.sampled_from([dt.date.min, dt.date.max, dt.datetime.min, dt.datetime.max.replace(tzinfo=dt.UTC),
                                    10**5000, -(10**5000), float("nan"), float("-inf")]))


def _fitting(kind: Any) -> st.SearchStrategy[Any]:
    """JSON values of the field's Avro type, however odd (any text, year 1 or 9999): most should be accepted."""
    if isinstance(kind, list):
        return st.one_of([_fitting(branch) for branch in kind])
    if isinstance(kind, dict):
        moments = st.datetimes(timezones=TIMEZONES, min_value=dt.datetime(1, 1, 2), max_value=dt.datetime(9999, 12, 30))
        by_logical = {"date": st.dates().map(dt.date.isoformat), "timestamp-millis": moments.map(dt.datetime.isoformat)}
        return by_logical.get(kind.get("logicalType", ""), st.sampled_from(kind.get("symbols", ["?"])))
    return {"null": st.none(), "string": st.text(max_size=12), "boolean": st.booleans(),
            "int": st.integers(-(2**31), 2**31 - 1), "long": st.integers(-(2**63), 2**63 - 1)}[kind]


@st.composite
def _records(draw: st.DrawFn, values: st.SearchStrategy[Any]) -> tuple[str, dict[str, Any]]:
    """A stream's valid record with some fields replaced by `values` or by odd values of their type, or dropped,
    and perhaps unknown keys added."""
    stream = draw(st.sampled_from(sorted(STREAMS)))
    record = dict(BASE[stream])
    types = {f["name"]: f["type"] for f in STREAMS[stream]["fields"]}
    for name in draw(st.sets(st.sampled_from(sorted(record)), max_size=3)):
        if draw(st.integers(0, 4)) == 0:
            del record[name]
        else:
            record[name] = draw(values | _fitting(types[name]))
    record |= draw(st.dictionaries(st.text(max_size=4) | st.sampled_from(["\ud800", "ltla ", "LTLA"]), values,
                                   max_size=1 if draw(st.integers(0, 5)) == 0 else 0))
    return stream, record


class MemoryLog:
    """The ingest's RecordLog in memory: what was published where, with offsets counted per topic."""

    def __init__(self) -> None:
        self.sent: dict[str, list[tuple[bytes, bytes | None, Sequence[tuple[str, bytes]]]]] = {}

    def publish(self, topic: str, value: bytes, key: bytes | None = None,
                headers: Sequence[tuple[str, bytes]] = ()) -> tuple[int, int]:
        assert isinstance(value, bytes) and all(isinstance(header, bytes) for _, header in headers)
        self.sent.setdefault(topic, []).append((value, key, headers))
        return 0, len(self.sent[topic]) - 1

    def publish_all(self, records: Sequence[Outgoing]) -> list[tuple[int, int]]:
        return [self.publish(r.topic, r.value, r.key, r.headers) for r in records]


def _ingest() -> tuple[Ingest, MemoryLog, InMemorySchemaRegistry]:
    log, registry = MemoryLog(), InMemorySchemaRegistry()
    return Ingest(log, registry, STREAMS, LA_TABLE, lambda: TODAY), log, registry


def _as_http_json(outcome: Outcome) -> None:
    # What the HTTP API does with an outcome (Starlette's JSONResponse): strict JSON, UTF-8.
    json.dumps(outcome.as_json(), ensure_ascii=False, allow_nan=False).encode("utf-8")


@settings(max_examples=PUBLISHED_BATCH_CASES, deadline=None, derandomize=True, database=None)
@given(case=_records(JSON_VALUES), others=st.lists(JSON_VALUES, max_size=1))
# Found by fuzzing: a lone surrogate in a value or key raised from publish; the far timestamps and dates were
# accepted and then failed to decode on the ingest topic.
@example(case=_changed("ukhsa.positive-tests", {"\ud800": 1}), others=[])
@example(case=_changed("ukhsa.positive-tests", {"name": "Ann\ud800"}), others=[])
@example(case=_changed("nhstt.cases-to-trace", {"case_created_ts": "0001-01-01T00:00:00+01:00"}), others=[])
@example(case=_changed("nhstt.cases-to-trace", {"case_created_ts": 2**62}), others=[])
@example(case=_changed("ukhsa.positive-tests", {"specimen_date": 2**31 - 1}), others=[])
def test_published_records_are_accepted_and_decode_or_are_quarantined_with_reasons(
        case: tuple[str, dict[str, Any]], others: list[Any]) -> None:
    stream, record = case
    ingest, log, registry = _ingest()
    outcomes = ingest.publish(stream, [record, *others])  # `others` are mostly not JSON objects at all
    assert [outcome.index for outcome in outcomes] == list(range(1 + len(others)))
    for outcome in outcomes:
        _as_http_json(outcome)
        sent = log.sent[outcome.topic][outcome.offset]
        if outcome.status == "quarantined":
            assert outcome.reasons and all(reason.rule and reason.message for reason in outcome.reasons), outcome
            assert all(len(reason.value_excerpt) <= EXCERPT_MAX for reason in outcome.reasons)
            assert json.loads(sent[0])["reasons"]
            assert dict(sent[2])["accord.quarantine.rule"] == outcome.reasons[0].rule.encode()
        else:
            decoded = AvroDeserializer(registry)(sent[0], SerializationContext(outcome.topic))
            assert decoded is not None and validate(decoded, PARSED[stream], raise_errors=False)


def test_base_records_are_accepted() -> None:
    # Without this the fuzzing above could quarantine everything and still pass.
    ingest, _, _ = _ingest()
    assert all(ingest.publish(stream, [BASE[stream]])[0].status == "accepted" for stream in STREAMS)


@settings(max_examples=FIELD_RULE_CASES, deadline=None, derandomize=True, database=None)
@given(case=_records(PYTHON_VALUES))
@example(case=_changed("ukhsa.positive-tests", {"ltla": 10**5000}))  # str() refuses it
@example(case=_changed("ukhsa.positive-tests", {"postcode": "LE1\ud800"}))
def test_field_rules_return_violations_for_any_values(case: tuple[str, dict[str, Any]]) -> None:
    stream, record = case
    schema = STREAMS[stream]
    known = {f["name"] for f in schema["fields"]}
    for violation in validate_record(schema, record, TODAY, LA_TABLE):
        assert violation.field in known and violation.rule and violation.message, violation
        assert len(violation.value_excerpt) <= EXCERPT_MAX
        violation.value_excerpt.encode("utf-8")  # it goes into a Kafka header and a JSON answer


@settings(max_examples=SCREENED_BYTES_CASES, deadline=None, derandomize=True, database=None)
@given(stream=st.sampled_from(sorted(STREAMS)), body=st.binary(max_size=80), framed=st.booleans())
def test_screened_bytes_are_accepted_or_quarantined_with_reasons(stream: str, body: bytes, framed: bool) -> None:
    ingest, _, registry = _ingest()
    schema_id = registry.register(f"{ingest_topic(stream)}-value", json.dumps(STREAMS[stream]))
    outcome = ingest.screen(stream, frame(schema_id, body) if framed else body, partition=0, offset=7)
    _as_http_json(outcome)
    assert outcome.status == "accepted" or (outcome.reasons and outcome.reasons[0].rule)
