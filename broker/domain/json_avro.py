"""JSON records (as HTTP publishers send them) to the Python values an Avro schema expects."""

from __future__ import annotations

import datetime as dt
import json
from collections.abc import Mapping
from typing import Any

from broker.domain.validation import CODE_LIST, Violation, utf8_safe, value_excerpt

SCHEMA_TYPE = "schema-type"
UNKNOWN_FIELD = "unknown-field"
_TIMESTAMP_UNITS = {"timestamp-millis": "milliseconds", "timestamp-micros": "microseconds"}
_OUT_OF_RANGE = "is outside the years 1 to 9999 (UTC), so Accord could not read it back from the ingest topic"


def _logical(field_type: Any) -> str | None:
    if isinstance(field_type, dict):
        logical = field_type.get("logicalType")
        return str(logical) if logical else None
    if isinstance(field_type, list):
        for branch in field_type:
            found = _logical(branch)
            if found:
                return found
    return None


def _symbols(field_type: Any) -> list[str] | None:
    """The symbols of an enum type (or of the enum branch of a union), None for any other type."""
    if isinstance(field_type, dict) and field_type.get("type") == "enum":
        return [str(symbol) for symbol in field_type.get("symbols", [])]
    if isinstance(field_type, list):
        found = [s for s in (_symbols(branch) for branch in field_type) if s is not None]
        return found[0] if found else None
    return None


def _convert(logical: str | None, value: Any) -> Any:
    if isinstance(value, str):
        # JSON can carry a lone surrogate (\ud800) that no UTF-8 encoder, Avro's included, will write.
        utf8_safe(value, strict=True)
        if logical is None:  # most fields: plain text, nothing to convert
            return value
    elif isinstance(value, int) and logical in ("date", *_TIMESTAMP_UNITS):
        # JSON has no date type: a number here is a mistake far more often than days or milliseconds since 1970.
        example = "2020-06-22" if logical == "date" else "2020-06-22T09:00:00Z"
        raise ValueError(f"{'a date' if logical == 'date' else 'a timestamp'} is written as an ISO 8601 string "
                         f"such as {example}, not as a number")
    if value is None or logical is None or not isinstance(value, str):
        return value
    if logical == "date":
        return dt.date.fromisoformat(value)
    if logical in _TIMESTAMP_UNITS:
        parsed = dt.datetime.fromisoformat(value.replace("Z", "+00:00"))
        if parsed.tzinfo is None:
            raise ValueError("a timestamp needs a time zone (e.g. 2020-06-22T09:00:00Z)")
        try:
            parsed.astimezone(dt.UTC)
        except OverflowError:
            raise ValueError(f"{value} {_OUT_OF_RANGE}") from None
        return parsed
    return value


_FIELD_TYPES: dict[int, tuple[Mapping[str, Any], dict[str, tuple[str | None, list[str] | None]]]] = {}


def _field_types(schema: Mapping[str, Any]) -> dict[str, tuple[str | None, list[str] | None]]:
    """Each field's logical type and enum symbols, worked out once per schema (ingest converts every record)."""
    cached = _FIELD_TYPES.get(id(schema))
    if cached is not None and cached[0] is schema:
        return cached[1]
    found = {f["name"]: _kind(_logical(f["type"]), _symbols(f["type"])) for f in schema.get("fields", [])}
    if len(_FIELD_TYPES) > 64:
        _FIELD_TYPES.clear()
    _FIELD_TYPES[id(schema)] = (schema, found)
    return found


_PLAIN: tuple[str | None, list[str] | None] = (None, None)   # neither logical nor enum: most fields


def _kind(logical: str | None, symbols: list[str] | None) -> tuple[str | None, list[str] | None]:
    return _PLAIN if logical is None and symbols is None else (logical, symbols)


def from_json(schema: Mapping[str, Any], record: Mapping[str, Any]) -> tuple[dict[str, Any], list[Violation]]:
    """The record with ISO dates and timestamps turned into date/datetime; what could not be converted."""
    converted: dict[str, Any] = {}
    problems: list[Violation] = []
    fields = _field_types(schema)
    for name, value in record.items():
        kind = fields.get(name)
        if kind is _PLAIN and type(value) is str and value.isascii():
            converted[name] = value  # plain text, known to hold no lone surrogate
            continue
        if kind is None:
            shown = utf8_safe(name)
            problems.append(Violation(shown, UNKNOWN_FIELD, f"{shown} is not a field of this stream's schema",
                                      value_excerpt(value)))
            continue
        logical, symbols = kind
        if symbols is not None and type(value) is str and value in symbols:
            converted[name] = value  # an enum's symbol: Avro names, ASCII letters, digits and underscores
            continue
        if symbols is not None and isinstance(value, str) and value not in symbols:
            problems.append(Violation(name, CODE_LIST, f"{name} is not one of its codes ({', '.join(symbols)})",
                                      value_excerpt(value)))
            continue
        try:
            converted[name] = _convert(logical, value)
        except ValueError as exc:
            problems.append(Violation(name, SCHEMA_TYPE, f"{name}: {exc}", value_excerpt(value)))
    return converted, problems


def to_json(value: Any) -> Any:
    """A decoded Avro value as JSON (what the pull API hands a subscriber): dates and times as ISO 8601 (UTC with
    `Z`), bytes as hex; the inverse of `from_json` for the logical types Accord's schemas use."""
    if isinstance(value, dt.datetime):
        moment = value.astimezone(dt.UTC) if value.tzinfo is not None else value
        return moment.isoformat().replace("+00:00", "Z")
    if isinstance(value, dt.date | dt.time):
        return value.isoformat()
    if isinstance(value, bytes):
        return value.hex()
    if isinstance(value, Mapping):
        return {str(k): to_json(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [to_json(v) for v in value]
    if isinstance(value, float | int | str | bool) or value is None:
        return value
    return str(value)  # a Decimal or a UUID: its exact text


FORMULA_STARTS = ("=", "+", "-", "@", "\t", "\r")


def csv_cell(value: Any) -> Any:
    """A decoded Avro value as one CSV cell (the pull API's CSV and the file sink's): its `to_json` form, nested
    values as JSON, None an empty cell. Text a spreadsheet would run as a formula (a publisher's `=HYPERLINK(...)` in
    a name) starts with `'`, as OWASP advises for CSV."""
    value = to_json(value)
    if isinstance(value, dict | list):
        return json.dumps(value, separators=(",", ":"))
    if isinstance(value, str) and value.startswith(FORMULA_STARTS):
        return "'" + value
    return value
