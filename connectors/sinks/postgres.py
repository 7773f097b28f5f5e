"""The PostgreSQL sink: one table per delivery topic, typed columns from the projected Avro schema, a primary key
from the stream's key fields, upserts, and the consumed position in `accord_positions` (per table, topic and
partition) in the same transaction.

SQL is built here from quoted identifiers and `%s` parameters; the Database port (psycopg in broker/adapters) runs
it. A later schema's new field adds a column; a field a later plan drops keeps its column, made nullable.

A record that cannot have a row (a later plan dropped a key field, or the key is null) is not a reason to stop the
whole delivery: it goes, whole, into `accord_rejected` with the reason, in the same transaction as the rows and the
position, so nothing is lost or skipped silently and `accord connect status` counts it.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

from broker.errors import ConfigError
from broker.services.serde import SchemaRegistry
from connectors.sinks.base import Decoded, DeliverySource, Sink

SOURCE_COLUMN = "_accord_source"
POSITIONS_TABLE = "accord_positions"
REJECTED_TABLE = "accord_rejected"
Statement = tuple[str, Sequence[Sequence[Any]]]
_PRIMITIVES = {"string": "text", "int": "bigint", "long": "bigint", "float": "real", "double": "double precision",
               "boolean": "boolean", "bytes": "bytea", "enum": "text", "fixed": "bytea"}
_LOGICAL = {"date": "date", "timestamp-millis": "timestamptz", "timestamp-micros": "timestamptz",
            "local-timestamp-millis": "timestamp", "local-timestamp-micros": "timestamp",
            "time-millis": "time", "time-micros": "time", "uuid": "uuid"}
_JSON = "jsonb"


class Database(Protocol):
    """One PostgreSQL database."""

    def query(self, sql: str, params: Sequence[Any] = ()) -> list[tuple[Any, ...]]:
        """The rows of one statement, run in a transaction of its own."""

    def apply(self, statements: Sequence[Statement]) -> None:
        """Each statement once per parameter row, all in one transaction: committed together or not at all."""


@dataclass(frozen=True)
class Column:
    name: str
    sql_type: str
    nullable: bool

    def definition(self) -> str:
        return f"{ident(self.name)} {self.sql_type}{'' if self.nullable else ' NOT NULL'}"


def ident(name: str) -> str:
    """A quoted SQL identifier (any name a schema or a config can hold is safe here)."""
    return '"' + name.replace('"', '""') + '"'


def default_table(stream: str) -> str:
    """`ukhsa.positive-tests` -> `ukhsa_positive_tests`, within PostgreSQL's 63-byte names."""
    return re.sub(r"[^a-z0-9_]", "_", stream.lower())[:63]


def sql_type(avro: Any) -> tuple[str, bool]:
    """(PostgreSQL type, nullable) of an Avro field type; structures and other unions are kept as jsonb."""
    if isinstance(avro, list):
        branches = [b for b in avro if b != "null"]
        nullable = len(branches) < len(avro)
        if len(branches) == 1:
            return sql_type(branches[0])[0], nullable
        return _JSON, nullable
    if isinstance(avro, dict):
        logical = _LOGICAL.get(str(avro.get("logicalType")))
        if logical is not None:
            return logical, False
        if avro.get("logicalType") == "decimal":
            return f"numeric({int(avro['precision'])}, {int(avro.get('scale', 0))})", False
        kind = avro.get("type")
        return (_PRIMITIVES[kind], False) if isinstance(kind, str) and kind in _PRIMITIVES else (_JSON, False)
    return _PRIMITIVES.get(str(avro), _JSON), avro == "null"


def columns(schema: Mapping[str, Any]) -> list[Column]:
    """The columns of an Avro record schema, in its field order."""
    return [Column(f["name"], *sql_type(f["type"])) for f in schema.get("fields", [])]


def key_fields(schema: Mapping[str, Any], configured: Sequence[str]) -> list[str]:
    """The primary key: the configured fields, else the schema's `accord.key`, else the record's source (the
    ingest topic/partition/offset it was delivered from, unique per published record)."""
    chosen = list(configured) or list(schema.get("accord.key", []))
    if not chosen:
        return [SOURCE_COLUMN]
    by_name = {c.name: c for c in columns(schema)}
    for name in chosen:
        if name not in by_name:
            raise ConfigError(f"key field {name!r} is not in the delivered schema {schema.get('name')!r}; its "
                              f"fields: {', '.join(by_name)}")
        if by_name[name].nullable:
            raise ConfigError(f"key field {name!r} may be null in the delivered schema: a primary key may not")
    return chosen


def sql_value(value: Any, column: Column) -> Any:
    """A decoded Avro value as psycopg sends it: structures as JSON text (cast to jsonb in the statement)."""
    if column.sql_type == _JSON and value is not None:
        return json.dumps(value, default=str)
    return value


def create_statements(table: str, cols: Sequence[Column], key: Sequence[str]) -> list[str]:
    body = ", ".join([*(c.definition() for c in cols), f"{ident(SOURCE_COLUMN)} text NOT NULL",
                      f"PRIMARY KEY ({', '.join(map(ident, key))})"])
    return [f"CREATE TABLE IF NOT EXISTS {ident(table)} ({body})",
            # Keyed by table too: a second table filled from the same topic (a renamed one, a copy) starts from
            # its own position, not from where the first one is.
            f"CREATE TABLE IF NOT EXISTS {POSITIONS_TABLE} (table_name text NOT NULL, topic text NOT NULL, "
            "partition integer NOT NULL, next_offset bigint NOT NULL, PRIMARY KEY (table_name, topic, partition))"]


REJECTED_CREATE = (f"CREATE TABLE IF NOT EXISTS {REJECTED_TABLE} (table_name text NOT NULL, topic text NOT NULL, "
                   "partition integer NOT NULL, \"offset\" bigint NOT NULL, source text NOT NULL, "
                   "reason text NOT NULL, record jsonb NOT NULL, rejected_at timestamptz NOT NULL DEFAULT now(), "
                   "PRIMARY KEY (table_name, topic, partition, \"offset\"))")


def reject() -> str:
    return (f"INSERT INTO {REJECTED_TABLE} (table_name, topic, partition, \"offset\", source, reason, record) "
            "VALUES (%s, %s, %s, %s, %s, %s, %s::jsonb) ON CONFLICT DO NOTHING")


def unkeyable(schema: Mapping[str, Any], value: Mapping[str, Any], key: Sequence[str]) -> str | None:
    """Why a record cannot have a row keyed by `key`, or None when it can."""
    fields = {f["name"] for f in schema.get("fields", [])}
    missing = [k for k in key if k != SOURCE_COLUMN and k not in fields]
    if missing:
        return (f"the delivered schema {schema.get('name')!r} has no key field {', '.join(missing)} "
                "(a later plan dropped it): the row cannot be keyed")
    nulls = [k for k in key if k != SOURCE_COLUMN and value.get(k) is None]
    if nulls:
        return f"key field {', '.join(nulls)} is null"
    return None


def upsert(table: str, cols: Sequence[Column], key: Sequence[str]) -> str:
    names = [c.name for c in cols] + [SOURCE_COLUMN]
    values = ", ".join("%s::jsonb" if c.sql_type == _JSON else "%s" for c in cols) + ", %s"
    updates = [n for n in names if n not in key]
    action = ("DO UPDATE SET " + ", ".join(f"{ident(n)} = EXCLUDED.{ident(n)}" for n in updates)
              if updates else "DO NOTHING")
    return (f"INSERT INTO {ident(table)} ({', '.join(map(ident, names))}) VALUES ({values}) "
            f"ON CONFLICT ({', '.join(map(ident, key))}) {action}")


def save_positions() -> str:
    return (f"INSERT INTO {POSITIONS_TABLE} (table_name, topic, partition, next_offset) VALUES (%s, %s, %s, %s) "
            "ON CONFLICT (table_name, topic, partition) DO UPDATE SET next_offset = EXCLUDED.next_offset")


class PostgresSink(Sink):
    """One delivery topic into one table."""

    def __init__(self, source: DeliverySource, registry: SchemaRegistry, database: Database, table: str,
                 key: Sequence[str] = (), on_warning: Callable[[str], None] = lambda message: None,
                 **options: Any) -> None:
        super().__init__(source, registry, **options)
        self.database, self.table, self._configured_key = database, table, tuple(key)
        self._key: list[str] | None = None
        self._existing: dict[str, bool] | None = None  # column -> nullable, as the table has them
        self._on_warning = on_warning

    def stored_positions(self) -> dict[int, int]:
        if not self._table_exists(POSITIONS_TABLE):
            return {}
        rows = self.database.query(f"SELECT partition, next_offset FROM {POSITIONS_TABLE} WHERE table_name = %s "
                                   "AND topic = %s", (self.table, self.topic))
        return {int(p): int(n) for p, n in rows}

    def store(self, records: list[Decoded], positions: Mapping[int, int]) -> None:
        statements: list[Statement] = []
        rejected: list[list[Any]] = []
        for schema_id in dict.fromkeys(r.schema_id for r in records):
            group = [r for r in records if r.schema_id == schema_id]
            key = self._key or list(self._configured_key) or list(group[0].schema.get("accord.key", [])) or [
                SOURCE_COLUMN]
            keyed = []
            for r in group:
                reason = unkeyable(r.schema, r.value, key)
                if reason is None:
                    keyed.append(r)
                else:
                    rejected.append([self.table, self.topic, r.partition, r.offset, r.source, reason,
                                     json.dumps(r.value, default=str)])
            if not keyed:
                continue
            cols = columns(group[0].schema)
            statements += self._evolve(group[0].schema, cols)
            statements.append((upsert(self.table, cols, self._key or key),
                               [[*(sql_value(r.value.get(c.name), c) for c in cols), r.source] for r in keyed]))
        if rejected:
            statements += [(REJECTED_CREATE, [()]), (reject(), rejected)]
        statements.append((save_positions(), [(self.table, self.topic, p, n) for p, n in sorted(positions.items())]))
        try:
            self.database.apply(statements)
        except BaseException:
            # The transaction rolled back any CREATE or ALTER with it: read the table afresh before the retry.
            self._existing = None
            raise
        if rejected:
            self.rejected += len(rejected)
            self._on_warning(f"{len(rejected)} record(s) of {self.topic} kept in {REJECTED_TABLE}, not in "
                             f"{self.table}: {rejected[0][5]}")

    def rejected_count(self) -> int:
        """How many of this table's records are kept in `accord_rejected` instead of the table."""
        if not self._table_exists(REJECTED_TABLE):
            return 0
        return int(self.database.query(f"SELECT count(*) FROM {REJECTED_TABLE} WHERE table_name = %s AND topic = %s",
                                       (self.table, self.topic))[0][0])

    def _evolve(self, schema: Mapping[str, Any], cols: list[Column]) -> list[Statement]:
        """Statements that make the table fit `schema`: created, new columns added, dropped fields nullable."""
        if self._key is None:
            self._key = key_fields(schema, self._configured_key)
        if self._existing is None:
            self._existing = self._columns()
        out: list[Statement] = []
        if not self._existing:
            out = [(s, [()]) for s in create_statements(self.table, cols, self._key)]
            self._existing = {c.name: c.nullable for c in cols} | {SOURCE_COLUMN: False}
            return out
        names = {c.name for c in cols}
        for c in cols:
            if c.name not in self._existing:
                # Rows stored before this field existed have no value for it: the new column allows NULL.
                out.append((f"ALTER TABLE {ident(self.table)} ADD COLUMN IF NOT EXISTS {ident(c.name)} "
                            f"{c.sql_type}", [()]))
                self._existing[c.name] = True
        for name, nullable in list(self._existing.items()):
            if name not in names and name != SOURCE_COLUMN and not nullable and name not in self._key:
                out.append((f"ALTER TABLE {ident(self.table)} ALTER COLUMN {ident(name)} DROP NOT NULL", [()]))
                self._existing[name] = True
        return out

    def _table_exists(self, table: str) -> bool:
        return bool(self.database.query("SELECT to_regclass(%s) IS NOT NULL", (ident(table),))[0][0])

    def _columns(self) -> dict[str, bool]:
        rows = self.database.query("SELECT column_name, is_nullable FROM information_schema.columns "
                                   "WHERE table_schema = current_schema() AND table_name = %s", (self.table,))
        return {str(name): nullable == "YES" for name, nullable in rows}
