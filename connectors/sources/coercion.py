"""Column mapping and type coercion, shared by every source: a row of text (or loosely typed values) read from a
file, an HTTP answer or a database becomes a record as Accord's API takes it (JSON, dates as ISO strings), or a
reason it cannot.

- dates: ISO `2020-06-25`, or UK day first `25/06/2020` (also `25/6/2020`, `25.06.2020`, `25-06-2020`); never
  month first. Timestamps: ISO 8601, or `25/06/2020 14:30[:00]`; one without a zone is UK local time
  (Europe/London), as a UK public body writes it.
- numbers: `1,234` and `1,234.5` (thousands separators), surrounding spaces; an int field refuses `1.5`.
- booleans: true/false, yes/no, y/n, 1/0 (any case).
- an empty (or all-space) value is null where the field allows null, the field's default where it has one, and a
  reject otherwise; a field the row does not have at all is treated the same way.
Enum symbols, code lists, NHS numbers and the other rules of the stream are checked by the API, which quarantines
what breaks them with its own reasons.
"""

from __future__ import annotations

import datetime as dt
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any
from zoneinfo import ZoneInfo

from broker.errors import ConfigError

UK = ZoneInfo("Europe/London")
_ISO_DATE = re.compile(r"^(\d{4})-(\d{2})-(\d{2})$")
_UK_DATE = re.compile(r"^(\d{1,2})[/.-](\d{1,2})[/.-](\d{4})$")
_UK_TIME = re.compile(r"^(\d{1,2})[/.-](\d{1,2})[/.-](\d{4})[ T](\d{1,2}):(\d{2})(?::(\d{2}))?$")
_NUMBER = re.compile(r"^[+-]?(\d{1,3}(,\d{3})+|\d+)(\.\d+)?([eE][+-]?\d+)?$")
_TRUE, _FALSE = frozenset({"true", "yes", "y", "1", "t"}), frozenset({"false", "no", "n", "0", "f"})
_MISSING = object()


class CoercionError(ValueError):
    """A value that cannot be the field's type; the message names the field and the value."""


_DATES: dict[str, str] = {}  # dates repeat (a day's specimens): each text is parsed once, up to MAX_CACHED
MAX_CACHED = 100_000


def to_date(text: str) -> str:
    known = _DATES.get(text)
    if known is not None:
        return known
    if len(_DATES) >= MAX_CACHED:
        _DATES.clear()
    _DATES[text] = found = _parse_date(text)
    return found


def _parse_date(text: str) -> str:
    found = _ISO_DATE.match(text)
    if found:
        year, month, day = int(found[1]), int(found[2]), int(found[3])
    else:
        found = _UK_DATE.match(text)
        if not found:
            raise ValueError(f"{text!r} is not a date (write 25/06/2020 or 2020-06-25)")
        day, month, year = int(found[1]), int(found[2]), int(found[3])
    try:
        return dt.date(year, month, day).isoformat()
    except ValueError as exc:
        raise ValueError(f"{text!r} is not a date ({exc})") from None


def to_timestamp(text: str) -> str:
    found = _UK_TIME.match(text)
    try:
        if found:
            day, month, year, hour, minute = (int(found[i]) for i in range(1, 6))
            moment = dt.datetime(year, month, day, hour, minute, int(found[6] or 0))
        else:
            moment = dt.datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        raise ValueError(f"{text!r} is not a date and time (write 25/06/2020 14:30 or 2020-06-25T14:30:00Z)") from None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UK)
    return moment.isoformat()


def _number_text(text: str) -> str:
    if not _NUMBER.match(text):
        raise ValueError(f"{text!r} is not a number")
    return text.replace(",", "")


def to_int(value: Any) -> int:
    if isinstance(value, bool):
        raise ValueError(f"{value!r} is not a whole number")
    if isinstance(value, int):
        return value
    if isinstance(value, float):
        if not value.is_integer():
            raise ValueError(f"{value!r} is not a whole number")
        return int(value)
    text = _number_text(str(value))
    try:
        return int(text)
    except ValueError:
        number = float(text)
        if not number.is_integer():
            raise ValueError(f"{value!r} is not a whole number") from None
        return int(number)


def to_float(value: Any) -> float:
    if isinstance(value, bool):
        raise ValueError(f"{value!r} is not a number")
    if isinstance(value, int | float):
        return float(value)
    return float(_number_text(str(value)))


def to_bool(value: Any) -> bool:
    if isinstance(value, bool):
        return value
    text = str(value).lower()
    if text in _TRUE:
        return True
    if text in _FALSE:
        return False
    raise ValueError(f"{value!r} is not true or false (write true/false, yes/no or 1/0)")


def _as_text(value: Any) -> str:
    return value if isinstance(value, str) else str(value)


def _date(value: Any) -> Any:
    if isinstance(value, dt.datetime):
        return value.date().isoformat()
    if isinstance(value, dt.date):
        return value.isoformat()
    return to_date(_as_text(value))


def _timestamp(value: Any) -> Any:
    if isinstance(value, dt.datetime):
        return (value if value.tzinfo else value.replace(tzinfo=UK)).isoformat()
    return to_timestamp(_as_text(value))


def _string(value: Any) -> Any:
    if isinstance(value, dt.datetime | dt.date):
        return value.isoformat()
    return value if isinstance(value, str) else str(value)


def _same(value: Any) -> Any:
    return value


def _converter(avro: Any) -> Callable[[Any], Any]:
    """How a value becomes the JSON the API takes for the Avro type `avro` (not a union)."""
    if isinstance(avro, Mapping):
        logical = avro.get("logicalType")
        if logical == "date":
            return _date
        if logical in ("timestamp-millis", "timestamp-micros"):
            return _timestamp
        kind = avro.get("type")
        if kind == "enum":
            return _string  # the API checks the symbol, and names the symbols it takes
        if kind in ("record", "array", "map"):
            return _same
        return _converter(kind)
    return {"int": to_int, "long": to_int, "float": to_float, "double": to_float, "boolean": to_bool,
            "string": _string}.get(str(avro), _same)


@dataclass(frozen=True)
class FieldRule:
    field: str
    column: str
    convert: Callable[[Any], Any]
    nullable: bool
    default: Any  # _MISSING when the field has none


@dataclass(frozen=True)
class Mapper:
    """Maps a row (column name -> value) to a record of the stream's schema; built once per source."""

    rules: tuple[FieldRule, ...]

    def columns(self) -> list[str]:
        return [rule.column for rule in self.rules]

    def required_columns(self) -> list[str]:
        """The columns a row must have a value in (their fields allow no null and have no default)."""
        return [rule.column for rule in self.rules if not rule.nullable and rule.default is _MISSING]

    def record(self, row: Mapping[str, Any]) -> dict[str, Any]:
        """The record, or CoercionError naming every field that cannot be coerced. (The hot path of every source:
        text is trimmed, and a string field's text taken as it is, without a call.)"""
        record: dict[str, Any] = {}
        problems: list[str] | None = None
        for rule in self.rules:
            value = row.get(rule.column, _MISSING)
            if value.__class__ is str:
                value = value.strip()
                if value:
                    if rule.convert is _string:
                        record[rule.field] = value
                        continue
                else:
                    value = None
            if value is None or value is _MISSING:
                if rule.nullable:
                    record[rule.field] = None
                elif rule.default is not _MISSING:
                    record[rule.field] = rule.default
                else:
                    where = "" if rule.column == rule.field else f" (column {rule.column!r})"
                    problems = problems or []
                    problems.append(f"{rule.field}{where}: a value is required"
                                    + (" and the row has no such column" if value is _MISSING else ""))
                continue
            try:
                record[rule.field] = rule.convert(value)
            except ValueError as exc:
                problems = problems or []
                problems.append(f"{rule.field}: {exc}")
        if problems:
            raise CoercionError("; ".join(problems))
        return record


def mapper(schema: Mapping[str, Any], columns: Mapping[str, str] | None = None) -> Mapper:
    """The Mapper for a stream's Avro record schema; `columns` maps field -> source column (a field not named is
    read from the column of its own name). A name in `columns` that is no field of the schema is a ConfigError."""
    columns = dict(columns or {})
    fields = schema.get("fields", [])
    names = {f["name"] for f in fields}
    unknown = sorted(set(columns) - names)
    if unknown:
        raise ConfigError(f"columns: {', '.join(unknown)} is not a field of {schema.get('accord.stream', 'the stream')}"
                          f" (its fields: {', '.join(sorted(names))})")
    rules = []
    for f in fields:
        avro = f["type"]
        branches = avro if isinstance(avro, list) else [avro]
        nullable = "null" in branches
        typed = [b for b in branches if b != "null"]
        convert = _converter(typed[0]) if len(typed) == 1 else _same
        rules.append(FieldRule(f["name"], columns.get(f["name"], f["name"]), convert, nullable,
                               f.get("default", _MISSING)))
    return Mapper(tuple(rules))
