"""Hostile bytes at the Avro deserializer: every message is refused with a SerdeError or decodes to a record that fits
its writer schema; no other exception, no hang."""

from __future__ import annotations

import datetime as dt
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from fastavro import parse_schema
from fastavro.validation import validate
from hypothesis import example, given, settings
from hypothesis import strategies as st

from broker.adapters.registry_memory import InMemorySchemaRegistry
from broker.domain.wire import MAX_SCHEMA_ID, frame
from broker.errors import SerdeError
from broker.services.serde import AvroDeserializer, AvroSerializer, SerializationContext

# Case counts per test: keep all three fuzz files under ~60 s on a slow 2-core machine.
ARBITRARY_BYTES_CASES = 300
RANDOM_BODY_CASES = 300
MUTATED_BODY_CASES = 300
OTHER_SCHEMA_CASES = 200

CTX = SerializationContext("ingest.fuzz")
SCHEMAS_DIR = Path(__file__).resolve().parents[2] / "schemas"
# Every Avro type the real schemas do not use, so the decoder's other paths meet hostile bytes too.
EVERY_TYPE: dict[str, Any] = {
    "type": "record", "name": "EveryType", "namespace": "fuzz",
    "fields": [
        {"name": "raw", "type": "bytes"},
        {"name": "ratio", "type": "float"},
        {"name": "rate", "type": "double"},
        {"name": "count", "type": "long"},
        {"name": "tags", "type": {"type": "array", "items": "string"}},
        {"name": "counts", "type": {"type": "map", "values": ["null", "int"]}},
        {"name": "digest", "type": {"type": "fixed", "name": "Digest", "size": 4}},
        {"name": "nested", "type": ["null", {"type": "record", "name": "Inner", "fields": [
            {"name": "at", "type": {"type": "long", "logicalType": "timestamp-micros"}},
            {"name": "flag", "type": "boolean"}]}]},
    ],
}
SCHEMAS: list[dict[str, Any]] = [
    *(json.loads(path.read_text(encoding="utf-8")) for path in sorted(SCHEMAS_DIR.glob("*.avsc"))), EVERY_TYPE]
# A block count is all an array of nulls takes on the wire: fastavro would build a list of billions from 10 bytes.
NULLS: dict[str, Any] = {"type": "record", "name": "Nulls", "fields": [
    {"name": "gaps", "type": {"type": "array", "items": "null"}}]}
INT_ONLY: dict[str, Any] = {"type": "record", "name": "Count", "fields": [{"name": "n", "type": "int"}]}

REGISTRY = InMemorySchemaRegistry()
IDS = [REGISTRY.register(f"fuzz-{n}-value", json.dumps(schema)) for n, schema in enumerate(SCHEMAS)]
NULLS_ID = REGISTRY.register("fuzz-nulls-value", json.dumps(NULLS))
INT_ONLY_ID = REGISTRY.register("fuzz-count-value", json.dumps(INT_ONLY))
ALL_IDS = [*IDS, NULLS_ID, INT_ONLY_ID]
PARSED = {schema_id: parse_schema(json.loads(REGISTRY.schema_by_id(schema_id))) for schema_id in ALL_IDS}
SERIALIZERS = [AvroSerializer(REGISTRY, json.dumps(schema)) for schema in SCHEMAS]


def _values(kind: Any) -> st.SearchStrategy[Any]:
    """Values that fit the Avro type `kind` (as written in the schema files: no named-type references)."""
    if isinstance(kind, list):
        return st.one_of([_values(branch) for branch in kind])
    if isinstance(kind, str):
        return _PRIMITIVES[kind]
    logical = kind.get("logicalType")
    if logical in _LOGICAL:
        return _LOGICAL[logical]
    nested: dict[str, Callable[[], st.SearchStrategy[Any]]] = {
        "record": lambda: st.fixed_dictionaries({f["name"]: _values(f["type"]) for f in kind["fields"]}),
        "enum": lambda: st.sampled_from(kind["symbols"]),
        "array": lambda: st.lists(_values(kind["items"]), max_size=3),
        "map": lambda: st.dictionaries(st.text(max_size=4), _values(kind["values"]), max_size=3),
        "fixed": lambda: st.binary(min_size=kind["size"], max_size=kind["size"]),
    }
    return nested[kind["type"]]() if kind["type"] in nested else _values(kind["type"])


_PRIMITIVES: dict[str, st.SearchStrategy[Any]] = {
    "null": st.none(), "boolean": st.booleans(), "string": st.text(max_size=20), "bytes": st.binary(max_size=20),
    "int": st.integers(-(2**31), 2**31 - 1), "long": st.integers(-(2**63), 2**63 - 1),
    "float": st.floats(width=32), "double": st.floats(),
}
_UTC = st.datetimes(timezones=st.just(dt.UTC))
_LOGICAL: dict[str, st.SearchStrategy[Any]] = {
    "date": st.dates(),
    "timestamp-millis": _UTC.map(lambda moment: moment.replace(microsecond=moment.microsecond // 1000 * 1000)),
    "timestamp-micros": _UTC,
}


@st.composite
def _encoded(draw: st.DrawFn) -> tuple[int, bytes]:
    """(index into SCHEMAS, a framed record that fits that schema)."""
    index = draw(st.integers(0, len(SCHEMAS) - 1))
    data = SERIALIZERS[index](draw(_values(SCHEMAS[index])), CTX)
    assert data is not None
    return index, data


@st.composite
def _mutated(draw: st.DrawFn, data: bytes) -> bytes:
    """`data` cut short, with bytes overwritten, inserted or removed; the header is left alone, so the body is hit."""
    body = bytearray(data[5:])
    for _ in range(draw(st.integers(1, 3))):
        at = draw(st.integers(0, len(body)))
        match draw(st.sampled_from(["cut", "set", "insert", "remove"])):
            case "cut":
                del body[at:]
            case "set" if at < len(body):
                body[at] = draw(st.sampled_from([0x00, 0x01, 0x7F, 0x80, 0xFE, 0xFF]) | st.integers(0, 255))
            case "insert":
                body[at:at] = draw(st.binary(min_size=1, max_size=10))
            case _:
                del body[at:at + draw(st.integers(1, 4))]
    return data[:5] + bytes(body)


def _refused_or_fits(data: bytes, deserializer: AvroDeserializer, fits: Any = None) -> None:
    """The property: SerdeError, or a dict that validates against `fits` (else the writer schema in the header)."""
    try:
        record = deserializer(data, CTX)
    except SerdeError as exc:
        assert str(exc).startswith(str(CTX)), exc  # every refusal says which topic it came from
        return
    assert isinstance(record, dict)
    schema_id = int.from_bytes(data[1:5], "big")
    assert validate(record, fits if fits is not None else PARSED[schema_id], raise_errors=False), record


@settings(max_examples=ARBITRARY_BYTES_CASES, deadline=None, derandomize=True, database=None)
@given(data=st.binary(max_size=64) | st.binary(max_size=60).map(lambda body: b"\x00" + body))
def test_arbitrary_bytes_are_refused_or_decoded(data: bytes) -> None:
    _refused_or_fits(data, AvroDeserializer(REGISTRY))


@settings(max_examples=RANDOM_BODY_CASES, deadline=None, derandomize=True, database=None)
@given(schema_id=st.sampled_from(ALL_IDS) | st.integers(0, MAX_SCHEMA_ID), body=st.binary(max_size=120))
@example(schema_id=NULLS_ID, body=b"\xfe\xff\xff\xff\xff\xff\xff\xff\x7f")  # 2**62 nulls: refused, not built
@example(schema_id=INT_ONLY_ID, body=b"\x80\x80\x80\x80\x80\x40")  # an int of 2**40: beyond what int allows
def test_random_body_behind_a_valid_header_is_refused_or_decoded(schema_id: int, body: bytes) -> None:
    _refused_or_fits(frame(schema_id, body), AvroDeserializer(REGISTRY))


@settings(max_examples=MUTATED_BODY_CASES, deadline=None, derandomize=True, database=None)
@given(data=st.data())
def test_truncated_or_mutated_record_is_refused_or_decoded(data: st.DataObject) -> None:
    _, encoded = data.draw(_encoded())
    _refused_or_fits(data.draw(_mutated(encoded)), AvroDeserializer(REGISTRY))


@settings(max_examples=OTHER_SCHEMA_CASES, deadline=None, derandomize=True, database=None)
@given(encoded=_encoded(), claimed=st.sampled_from(IDS), reader=st.none() | st.sampled_from(range(len(SCHEMAS))))
def test_body_written_with_another_schema_is_refused_or_decoded(encoded: tuple[int, bytes], claimed: int,
                                                                 reader: int | None) -> None:
    # The header names one schema, the body was written with another; with a reader schema, it resolves to that.
    body = encoded[1][5:]
    if reader is None:
        _refused_or_fits(frame(claimed, body), AvroDeserializer(REGISTRY))
    else:
        fits = parse_schema(SCHEMAS[reader])
        _refused_or_fits(frame(claimed, body), AvroDeserializer(REGISTRY, json.dumps(SCHEMAS[reader])), fits)


def test_array_of_items_that_take_no_bytes_is_refused_naming_the_schema() -> None:
    with pytest.raises(SerdeError, match=f"schema id {NULLS_ID} has an array of null items, which take no bytes"):
        AvroDeserializer(REGISTRY)(frame(NULLS_ID, b"\x00"), CTX)


def test_int_beyond_32_bits_is_refused_naming_the_field() -> None:
    with pytest.raises(SerdeError, match=r"not allow at field Count\.n \(an int beyond 32 bits\)"):
        AvroDeserializer(REGISTRY)(frame(INT_ONLY_ID, b"\x80\x80\x80\x80\x80\x40"), CTX)


def test_arrays_split_into_blocks_are_read_as_avro_allows() -> None:
    schema = {"type": "record", "name": "Blocks", "fields": [{"name": "xs", "type": {"type": "array", "items": "int"}}]}
    schema_id = REGISTRY.register("fuzz-blocks-value", json.dumps(schema))
    # Two blocks of one item each, then the end: another writer's legal encoding of [1, 2].
    assert AvroDeserializer(REGISTRY)(frame(schema_id, b"\x02\x02\x02\x04\x00"), CTX) == {"xs": [1, 2]}
