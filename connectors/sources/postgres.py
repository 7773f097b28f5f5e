"""The PostgreSQL source: a table (or a query) read in order of a watermark column (`updated_at`, or an id) and
tie-breaker columns that make each row's place unique, in keyset batches:

    SELECT * FROM <table | (query) AS accord_source>
     WHERE watermark IS NOT NULL AND (watermark, id) > (<stored watermark>, <stored id>)
       [AND watermark <= now() - <safety lag>]
     ORDER BY watermark, id LIMIT <batch rows>

The position is the (watermark, tie-breaker) of the last row of the last stored batch, so rows sharing a watermark
value are neither skipped nor repeated across batches and restarts. A row updated later (its `updated_at` moves
on) is read again: the stream receives its new version.

A row committed late with a watermark older than one already read would be missed: a transaction that sets
`updated_at = now()` commits after later ones have been read, or an id taken from a sequence before another's.
`safety_lag_s` leaves rows newer than `now() - safety_lag_s` to a later poll (for a timestamp watermark): set it
above the longest a writing transaction stays open. For an id watermark, have one writer, or use a timestamp.

Values in the position are tagged JSON (`{"timestamptz": "2020-06-25T10:00:00+00:00"}`, `{"int": 5}`) so they are
sent back to PostgreSQL as the types they were read as.
"""

from __future__ import annotations

import datetime as dt
import decimal
import json
import re
import uuid
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

from broker.errors import ConfigError
from connectors.sources.base import Position, Reject, SourceBatch
from connectors.sources.coercion import CoercionError, Mapper

SUBQUERY = "accord_source"
_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_$]*$")


class SourceDatabase(Protocol):
    """One PostgreSQL database (adapter: broker/adapters/postgres.py)."""

    def rows(self, sql: str, params: Sequence[Any] = ()) -> tuple[list[str], list[tuple[Any, ...]]]:
        """The column names and rows of one statement, run in a transaction of its own."""


def ident(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


def relation(table: str | None, query: str | None) -> str:
    """The FROM clause: a table (`name` or `schema.name`, each part quoted) or the query as a subquery."""
    if query is not None:
        text = query.strip().rstrip(";")
        if not re.match(r"(?is)^\s*(select|with|values|table)\b", text):
            raise ConfigError("postgres.query must be one SELECT (or WITH ... SELECT) statement")
        return f"({text}) AS {SUBQUERY}"
    if table is None:
        raise ConfigError("give postgres.table or postgres.query")
    parts = table.split(".")
    if not 1 <= len(parts) <= 2 or not all(_NAME.match(p) for p in parts):
        raise ConfigError(f"postgres.table {table!r} is not a table name (name or schema.name; quote nothing)")
    return ".".join(ident(p) for p in parts)


@dataclass(frozen=True)
class Keyset:
    """The order rows are read in: the watermark column then the tie-breakers."""

    watermark: str
    tiebreak: tuple[str, ...] = ()

    @property
    def columns(self) -> tuple[str, ...]:
        return (self.watermark, *self.tiebreak)

    def select(self, source: str, after: bool, lag_s: float, limit: int) -> str:
        cols = ", ".join(ident(c) for c in self.columns)
        where = [f"{ident(self.watermark)} IS NOT NULL"]
        if after:
            where.append(f"({cols}) > ({', '.join(['%s'] * len(self.columns))})" if self.tiebreak
                         else f"{ident(self.watermark)} > %s")
        if lag_s > 0:
            where.append(f"{ident(self.watermark)} <= now() - make_interval(secs => {float(lag_s)!r})")
        return (f"SELECT * FROM {source} WHERE {' AND '.join(where)} ORDER BY {cols} LIMIT {int(limit)}")


_TAGS: dict[str, Any] = {
    "timestamptz": dt.datetime.fromisoformat, "timestamp": dt.datetime.fromisoformat, "date": dt.date.fromisoformat,
    "time": dt.time.fromisoformat, "int": int, "float": float, "decimal": decimal.Decimal, "text": str,
    "uuid": uuid.UUID, "bool": bool}


def tagged(value: Any) -> dict[str, Any]:
    """A database value as JSON that says its type (so that it goes back to PostgreSQL as that type)."""
    if isinstance(value, dt.datetime):
        return {"timestamptz" if value.tzinfo else "timestamp": value.isoformat()}
    if isinstance(value, dt.date):
        return {"date": value.isoformat()}
    if isinstance(value, dt.time):
        return {"time": value.isoformat()}
    if isinstance(value, bool):
        return {"bool": value}
    if isinstance(value, int):
        return {"int": value}
    if isinstance(value, float):
        return {"float": value}
    if isinstance(value, decimal.Decimal):
        return {"decimal": str(value)}
    if isinstance(value, uuid.UUID):
        return {"uuid": str(value)}
    if isinstance(value, str):
        return {"text": value}
    raise ConfigError(f"a watermark or tie-breaker value of type {type(value).__name__} cannot be kept in the "
                      "position: use a timestamp, date, number, text or uuid column")


def untagged(value: Mapping[str, Any]) -> Any:
    ((tag, raw),) = value.items()
    return _TAGS[tag](raw)


def shown(value: Any) -> str:
    return value.isoformat() if isinstance(value, dt.date | dt.time) else str(value)


def jsonable(value: Any) -> Any:
    """A database value as the JSON the API takes (a record's values after mapping)."""
    if isinstance(value, dt.datetime | dt.date | dt.time):
        return value.isoformat()
    if isinstance(value, decimal.Decimal):
        return int(value) if value == value.to_integral_value() else float(value)
    if isinstance(value, uuid.UUID):
        return str(value)
    if isinstance(value, bytes | memoryview):
        return bytes(value).hex()
    if isinstance(value, dict):
        return {str(k): jsonable(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [jsonable(v) for v in value]
    return value


class PostgresSource:
    """One table or query into one stream, in keyset batches of `max_rows`; `batches` ends when a batch comes back
    short (everything committed, older than the safety lag, is read)."""

    def __init__(self, database: SourceDatabase, source: str, keyset: Keyset, mapper: Mapper, max_rows: int = 2000,
                 safety_lag_s: float = 0.0, label: str = "") -> None:
        self.database, self.source, self.keyset, self.mapper = database, source, keyset, mapper
        self.max_rows, self.safety_lag_s, self.label = max_rows, safety_lag_s, label or source

    def batches(self, after: Position | None) -> Iterator[SourceBatch]:
        while True:
            params = [] if after is None else [untagged(v) for v in after["key"]]
            sql = self.keyset.select(self.source, after is not None, self.safety_lag_s, self.max_rows)
            names, rows = self.database.rows(sql, params)
            if not rows:
                return
            missing = [c for c in self.keyset.columns if c not in names]
            if missing:
                raise ConfigError(f"{self.label} has no column {', '.join(missing)} (its columns: "
                                  f"{', '.join(names)})")
            batch = self._batch(after, names, rows)
            yield batch
            if len(rows) < self.max_rows:
                return
            after = batch.end

    def _batch(self, after: Position | None, names: list[str], rows: list[tuple[Any, ...]]) -> SourceBatch:
        places = [names.index(c) for c in self.keyset.columns]
        records, wheres, rejects = [], [], []
        for values in rows:
            row = dict(zip(names, values, strict=True))
            where = f"{self.label} " + ", ".join(f"{c}={shown(values[i])}" for c, i in
                                                 zip(self.keyset.columns, places, strict=True))
            try:
                records.append({k: jsonable(v) for k, v in self.mapper.record(row).items()})
                wheres.append(where)
            except CoercionError as exc:
                rejects.append(Reject(where, str(exc), json.loads(json.dumps(jsonable(row), default=str))))
        end = {"key": [tagged(rows[-1][i]) for i in places]}
        return SourceBatch(records, wheres, rejects, after, end, len(rows), label=self.label)
