"""JSON records (as HTTP publishers send them) to the Python values an Avro schema expects."""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping
from typing import Any

from broker.domain.validation import Violation, value_excerpt

SCHEMA_TYPE = "schema-type"
UNKNOWN_FIELD = "unknown-field"


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


def _convert(logical: str | None, value: Any) -> Any:
    if value is None or logical is None or not isinstance(value, str):
        return value
    if logical == "date":
        return dt.date.fromisoformat(value)
    if logical in ("timestamp-millis", "timestamp-micros"):
        parsed = dt.datetime.fromisoformat(value.replace("Z", "+00:00"))
        if parsed.tzinfo is None:
            raise ValueError("a timestamp needs a time zone (e.g. 2020-06-22T09:00:00Z)")
        return parsed
    return value


def from_json(schema: Mapping[str, Any], record: Mapping[str, Any]) -> tuple[dict[str, Any], list[Violation]]:
    """The record with ISO dates and timestamps turned into date/datetime; what could not be converted."""
    converted: dict[str, Any] = {}
    problems: list[Violation] = []
    fields = {f["name"]: f for f in schema.get("fields", [])}
    for name, value in record.items():
        if name not in fields:
            problems.append(Violation(name, UNKNOWN_FIELD, f"{name} is not a field of this stream's schema",
                                      value_excerpt(value)))
            continue
        try:
            converted[name] = _convert(_logical(fields[name]["type"]), value)
        except ValueError as exc:
            problems.append(Violation(name, SCHEMA_TYPE, f"{name}: {exc}", value_excerpt(value)))
    return converted, problems
