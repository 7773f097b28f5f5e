"""Avro encoders built once from a record schema, for the value types a publisher's record holds.

fastavro walks the schema for every record it writes, and picks each union's branch by checking the value against
every branch; for a line list of seventeen fields that was most of the API's encoding time. `compile_writer` turns
the schema into one small writer per field instead. It covers the Avro that Accord's streams use (strings, ints,
longs, booleans, floats, doubles, enums, dates, UTC timestamps, and each of these or null); a schema with anything
else gets no compiled writer. A compiled writer writes the same bytes as fastavro or raises `Unfit`: any value it is
not sure of (another type, an int beyond its range, a naive datetime, a missing field with a default) is left to
fastavro, which writes it or says why it cannot, as before.
"""

from __future__ import annotations

import datetime as dt
import struct
from collections.abc import Callable, Mapping
from typing import Any

Writer = Callable[[bytearray, Any], None]
RecordWriter = Callable[[Mapping[str, Any]], bytes]

_EPOCH = dt.datetime(1970, 1, 1, tzinfo=dt.UTC)
_EPOCH_DAY = dt.date(1970, 1, 1).toordinal()
_INT = (-(1 << 31), (1 << 31) - 1)
_LONG = (-(1 << 63), (1 << 63) - 1)
# Avro's zig-zag varint of 0-63 is one byte, n << 1: lengths of short strings and small counts, looked up.
_ONE_BYTE = [bytes([n << 1]) for n in range(64)]
_NULL_FIRST, _NULL_SECOND = (b"\x00", b"\x02"), (b"\x02", b"\x00")   # (null's branch, the value's branch)
_FLOAT, _DOUBLE = struct.Struct("<f"), struct.Struct("<d")
_SEEN_INTS: dict[int, bytes] = {}   # shared by every writer: an int's encoding is the same in any field
_SEEN_INTS_CAP = 100_000            # a few megabytes at most


class Unfit(Exception):  # a signal inside serde to use fastavro instead, never an error anyone is shown
    """The value is not one the compiled writer encodes; fastavro's writer decides."""


def compile_writer(schema: object) -> RecordWriter | None:
    """An encoder of records of `schema` (a parsed Avro schema) to Avro bytes, or None if it is not a record schema
    or has a type this module does not compile."""
    if not isinstance(schema, Mapping) or schema.get("type") != "record":
        return None
    fields: list[tuple[str, bool, Writer]] = []
    for field in schema.get("fields", ()):
        writer = _field_writer(field.get("type"))
        if writer is None:
            return None
        fields.append((field["name"], "default" in field, writer))

    def write(record: Mapping[str, Any]) -> bytes:
        if type(record) is not dict:
            raise Unfit
        out = bytearray()
        for name, has_default, field_writer in fields:
            value = record.get(name)
            if value is None and has_default and name not in record:
                raise Unfit   # fastavro writes the field's default
            field_writer(out, value)
        return bytes(out)

    return write


def zigzag(n: int) -> bytes:
    """`n` as Avro writes an int or a long: zig-zag, then 7 bits a byte, low bits first."""
    n = (n << 1) ^ (n >> 63)
    out = bytearray()
    while n > 0x7F:
        out.append((n & 0x7F) | 0x80)
        n >>= 7
    out.append(n)
    return bytes(out)


def _field_writer(kind: Any) -> Writer | None:
    if isinstance(kind, list):
        return _nullable(kind)
    return _plain_writer(kind)


def _nullable(branches: list[Any]) -> Writer | None:
    if len(branches) != 2 or "null" not in branches or branches[0] == branches[1]:
        return None
    null_first = branches[0] == "null"
    inner = _plain_writer(branches[1] if null_first else branches[0])
    if inner is None:
        return None
    null_branch, value_branch = _NULL_FIRST if null_first else _NULL_SECOND

    def write(out: bytearray, value: Any) -> None:
        if value is None:
            out += null_branch
        else:
            out += value_branch
            inner(out, value)
    return write


def _plain_writer(kind: Any) -> Writer | None:
    if isinstance(kind, str):
        return _PRIMITIVES.get(kind)
    if not isinstance(kind, Mapping):
        return None
    if kind.get("type") == "enum":
        return _enum(kind.get("symbols", []))
    logical = (kind.get("type"), kind.get("logicalType"))
    if logical == ("int", "date"):
        return _date
    if logical == ("long", "timestamp-millis"):
        return _timestamp_millis
    if "logicalType" not in kind:   # {"type": "string"} is "string"
        return _PRIMITIVES.get(kind.get("type"))  # type: ignore[arg-type]
    return None


def _string(out: bytearray, value: Any) -> None:
    if type(value) is not str:
        raise Unfit
    try:
        encoded = value.encode()
    except UnicodeEncodeError:   # a lone surrogate: fastavro says how it refuses it
        raise Unfit from None
    size = len(encoded)
    out += _ONE_BYTE[size] if size < 64 else zigzag(size)
    out += encoded


def _bounded(low: int, high: int) -> Writer:
    def write(out: bytearray, value: Any) -> None:
        if type(value) is not int or not low <= value <= high:
            raise Unfit
        if 0 <= value < 64:
            out += _ONE_BYTE[value]
            return
        # Dates and counts repeat (a day's specimen dates, a century of birth dates): encoded once each, up to a cap.
        encoded = _SEEN_INTS.get(value)
        if encoded is None:
            encoded = zigzag(value)
            if len(_SEEN_INTS) < _SEEN_INTS_CAP:
                _SEEN_INTS[value] = encoded
        out += encoded
    return write


_int, _long = _bounded(*_INT), _bounded(*_LONG)


def _boolean(out: bytearray, value: Any) -> None:
    if type(value) is not bool:
        raise Unfit
    out.append(1 if value else 0)


def _float(out: bytearray, value: Any) -> None:
    if type(value) is not float:
        raise Unfit
    try:
        out += _FLOAT.pack(value)
    except OverflowError:
        raise Unfit from None


def _double(out: bytearray, value: Any) -> None:
    if type(value) is not float:
        raise Unfit
    out += _DOUBLE.pack(value)


def _date(out: bytearray, value: Any) -> None:
    # fastavro's own conversion: days since 1970-01-01.
    _int(out, value.toordinal() - _EPOCH_DAY if type(value) is dt.date else value)


def _timestamp_millis(out: bytearray, value: Any) -> None:
    if type(value) is dt.datetime:
        if value.tzinfo is None:   # fastavro reads a naive time as the machine's local time
            raise Unfit
        delta = value - _EPOCH
        # fastavro's own arithmetic, so an instant before 1970 rounds as it does
        value = (delta.days * 86_400 + delta.seconds) * 1000 + int(delta.microseconds / 1000)
    _long(out, value)


def _enum(symbols: list[str]) -> Writer:
    indexes = {symbol: zigzag(index) for index, symbol in enumerate(symbols)}

    def write(out: bytearray, value: Any) -> None:
        encoded = indexes.get(value) if type(value) is str else None
        if encoded is None:
            raise Unfit
        out += encoded
    return write


_PRIMITIVES: dict[str, Writer] = {"string": _string, "int": _int, "long": _long, "boolean": _boolean,
                                  "float": _float, "double": _double}
