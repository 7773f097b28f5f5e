"""The file sink's two formats: CSV (RFC 4180, a header row, dates as ISO 8601) and Parquet (typed columns from the
projected Avro schema, written with pyarrow). Each writes rows into a binary file it is handed and never closes."""

from __future__ import annotations

import contextlib
import csv
import io
import json
from abc import ABC, abstractmethod
from collections.abc import Mapping, Sequence
from typing import Any, BinaryIO, Literal

import pyarrow as pa
import pyarrow.parquet as pq

from broker.domain.json_avro import csv_cell, to_json

Format = Literal["csv", "parquet"]
SOURCE_COLUMN = "_accord_source"  # the ingest topic/partition/offset a row was delivered from, as in PostgreSQL
ROW_GROUP = 10_000  # Parquet rows buffered before a row group is written: a trickle of records is not 1 row/group
_PRIMITIVES: dict[str, Any] = {"string": pa.string(), "int": pa.int32(), "long": pa.int64(), "float": pa.float32(),
                               "double": pa.float64(), "boolean": pa.bool_(), "bytes": pa.binary(),
                               "enum": pa.string(), "fixed": pa.binary()}
_LOGICAL: dict[str, Any] = {"date": pa.date32(), "timestamp-millis": pa.timestamp("ms", tz="UTC"),
                            "timestamp-micros": pa.timestamp("us", tz="UTC"),
                            "local-timestamp-millis": pa.timestamp("ms"), "local-timestamp-micros": pa.timestamp("us"),
                            "time-millis": pa.time32("ms"), "time-micros": pa.time64("us"), "uuid": pa.string()}
_TEXT = pa.string()  # a structure or a union of several types: its JSON text


def layout(schema: Mapping[str, Any]) -> tuple[tuple[str, str], ...]:
    """What a file's columns depend on: each field's name and Avro type. A record whose layout differs from the open
    file's (a later plan added or dropped a field) starts a new file; a new schema id alone does not."""
    return tuple((f["name"], json.dumps(f["type"], sort_keys=True)) for f in schema.get("fields", []))


def arrow_type(avro: Any) -> tuple[Any, bool, bool]:
    """(Arrow type, nullable, kept as JSON text) of an Avro field type: structures and unions of several types are
    their JSON text."""
    if isinstance(avro, list):
        branches = [b for b in avro if b != "null"]
        nullable = len(branches) < len(avro)
        kind, _, as_json = arrow_type(branches[0]) if len(branches) == 1 else (_TEXT, False, True)
        return kind, nullable, as_json
    if isinstance(avro, dict):
        logical = avro.get("logicalType")
        if logical in _LOGICAL:
            return _LOGICAL[logical], False, False
        if logical == "decimal":
            return pa.decimal128(int(avro["precision"]), int(avro.get("scale", 0))), False, False
        kind = avro.get("type")
        if isinstance(kind, str) and kind in _PRIMITIVES:
            return _PRIMITIVES[kind], False, False
        return _TEXT, False, True
    if str(avro) in _PRIMITIVES:
        return _PRIMITIVES[str(avro)], False, False
    return _TEXT, avro == "null", True


def arrow_schema(schema: Mapping[str, Any]) -> Any:
    fields = [pa.field(f["name"], *arrow_type(f["type"])[:2]) for f in schema.get("fields", [])]
    return pa.schema([*fields, pa.field(SOURCE_COLUMN, pa.string(), False)])


class RowWriter(ABC):
    """Rows of one layout into one file: `write` any number of times, then `finish` once."""

    def __init__(self, file: BinaryIO, schema: Mapping[str, Any]) -> None:
        self.file = file
        self.names = [str(f["name"]) for f in schema.get("fields", [])]

    @abstractmethod
    def write(self, rows: Sequence[tuple[Mapping[str, Any], str]]) -> None:
        """Each (decoded value, accord.source) as one row."""

    @abstractmethod
    def finish(self) -> None:
        """Everything written into the file (a Parquet footer too); the file itself stays open."""

    @abstractmethod
    def abandon(self) -> None:
        """Give the file up (it will be removed): nothing is to be written into it any more."""


class CsvWriter(RowWriter):
    """RFC 4180: a header row, CRLF line ends, fields quoted when they need it; cells as the pull API's CSV has
    them (dates ISO 8601, empty for a null, formulas defused)."""

    def __init__(self, file: BinaryIO, schema: Mapping[str, Any]) -> None:
        super().__init__(file, schema)
        self._lines([[*self.names, SOURCE_COLUMN]])

    def write(self, rows: Sequence[tuple[Mapping[str, Any], str]]) -> None:
        self._lines([[*(csv_cell(value.get(n)) for n in self.names), source] for value, source in rows])

    def finish(self) -> None:
        self.file.flush()

    def abandon(self) -> None:
        pass  # nothing of a CSV file is held outside it

    def _lines(self, rows: list[list[Any]]) -> None:
        out = io.StringIO()
        csv.writer(out, lineterminator="\r\n").writerows(rows)
        self.file.write(out.getvalue().encode("utf-8"))


class ParquetWriter(RowWriter):
    """One Parquet file, typed from the Avro schema; rows go out in row groups of up to ROW_GROUP."""

    def __init__(self, file: BinaryIO, schema: Mapping[str, Any]) -> None:
        super().__init__(file, schema)
        self._schema = arrow_schema(schema)
        self._json = {f["name"] for f in schema.get("fields", []) if arrow_type(f["type"])[2]}
        self._writer = pq.ParquetWriter(file, self._schema)
        self._pending: list[dict[str, Any]] = []

    def write(self, rows: Sequence[tuple[Mapping[str, Any], str]]) -> None:
        self._pending += [{**{n: self._cell(n, value.get(n)) for n in self.names}, SOURCE_COLUMN: source}
                          for value, source in rows]
        if len(self._pending) >= ROW_GROUP:
            self._flush()

    def finish(self) -> None:
        self._flush()
        self._writer.close()  # writes the footer; a file object it was handed stays open
        self.file.flush()

    def abandon(self) -> None:
        # pyarrow's writer would otherwise write its footer when collected, into a file closed by then, and fail
        # outside any caller ("Exception ignored in __del__").
        with contextlib.suppress(Exception):
            self._writer.close()
        self._writer.is_open = False
        self._pending = []

    def _cell(self, name: str, value: Any) -> Any:
        if value is None:
            return None
        if name in self._json and not isinstance(value, str):  # a string (an enum named elsewhere) is text already
            return json.dumps(to_json(value), separators=(",", ":"))
        return str(value) if self._schema.field(name).type == _TEXT else value  # an enum symbol, a UUID

    def _flush(self) -> None:
        if self._pending:
            self._writer.write_table(pa.Table.from_pylist(self._pending, schema=self._schema))
            self._pending = []


def open_writer(kind: Format, file: BinaryIO, schema: Mapping[str, Any]) -> RowWriter:
    return CsvWriter(file, schema) if kind == "csv" else ParquetWriter(file, schema)
