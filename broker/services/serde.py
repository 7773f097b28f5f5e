"""Avro records to and from Confluent-framed bytes, with writer schemas kept in a SchemaRegistry."""

from __future__ import annotations

import io
import json
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from typing import Any, Literal, NamedTuple, Protocol

from fastavro import parse_schema, schemaless_reader, schemaless_writer
from fastavro.read import SchemaResolutionError
from fastavro.schema import SchemaParseException
from fastavro.types import Schema
from fastavro.validation import ValidationError, validate

from broker.domain.avro_writer import Unfit, compile_writer
from broker.domain.schemas import RegisteredSchema, canonical_text
from broker.domain.wire import HEADER_SIZE, frame, header_schema_id
from broker.errors import RegistryError, SerdeError

# What fastavro raises on bytes that do not decode; it has no error type of its own for that.
_DECODE_ERRORS = (EOFError, IndexError, KeyError, TypeError, ValueError, OverflowError)
_ENCODE_ERRORS = (TypeError, ValueError, KeyError, AttributeError, OverflowError)
# Confluent's error code for an unknown schema id; any other registry error is not the data's fault.
SCHEMA_NOT_FOUND = 40403
_CONVERTED_INTS = ("date", "time-millis")


class SchemaRegistry(Protocol):
    """Where Avro schemas are registered under subjects and looked up by global id (Confluent's REST API).

    Every method raises broker.errors.RegistryError carrying the registry's status and error code.
    """

    def register(self, subject: str, schema: str) -> int:
        """The global id of `schema` (Avro JSON text) under `subject`; registering it again returns the same id."""

    def schema_by_id(self, schema_id: int) -> str:
        """The Avro JSON text of the schema with this global id (404/40403 if none)."""

    def latest(self, subject: str) -> RegisteredSchema:
        """The newest version registered under `subject` (404/40401 if the subject is unknown)."""

    def set_compatibility(self, subject: str, mode: str) -> None:
        """Set the subject's compatibility mode (e.g. NONE), as PUT /config/{subject} does."""


@dataclass(frozen=True)
class SerializationContext:
    """Where the bytes go or come from: the topic, and whether they are the message key or value."""

    topic: str
    field: Literal["key", "value"] = "value"

    def __str__(self) -> str:
        return f"{self.field} on topic {self.topic!r}"


SubjectNameStrategy = Callable[[SerializationContext, str | None], str]


def topic_name_strategy(ctx: SerializationContext, record_name: str | None) -> str:
    """`<topic>-key` or `<topic>-value`, Confluent's default: one line of schema versions per topic and field."""
    return f"{ctx.topic}-{ctx.field}"


class AvroSerializer:
    """Encodes records with one writer schema, registering it under each subject once on first use.

    With `auto_register=False` the schema must already be the subject's latest version.
    """

    def __init__(self, registry: SchemaRegistry, schema: str,
                 subject_name_strategy: SubjectNameStrategy = topic_name_strategy, auto_register: bool = True) -> None:
        self._registry = registry
        self._schema = schema
        self._parsed = _parse(schema, "writer schema")
        self._compiled = compile_writer(self._parsed)
        self._name = _record_name(self._parsed)
        self._strategy = subject_name_strategy
        self._auto_register = auto_register
        self._ids: dict[str, int] = {}
        self._headers: dict[str, bytes] = {}

    def __call__(self, obj: Mapping[str, Any] | None, ctx: SerializationContext) -> bytes | None:
        if obj is None:
            return None
        body = self._body(obj, ctx)
        # Register only a schema that encoded a record: a misfit must not leave a version behind.
        return self._header(self._strategy(ctx, self._name)) + body

    def reframe(self, framed: bytes, ctx: SerializationContext) -> bytes:
        """`framed` (another serializer's record, of a schema that encodes alike: the same types and fields, names
        and docs aside) under this serializer's schema id: the body is not encoded again."""
        return self._header(self._strategy(ctx, self._name)) + memoryview(framed)[HEADER_SIZE:]

    def _header(self, subject: str) -> bytes:
        # The 5-byte frame header is the same for every record of a subject: build it once.
        header = self._headers.get(subject)
        if header is None:
            header = self._headers[subject] = frame(self._schema_id(subject), b"")
        return header

    def _body(self, obj: Mapping[str, Any], ctx: SerializationContext) -> bytes:
        """The Avro body: by the writer compiled from the schema, or by fastavro where that is not sure of a value."""
        if self._compiled is not None:
            try:
                return self._compiled(obj)
            except Unfit:
                pass
        buffer = io.BytesIO()
        try:
            schemaless_writer(buffer, self._parsed, obj)
        except _ENCODE_ERRORS as exc:
            where = _misfit_fields(obj, self._parsed)
            at = f" at field {where}" if where else ""
            raise SerdeError(f"{ctx}: record does not fit schema {self._name or self._schema[:80]}{at}: {exc}") from exc
        return buffer.getvalue()

    def _schema_id(self, subject: str) -> int:
        schema_id = self._ids.get(subject)
        if schema_id is None:
            schema_id = self._registered_id(subject)
            self._ids[subject] = schema_id
        return schema_id

    def _registered_id(self, subject: str) -> int:
        if self._auto_register:
            return self._registry.register(subject, self._schema)
        latest = self._registry.latest(subject)
        if canonical_text(latest.schema) != canonical_text(self._schema):
            raise SerdeError(f"subject {subject!r}: its latest version ({latest.version}, schema id "
                             f"{latest.schema_id}) is not this serializer's schema; register the schema first "
                             "or serialize with auto_register=True")
        return latest.schema_id


class AvroDeserializer:
    """Decodes framed records with the writer schema named in each header, resolved to `reader_schema` if given."""

    def __init__(self, registry: SchemaRegistry, reader_schema: str | None = None) -> None:
        self._registry = registry
        self._reader = None if reader_schema is None else _parse(reader_schema, "reader schema")
        self._writers: dict[int, _Writer] = {}

    def __call__(self, data: bytes | None, ctx: SerializationContext) -> dict[str, Any] | None:
        if data is None:
            return None
        try:
            schema_id = header_schema_id(data)
        except SerdeError as exc:
            raise SerdeError(f"{ctx}: {exc}") from exc
        writer = self._writer(schema_id, ctx)
        record = self._decode(data, writer, schema_id, ctx)
        if not isinstance(record, dict):
            raise SerdeError(f"{ctx}: schema id {schema_id} is not a record schema (decoded a "
                             f"{type(record).__name__}); AvroDeserializer reads records only")
        # fastavro reads an Avro int as a long: a value beyond 32 bits would pass on to every reader downstream.
        if writer.has_int and (where := _misfit_fields(record, writer.schema)):
            raise SerdeError(f"{ctx}: the record written with schema id {schema_id} holds a value its schema does "
                             f"not allow at field {where} (an int beyond 32 bits); the producer's encoder is broken")
        return record

    def _writer(self, schema_id: int, ctx: SerializationContext) -> _Writer:
        writer = self._writers.get(schema_id)
        if writer is None:
            try:
                text = self._registry.schema_by_id(schema_id)
            except RegistryError as exc:
                if exc.error_code != SCHEMA_NOT_FOUND:
                    raise
                raise SerdeError(f"{ctx}: schema id {schema_id} is not in the schema registry (written against "
                                 "another registry, or its schema was deleted)") from exc
            writer = _writer_of(_parse(text, f"schema id {schema_id}"))
            # fastavro reads without resolution when the two schemas are equal, but finds that out by comparing
            # them on every record (a few microseconds for a schema like T1's): compared here once instead.
            resolve = None if self._reader is None or writer.schema == self._reader else self._reader
            writer = self._writers[schema_id] = writer._replace(reader=resolve)
        if writer.empty_items is not None:
            raise SerdeError(f"{ctx}: schema id {schema_id} has an array of {writer.empty_items} items, which take no "
                             "bytes, so a few bytes could claim billions of them; Accord does not read it: give the "
                             "items a type with content")
        return writer

    def _decode(self, data: bytes, writer: _Writer, schema_id: int, ctx: SerializationContext) -> Any:
        # Read the body in place after the header rather than copying it out of the message.
        buffer = io.BytesIO(data)
        buffer.seek(HEADER_SIZE)
        body_size = len(data) - HEADER_SIZE
        try:
            record = schemaless_reader(buffer, writer.schema, writer.reader)
        except SchemaResolutionError as exc:
            raise SerdeError(f"{ctx}: data written with schema id {schema_id} cannot be read with the reader "
                             f"schema: {exc}") from exc
        except _DECODE_ERRORS as exc:
            raise SerdeError(f"{ctx}: the {body_size}-byte body does not decode with schema id {schema_id} "
                             f"({type(exc).__name__}: {exc}); it is truncated or was written with another "
                             "schema") from exc
        left = len(data) - buffer.tell()
        if left:
            raise SerdeError(f"{ctx}: {left} bytes left over after the record written with schema id {schema_id}; "
                             "it was written with another schema or the bytes were joined to something else")
        return record


def _parse(schema: str, what: str) -> Schema:
    try:
        return parse_schema(json.loads(schema))
    except json.JSONDecodeError as exc:
        raise SerdeError(f"{what} is not JSON: {exc}") from exc
    except (SchemaParseException, ValueError, TypeError, KeyError) as exc:
        raise SerdeError(f"{what} is not a valid Avro schema: {exc}") from exc


class _Writer(NamedTuple):
    """A writer schema with what decoding must guard against: ints to range-check, arrays of empty items; and the
    reader schema its records are resolved to (None: read as written)."""

    schema: Schema
    has_int: bool
    empty_items: str | None
    reader: Schema | None = None


def _writer_of(parsed: Schema) -> _Writer:
    """What a writer schema needs guarding against, found once when it is first fetched."""
    named: Mapping[str, Any] = parsed.get("__named_schemas", {}) if isinstance(parsed, dict) else {}
    kinds = list(_kinds(parsed, named))
    # A date or time-millis int out of range fails to convert, so only plain ints need the check.
    has_int = any(kind == "int" or (isinstance(kind, dict) and kind.get("type") == "int"
                                    and kind.get("logicalType") not in _CONVERTED_INTS) for kind in kinds)
    empty = next((kind["items"] for kind in kinds if isinstance(kind, dict) and kind.get("type") == "array"
                  and _takes_no_bytes(kind["items"], named, frozenset())), None)
    if isinstance(empty, dict):
        empty = str(empty.get("name", empty.get("type")))
    return _Writer(parsed, has_int, empty)


def _kinds(parsed: Schema, named: Mapping[str, Any]) -> Iterator[Any]:
    """Every type in a parsed schema, each named type once (fastavro names a type in full where first met)."""
    stack, seen = [parsed], set()
    while stack:
        kind = stack.pop()
        kind = named.get(kind, kind) if isinstance(kind, str) else kind
        if isinstance(kind, list):
            stack.extend(kind)
            continue
        if isinstance(kind, dict):
            name = kind.get("name")
            if name is not None and name in seen:
                continue
            seen.add(name)
            stack.extend([field["type"] for field in kind.get("fields", [])] + [
                kind[key] for key in ("items", "values") if key in kind])
        yield kind


def _takes_no_bytes(kind: Any, named: Mapping[str, Any], seen: frozenset[str]) -> bool:
    """True for null, an empty fixed and a record of such fields: values that are encoded as nothing."""
    kind = named.get(kind, kind) if isinstance(kind, str) else kind
    if not isinstance(kind, dict):
        return isinstance(kind, str) and kind == "null"
    if kind.get("type") == "record":
        # A record met again inside itself is not empty: only a union or array can hold it, and those take bytes.
        return kind["name"] not in seen and all(
            _takes_no_bytes(field["type"], named, seen | {kind["name"]}) for field in kind["fields"])
    return kind.get("type") == "null" or (kind.get("type") == "fixed" and kind.get("size") == 0)


def _record_name(parsed: Schema) -> str | None:
    """The full name of a record schema (what record-name subject strategies key on); None for other types."""
    if isinstance(parsed, dict) and parsed.get("type") == "record":
        return str(parsed["name"])
    return None


def _misfit_fields(obj: Any, parsed: Schema) -> str:
    """The fields fastavro's validator blames in a record that does not fit `parsed`, e.g. 'ns.Case.onset'."""
    try:
        validate(obj, parsed, raise_errors=True)
    except ValidationError as exc:
        return ", ".join(sorted({error.field for error in exc.errors if error.field}))
    except _ENCODE_ERRORS:
        pass
    return ""
