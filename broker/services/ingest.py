"""Validated ingest: good records to `ingest.<stream>`, bad ones to `quarantine.<stream>` with their reasons."""

from __future__ import annotations

import datetime as dt
import json
import logging
import threading
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any, Literal, Protocol

from fastavro import parse_schema
from fastavro.validation import ValidationError, validate

from broker.domain.geography import LaTable
from broker.domain.json_avro import from_json
from broker.domain.messages import Outgoing
from broker.domain.partitions import stream_key
from broker.domain.topics import ingest_topic, quarantine_topic
from broker.domain.validation import (
    DEFAULT_MAX_LENGTH,
    RecordRules,
    Violation,
    field_tags,
    utf8_safe,
    value_excerpt,
)
from broker.errors import IdempotencyConflict, NotFoundError, SerdeError
from broker.services.schema_fit import FitGlance
from broker.services.serde import AvroDeserializer, AvroSerializer, SchemaRegistry, SerializationContext

SCHEMA_FIT = "schema-fit"
AVRO_DECODE = "avro-decode"
TOO_MANY = "too-many-problems"
MAX_REASONS = 20                 # reasons kept per quarantined record; the last says how many more there were
KEPT_MAX_CHARACTERS = 65_536     # a quarantined record larger than this is kept as an excerpt
EXCERPT_CHARACTERS = 4_000
REQUEST_KEY_HEADER = "accord.request-key"  # on each record a keyed request published: the publisher's key

log = logging.getLogger(__name__)


class RecordLog(Protocol):
    def publish(self, topic: str, value: bytes, key: bytes | None = None,
                headers: Sequence[tuple[str, bytes]] = ()) -> tuple[int, int]: ...

    def publish_all(self, records: Sequence[Outgoing]) -> list[tuple[int, int]]:
        """Produce as a batch, wait once; each record's (partition, offset) in order."""


class RequestLedger(Protocol):
    """Publishes a keyed request's records at most once, across retries, restarts and API instances."""

    def publish_once(self, key: str, digest: str, records: Sequence[Outgoing],
                     answer: Callable[[list[tuple[int, int]]], dict[str, Any]]) -> tuple[str, dict[str, Any], bool]:
        """The (digest, answer) stored for `key` and False; if none, publish `records`, store `answer(their
        positions)` with `digest` in the same transaction, and True. `answer` may run for attempts that are then
        rolled back (another instance won the key): only the committed one counts."""



def load_stream_schemas(directory: Path) -> dict[str, dict[str, Any]]:
    """Every `.avsc` that names its stream (`accord.stream`), by stream id."""
    found: dict[str, dict[str, Any]] = {}
    for path in sorted(directory.glob("*.avsc")):
        schema = json.loads(path.read_text())
        if isinstance(schema, dict) and "accord.stream" in schema:
            found[str(schema["accord.stream"])] = schema
    return found


@dataclass(frozen=True)
class Outcome:
    """What happened to one published record: where it went and, if quarantined, why."""

    index: int
    status: Literal["accepted", "quarantined"]
    topic: str
    partition: int
    offset: int
    reasons: tuple[Violation, ...] = ()

    def as_json(self) -> dict[str, Any]:
        # Spelled out: dataclasses.asdict, which copies deeply, took a tenth of the API's time on a large request.
        return {"index": self.index, "status": self.status, "topic": self.topic, "partition": self.partition,
                "offset": self.offset, "reasons": [_violation_json(r) for r in self.reasons]}


def _violation_json(violation: Violation) -> dict[str, str]:
    return {"field": violation.field, "rule": violation.rule, "message": violation.message,
            "value_excerpt": violation.value_excerpt}


class Ingest:
    """Publishes records of known streams; nothing is dropped: each record is accepted or quarantined."""

    def __init__(self, log: RecordLog, serializer_registry: SchemaRegistry, schemas: Mapping[str, dict[str, Any]],
                 la_table: LaTable, today: Callable[[], dt.date],
                 count: Callable[[str, str, int], None] = lambda stream, outcome, records: None,
                 requests: RequestLedger | None = None,
                 discover: Callable[[str], Mapping[str, Any] | None] | None = None) -> None:
        """`discover(stream)`: the schema of a stream not in `schemas` (one a catalog applied since named, with its
        topics made), or None to refuse it as unknown (services/stream_schemas.py)."""
        self._log = log
        self._requests = requests
        self._registry = serializer_registry
        self._schemas: dict[str, dict[str, Any]] = {}
        self._parsed: dict[str, Any] = {}
        self._serializers: dict[str, AvroSerializer] = {}
        self._rules: dict[str, RecordRules] = {}
        self._glances: dict[str, FitGlance] = {}
        for stream, schema in schemas.items():
            self._add(stream, schema)
        self._discover = discover
        self._discovering = threading.Lock()
        # One deserializer for all screening, so each writer schema is fetched from the registry once.
        self._deserializer = AvroDeserializer(serializer_registry)
        self._la = la_table
        self._today = today
        self._count = count

    def _add(self, stream: str, schema: Mapping[str, Any]) -> None:
        # The schema last: a stream is known once its parsed schema and serializer are in place.
        self._parsed[stream] = parse_schema(json.loads(json.dumps(schema)))
        self._serializers[stream] = AvroSerializer(self._registry, json.dumps(schema))
        self._rules[stream] = RecordRules.of(schema)
        self._glances[stream] = FitGlance(schema)
        self._schemas[stream] = dict(schema)

    def schema(self, stream: str) -> dict[str, Any]:
        found = self._schemas.get(stream)
        if found is None and self._discover is not None:
            with self._discovering:  # one look-up at a time: a burst for a new stream asks the catalog once
                found = self._schemas.get(stream)
                if found is None and (schema := self._discover(stream)) is not None:
                    self._add(stream, schema)
                    found = self._schemas[stream]
        if found is None:
            known = ", ".join(sorted(self._schemas)) or "none"
            raise NotFoundError(f"unknown stream {stream!r}: no applied catalog names it (known streams: {known})")
        return found

    def violations(self, stream: str, record: Mapping[str, Any]) -> list[Violation]:
        """Schema fit first (a record that does not fit cannot be encoded), then the stream's field rules."""
        self.schema(stream)
        return self._misfits(stream, record) or self._rules[stream].violations(record, self._today(), self._la)

    def _misfits(self, stream: str, record: Mapping[str, Any]) -> list[Violation]:
        """Each field of `record` that does not fit the stream's Avro schema, with what it should be."""
        errors = _schema_errors(self._parsed[stream], record)
        return [Violation(field, SCHEMA_FIT, message, value_excerpt(record.get(field), masked=masked))
                for field, message, masked in _fields_of(errors, self._schemas[stream])]  if errors else []

    def _encoded(self, stream: str, record: Mapping[str, Any], today: dt.date) -> tuple[bytes, list[Violation]]:
        """The record's Avro bytes, or its reasons: what `violations` finds, with fastavro's validation run only
        where the writer would not refuse a misfit itself (schema_fit.FitGlance)."""
        glance = self._glances[stream].surely_fits(record)
        problems = [] if glance else self._misfits(stream, record)
        if not problems:
            problems = self._rules[stream].violations(record, today, self._la)
            if problems and glance:  # a misfit is the first thing to fix, as `violations` says
                problems = self._misfits(stream, record) or problems
        if problems:
            return b"", problems
        try:
            payload = self._serializers[stream](record, SerializationContext(ingest_topic(stream)))
        except SerdeError:
            # The writer refused a value the glance let through: fastavro's validation says which and why.
            return b"", self._misfits(stream, record) or [Violation("", SCHEMA_FIT, "the record does not fit the "
                                                                                    "schema", "")]
        assert payload is not None
        return payload, []

    def publish(self, stream: str, records: Sequence[Any], source: str = "http") -> list[Outcome]:
        """Each record accepted onto `ingest.<stream>` or quarantined with its reasons, produced as one batch."""
        prepared = self._prepare(stream, records, source)
        positions = self._log.publish_all([outgoing for _, outgoing, _ in prepared])
        outcomes = _outcomes(prepared, positions)
        self._count_all(stream, outcomes)
        return outcomes

    def publish_once(self, stream: str, records: Sequence[Any], once: RequestKey,
                     source: str = "http") -> tuple[dict[str, Any], bool]:
        """`answer(outcomes)` of the first request made with `once.key`, and whether this call only replayed it.

        The first request's records are published with its answer in one transaction (RequestLedger); a retry
        publishes nothing and gets the same answer; the key with another body raises IdempotencyConflict.
        """
        if self._requests is None:
            raise IdempotencyConflict("this API was started without idempotent publishing; send no Idempotency-Key")
        header = ((REQUEST_KEY_HEADER, once.key.encode()),)
        prepared = [(index, replace(outgoing, headers=outgoing.headers + header), reasons)
                    for index, outgoing, reasons in self._prepare(stream, records, source)]
        made: list[Outcome] = []

        def first_answer(positions: list[tuple[int, int]]) -> dict[str, Any]:
            made[:] = _outcomes(prepared, positions)
            return answer(made)

        digest, answered, published = self._requests.publish_once(
            once.scoped(stream), once.digest, [outgoing for _, outgoing, _ in prepared], first_answer)
        if digest != once.digest:
            raise IdempotencyConflict(f"Idempotency-Key {once.key!r} was used for a different request body on "
                                      f"{stream}; nothing was published again: use a new key for a new request")
        if published:
            self._count_all(stream, made)
        return answered, not published

    def _prepare(self, stream: str, records: Sequence[Any],
                 source: str) -> list[tuple[int, Outgoing, tuple[Violation, ...]]]:
        """What each record becomes: its Avro bytes for the ingest topic, or its quarantine entry with reasons."""
        schema = self.schema(stream)
        topic, today = ingest_topic(stream), self._today()  # one day for the whole request: the clock read once
        prepared = []
        for index, raw in enumerate(records):
            record, problems = from_json(schema, raw) if isinstance(raw, Mapping) else ({}, [_not_object(raw)])
            payload = b""
            if not problems:
                payload, problems = self._encoded(stream, record, today)
            if problems:
                entry = {"source": {"kind": source, "index": index}, "record": kept_record(raw)}
                problems = _at_most(problems)
                prepared.append((index, self._quarantine_record(stream, problems, entry), tuple(problems)))
                continue
            prepared.append((index, Outgoing(topic, payload, stream_key(schema, record)), ()))
        return prepared

    def _count_all(self, stream: str, outcomes: Sequence[Outcome]) -> None:
        # Counted per request, not per record: a thousand increments of a labelled counter showed in the profile.
        quarantined = sum(outcome.status == "quarantined" for outcome in outcomes)
        for status, records in (("accepted", len(outcomes) - quarantined), ("quarantined", quarantined)):
            if records:
                self._count(stream, status, records)

    def screen(self, stream: str, value: bytes | None, partition: int, offset: int) -> Outcome:
        """Check a record already on `ingest.<stream>` (written by a Kafka client); quarantine it if bad."""
        try:
            record = self._deserializer(value, SerializationContext(ingest_topic(stream)))
            problems = self.violations(stream, record or {}) if record is not None else [
                Violation("", AVRO_DECODE, "the record has no value", "")]
        except SerdeError as exc:
            problems = [Violation("", AVRO_DECODE, str(exc), value_excerpt((value or b"")[:16].hex()))]
        if not problems:
            return Outcome(offset, "accepted", ingest_topic(stream), partition, offset)
        source = {"kind": "kafka", "topic": ingest_topic(stream), "partition": partition, "offset": offset}
        return self._quarantine(stream, offset, problems, {"source": source})

    def _quarantine(self, stream: str, index: int, problems: list[Violation], entry: dict[str, Any]) -> Outcome:
        partition, offset = self._log.publish(*_unpacked(self._quarantine_record(stream, problems, entry)))
        self._count(stream, "quarantined", 1)
        return Outcome(index, "quarantined", quarantine_topic(stream), partition, offset, tuple(problems))

    @staticmethod
    def _quarantine_record(stream: str, problems: list[Violation], entry: dict[str, Any]) -> Outgoing:
        body = {"stream": stream, **entry, "reasons": [asdict(p) for p in problems]}
        first = problems[0]
        headers = [("accord.quarantine.rule", first.rule.encode()), ("accord.quarantine.field", first.field.encode()),
                   ("accord.quarantine.reasons", str(len(problems)).encode())]
        if "offset" in entry["source"]:
            headers.append(("accord.quarantine.source-offset", str(entry["source"]["offset"]).encode()))
        return Outgoing(quarantine_topic(stream), json.dumps(body, default=str).encode(), None, tuple(headers))


@dataclass(frozen=True)
class RequestKey:
    """A publish request's Idempotency-Key, the publishing body it belongs to, and the digest of its body."""

    key: str
    publisher: str
    digest: str

    def scoped(self, stream: str) -> str:
        # Two publishers (or one publisher's two streams) may pick the same key without meeting.
        return json.dumps([stream, self.publisher, self.key])


def answer(outcomes: Sequence[Outcome]) -> dict[str, Any]:
    """The API's answer to a publish request: counts, and each record's outcome in order."""
    return {
        "accepted": sum(o.status == "accepted" for o in outcomes),
        "quarantined": sum(o.status == "quarantined" for o in outcomes),
        "outcomes": [o.as_json() for o in outcomes],
    }


def kept_record(raw: Any) -> Any:
    """The record as its quarantine entry keeps it: whole, but with any text over DEFAULT_MAX_LENGTH characters cut,
    and as a JSON excerpt if it is still larger than KEPT_MAX_CHARACTERS (a quarantine record must fit in Kafka)."""
    raw = _cut(raw)
    text = json.dumps(raw, default=str)
    if len(text) <= KEPT_MAX_CHARACTERS:
        return raw
    return {"excerpt": text[:EXCERPT_CHARACTERS], "characters": len(text),
            "note": "the record was too large to keep whole"}


def _cut(value: Any) -> Any:
    # Text is also made UTF-8-safe (a lone surrogate written as an escape): read back, the entry must still be
    # sendable as JSON by the quarantine endpoint and the console.
    if isinstance(value, str):
        if len(value) > DEFAULT_MAX_LENGTH:
            value = f"{value[:DEFAULT_MAX_LENGTH]}... ({len(value)} characters)"
        return utf8_safe(value)
    if isinstance(value, Mapping):
        return {_cut(str(k)): _cut(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_cut(v) for v in value]
    return value


def _at_most(problems: list[Violation]) -> list[Violation]:
    if len(problems) <= MAX_REASONS:
        return problems
    more = len(problems) - MAX_REASONS + 1
    return [*problems[:MAX_REASONS - 1], Violation("", TOO_MANY, f"and {more} more problems in this record", "")]


def _outcomes(prepared: Sequence[tuple[int, Outgoing, tuple[Violation, ...]]],
              positions: Sequence[tuple[int, int]]) -> list[Outcome]:
    return [Outcome(index, "quarantined" if reasons else "accepted", outgoing.topic, partition, offset, reasons)
            for (index, outgoing, reasons), (partition, offset) in zip(prepared, positions, strict=True)]


def _unpacked(outgoing: Outgoing) -> tuple[str, bytes, bytes | None, Sequence[tuple[str, bytes]]]:
    return outgoing.topic, outgoing.value, outgoing.key, outgoing.headers


def _not_object(raw: object) -> Violation:
    return Violation("", SCHEMA_FIT, "each record must be a JSON object", value_excerpt(raw))


def _schema_errors(parsed: Any, record: Mapping[str, Any]) -> list[str]:
    # Asked for its errors, fastavro builds one (serialising the schema) for every union branch a good value does
    # not take: five times slower on the usual record, so the errors are asked for only when there are some.
    if validate(dict(record), parsed, raise_errors=False):
        return []
    try:
        validate(dict(record), parsed, raise_errors=True)
    except ValidationError as exc:
        return [str(error) for error in exc.errors]
    return []


def _fields_of(errors: list[str], schema: Mapping[str, Any]) -> list[tuple[str, str, bool]]:
    tags = field_tags(schema)
    found = []
    for error in errors:
        # fastavro names the failing field as `<Record>.<field> is <value> of type ...`
        name = next((n for n in tags if f".{n} is " in error or f".{n} " in error), "")
        message = f"{name or 'record'} does not fit the schema: expected {_expected(schema, name)}"
        found.append((name, message, "direct-identifier" in tags.get(name, [])))
    return found or [("", "the record does not fit the schema", False)]


def _expected(schema: Mapping[str, Any], name: str) -> str:
    for field in schema.get("fields", []):
        if field["name"] == name:
            return json.dumps(field["type"])
    return "the stream's schema"


class RecordReader(Protocol):
    def read(self, topic: str, max_records: int, timeout_s: float = 10.0, start_offset: int = 0,
             partitions: Sequence[int] | None = None) -> list[Any]: ...


def read_quarantine(reader: RecordReader, stream: str, limit: int, timeout_s: float = 2.0,
                    start_offset: int = 0) -> list[dict[str, Any]]:
    """The quarantined entries of `stream` from `start_offset` on, oldest first, each with where it sits in the
    quarantine topic (one partition)."""
    entries = []
    for record in reader.read(quarantine_topic(stream), max_records=limit, timeout_s=timeout_s,
                              start_offset=start_offset):
        try:
            body = json.loads(record.value) if record.value else {}
        except ValueError:
            body = None
        if not isinstance(body, dict) or not isinstance(body.get("source", {}), dict):
            # Not an entry Accord wrote (a client with write access put something else there): skipped, so one
            # stray record cannot stop a publisher reading why its rows were not delivered.
            log.warning("quarantine of %s: the record at offset %s is not a quarantine entry; skipped", stream,
                        record.offset)
            continue
        entries.append({"partition": record.partition, "offset": record.offset, **body})
    return entries


def screen_topic(ingest: Ingest, reader: RecordReader, stream: str, start_offset: int, max_records: int,
                 timeout_s: float = 5.0, partition: int = 0) -> list[Outcome]:
    """Check records already on one partition of `ingest.<stream>`; a bad one is quarantined and screening goes on."""
    records = reader.read(ingest_topic(stream), max_records=max_records, timeout_s=timeout_s,
                          start_offset=start_offset, partitions=[partition])
    return [ingest.screen(stream, r.value, r.partition, r.offset) for r in records]
