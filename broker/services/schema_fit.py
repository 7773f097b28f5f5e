"""Which fields of a record the Avro writer cannot be trusted to refuse when they misfit, and a cheap test of them.

fastavro's writer refuses most values that do not fit their field (text in a string field, an unknown enum symbol,
a union no branch of which matches), but not all: it writes `True` or `1.5` or 2**40 into an int, and anything at
all into a boolean (as its truth). Ingest used to run fastavro's whole validation before writing each record; now
it checks only the fields where the writer is lax, and only the values it can tell are good at a glance (an int in
range, a date, a datetime). Any other value there sends the record through fastavro's validation as before.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable, Mapping
from typing import Any

_INT = 2**31
_LONG = 2**63
# Types the writer checks as strictly as validation does (found by trying each against a spread of wrong values):
# text, bytes, enum symbols, null; and a union of those or of plain numbers, whose branch the writer picks by
# validating the value against each.
_STRICT_PRIMITIVES = frozenset({"null", "string", "bytes"})
_UNION_BRANCHES = frozenset({"null", "string", "bytes", "int", "long", "float", "double", "boolean"})

Glance = Callable[[Any], bool]


def _plain_int(value: Any) -> bool:
    return type(value) is int and -_INT <= value < _INT


def _plain_long(value: Any) -> bool:
    return type(value) is int and -_LONG <= value < _LONG


def _plain_float(value: Any) -> bool:
    return type(value) is float or type(value) is int


def _plain_boolean(value: Any) -> bool:
    return type(value) is bool


def _plain_date(value: Any) -> bool:
    return type(value) is dt.date


def _plain_datetime(value: Any) -> bool:
    # Years 1 to 9999 in milliseconds or microseconds since 1970 fit a long either way.
    return type(value) is dt.datetime


_LAX: Mapping[tuple[str, str | None], Glance] = {
    ("int", None): _plain_int, ("long", None): _plain_long, ("float", None): _plain_float,
    ("double", None): _plain_float, ("boolean", None): _plain_boolean, ("int", "date"): _plain_date,
    ("long", "timestamp-millis"): _plain_datetime, ("long", "timestamp-micros"): _plain_datetime,
}


def _is_strict(field_type: Any) -> bool:
    if isinstance(field_type, str):
        return field_type in _STRICT_PRIMITIVES
    if isinstance(field_type, dict):
        return field_type.get("type") == "enum" and not field_type.get("logicalType")
    if isinstance(field_type, list):
        return all(_is_strict(branch) or (isinstance(branch, str) and branch in _UNION_BRANCHES)
                   for branch in field_type)
    return False


def _glance(field_type: Any) -> Glance | None:
    """A test that a value surely fits a lax field type, or None when the type is neither strict nor plain."""
    if isinstance(field_type, str):
        return _LAX.get((field_type, None))
    if isinstance(field_type, dict) and isinstance(field_type.get("type"), str):
        logical = field_type.get("logicalType")
        return _LAX.get((field_type["type"], logical if isinstance(logical, str) else None))
    return None


class FitGlance:
    """`surely_fits(record)`: True only when fastavro's validation would pass `record` whatever the writer does with
    the fields it checks itself. False means "validate to find out", never "does not fit"."""

    def __init__(self, schema: Mapping[str, Any]) -> None:
        checks: list[tuple[str, Glance]] = []
        self._opaque = False   # a field type neither strict nor plain (a nested record, an array): always validate
        for field in schema.get("fields", []):
            if _is_strict(field["type"]):
                continue
            glance = _glance(field["type"])
            if glance is None:
                self._opaque = True
                break
            checks.append((field["name"], glance))
        self._checks = tuple(checks)

    def surely_fits(self, record: Mapping[str, Any]) -> bool:
        if self._opaque:
            return False
        get = record.get
        for name, glance in self._checks:  # noqa: SIM110 - all() over a generator took twice as long per record
            if not glance(get(name)):
                return False
        return True
