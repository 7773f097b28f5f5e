"""The policy gate: every record of a stream, decoded once, leaves as each subscriber's plan allows, or not at all.
Its ports are in gate_ports.py, the per-row rules in gate_rules.py."""

from __future__ import annotations

import datetime as dt
import json
import logging
import threading
import time
from collections import Counter
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Any

from broker.domain import control
from broker.domain.backfill import BackfillLog
from broker.domain.control import PolicyState, rfc3339
from broker.domain.control_signing import KeyLookup
from broker.domain.geography import LaTable
from broker.domain.jurisdiction import Unresolved, resolve_areas
from broker.domain.messages import ControlRecord, Record
from broker.domain.optout import OptOutList, is_digest
from broker.domain.partitions import stream_key
from broker.domain.plans import LSOA_TAG, Plan, Shape
from broker.domain.pseudonyms import KEY_HEADER
from broker.domain.residence import ResidenceTable
from broker.domain.suppression import suppress_table
from broker.domain.topics import AUDIT_TOPIC, BACKFILL_TOPIC, ingest_topic, quarantine_topic
from broker.domain.trusts import TRUST_TAG, TrustTable
from broker.domain.validation import field_tags, validate_record
from broker.errors import AccordError, ConfigError, SerdeError, ServiceError, WriterFenced
from broker.services.backfill import BackfillCounters, Backfiller, BackfillLogSource, HistorySource, Work
from broker.services.batch_audit import BatchAudit
from broker.services.delivery_table import Delivery, DeliveryTable
from broker.services.gate_ports import (
    AuditAppender,
    ControlSource,
    GateCounters,
    NoCounters,
    OptOutSource,
    Stage,
    StatusSink,
    WithheldCounter,
)
from broker.services.gate_rules import Cells, OptOutCheck, Refusal, Withheld, evaluate
from broker.services.ingest import AVRO_DECODE
from broker.services.planner import Decision, Planner
from broker.services.serde import AvroDeserializer, SchemaRegistry, SerializationContext

log = logging.getLogger(__name__)

UNRESOLVED = "jurisdiction-unresolved"
SUBSCRIBER_REQUIRED = "subscriber-required"
SOURCE_HEADER = "accord.source"
REVISION_HEADER = "accord.revision"
WORKER_HEADER = "accord.worker"
SUPPRESSION_HEADER = "accord.suppression"
BACKFILL_HEADER = "accord.backfill"  # on a replayed record: the grant whose history it is




def _no_rotated_keys(version: int) -> bytes:
    raise ConfigError(f"pseudonym key version {version} was announced, but this gate has no master secret for it; "
                      "give it the secrets directory `accord credentials rotate-pseudonym-key` wrote to")


@dataclass(frozen=True)
class TransactionBounds:
    """How much one gate transaction takes in: polls are joined until `records` (or, at the widest fan-out, about
    `sends` deliveries, so that routing stays well inside the transaction timeout) or for `gather_s` at most; a poll
    that finds nothing ready ends it sooner. Fewer, larger transactions cost fewer commits per record."""

    records: int = 2_000
    sends: int = 12_000  # 500 records to 24 deliveries each: the most a transaction routed before
    gather_s: float = 0.05


@dataclass(frozen=True)
class GateParts:
    """What a gate worker is made of; the runtime wires real adapters, unit tests in-memory ones."""

    stage: Stage
    control: ControlSource
    control_keys: KeyLookup  # the public keys control records must be signed with
    planner: Planner
    registry: SchemaRegistry
    schemas: Mapping[str, Mapping[str, Any]]
    la_table: LaTable
    pseudonym_secret: bytes
    ensure_topics: Callable[[Mapping[str, int]], None]  # creates the delivery topics not there yet: topic → partitions
    status: StatusSink
    audit: AuditAppender
    residence: ResidenceTable | None = None
    trusts: TrustTable | None = None  # each NHS trust's districts: rows naming a trust (`geography:trust`) go there
    pseudonym_masters: Callable[[int], bytes] = _no_rotated_keys  # the master secret of a rotated key version
    audit_topic: str = AUDIT_TOPIC  # where delivery-batch records go, inside each batch's transaction
    optout: OptOutSource | None = None  # None: no list, so a plan the opt-out applies to withholds only unnamed rows
    optout_key: bytes = b"\0" * 16       # the key the list's NHS numbers were hashed with (security/secrets.py)
    withheld: WithheldCounter | None = None
    # History on a new grant (services/backfill.py); without them a grant's `backfill` is not replayed.
    history: HistorySource | None = None
    backfill_log: BackfillLogSource | None = None
    backfill_counters: BackfillCounters | None = None
    # The schema of a stream the applied catalog names that the worker did not start with, given its catalog entry,
    # with its topics made (services/stream_schemas.py); None: the worker consumes only the streams it started with.
    adopt_stream: Callable[[str, Mapping[str, Any]], Mapping[str, Any] | None] | None = None


class Gate:
    """One gate worker. Call `start()`, then `step()` in a loop; any number of workers share the consumer group."""

    def __init__(self, parts: GateParts, worker: str, clock: Callable[[], dt.datetime] | None = None,
                 replan_every_s: float = 10.0, counters: GateCounters | None = None,
                 ready: Callable[[], bool] = lambda: True, bounds: TransactionBounds | None = None,
                 refresh_in_background: bool = False) -> None:
        # Its own copy of the schemas, shared with the delivery table: a stream a catalog adds is added to both.
        self._schemas: dict[str, Mapping[str, Any]] = dict(parts.schemas)
        self._p = parts = replace(parts, schemas=self._schemas)
        self._bounds = bounds or TransactionBounds()
        self.ready = ready
        self.worker = worker
        self._worker_bytes = worker.encode()
        self._clock = clock or (lambda: dt.datetime.now(dt.UTC))
        self._replan_every = dt.timedelta(seconds=replan_every_s)
        self._counters = counters or NoCounters()
        self.state = PolicyState()
        self._table = DeliveryTable(parts, worker, self._clock)
        self._next_replan = self._clock()
        # With `refresh_in_background`, the periodic re-plan (every `replan_every_s`, in case the policies or OPA's
        # data changed without a control record) is asked on another thread while delivery goes on under the plans
        # in force, and installed between batches; a control change, an expiry or OPA's return still re-plans on
        # this thread before the next batch. Without it every re-plan is asked here (unit tests, one thread).
        self._background = refresh_in_background
        self._next_refresh = self._next_replan
        self._refresh: _Refresh | None = None
        self._generation = 0  # bumped by each re-plan on this thread: a refresh asked before one is discarded
        self._dirty = False
        self.held = False  # paused because the policy engine is not ready
        self._pending_ms: int | None = None
        self._tally: Counter[tuple[str, str]] = Counter()
        self._stream_of: dict[str, str] = {}
        self._jurisdiction: dict[str, list[str]] = {}
        self._lsoa: dict[str, str | None] = {}
        self._trust_fields: dict[str, frozenset[str]] = {}
        self._decode: dict[str, AvroDeserializer] = {}
        for stream, schema in parts.schemas.items():
            self._add_stream(stream, schema)
        self._subscribe: list[str] = []  # ingest topics of streams adopted since the last subscribe
        self._batch = BatchAudit()  # this batch's deliveries and quarantined rows, audited in its transaction
        self._cells = Cells()  # this batch's cells for suppressed deliveries, sent per table at its end
        self.opted_out = OptOutList(parts.optout_key)
        self._optout_offset = 0
        self._withheld: Counter[tuple[str, str, str, str]] = Counter()
        self._backfill = None if parts.history is None or parts.backfill_log is None else Backfiller(
            parts.history, parts.backfill_log, worker, self._clock, parts.backfill_counters)

    def _add_stream(self, stream: str, schema: Mapping[str, Any]) -> None:
        self._jurisdiction[stream] = [str(f) for f in schema.get("accord.jurisdiction", [])]
        self._lsoa[stream] = next((name for name, tags in field_tags(schema).items() if LSOA_TAG in tags), None)
        self._trust_fields[stream] = frozenset(name for name, tags in field_tags(schema).items() if TRUST_TAG in tags)
        self._decode[stream] = AvroDeserializer(self._p.registry, json.dumps(schema))
        self._schemas[stream] = schema
        self._stream_of[ingest_topic(stream)] = stream

    def _adopt_streams(self) -> bool:
        """Streams the applied catalog names that this worker does not consume yet: their schemas and topics now
        (planned with the rest at once), their ingest topics subscribed to before the next poll. A stream whose
        schema cannot be had yet is retried at the next re-plan; the others go ahead. Whether it took one on."""
        adopt = self._p.adopt_stream
        named = (self.state.catalog or {}).get("streams")
        if adopt is None or not isinstance(named, Mapping):
            return False
        took = False
        for stream in sorted(set(named) - set(self._schemas)):
            try:
                schema = adopt(stream, named[stream])
            except AccordError as exc:
                log.error("gate worker %s cannot take on stream %s yet (retried): %s", self.worker, stream, exc)
                continue
            if schema is not None:
                log.info("gate worker %s takes on stream %s", self.worker, stream)
                self._add_stream(stream, schema)
                self._subscribe.append(ingest_topic(stream))
                took = True
        return took

    def _subscribe_adopted(self) -> None:
        """Between transactions: the group rebalances onto the new topics, which start at their beginning."""
        if self._subscribe:
            self._p.stage.subscribe(self.topics, from_start=self._subscribe)
            self._subscribe = []

    @property
    def history(self) -> BackfillLog | None:
        """Where this worker last saw each replay of history on a new grant (None: it replays none)."""
        return None if self._backfill is None else self._backfill.log

    @property
    def history_progress(self) -> tuple[dict[str, Any], ...]:
        """Each replay as this worker last committed it (safe to read from another thread)."""
        return () if self._backfill is None else self._backfill.progress_seen

    @property
    def topics(self) -> list[str]:
        return sorted(self._stream_of)

    def start(self) -> None:
        """Read the control topic to its end and plan before the first record is looked at."""
        self.sync(force=True)

    def anchor(self) -> None:
        """Once `ready`, commit where each assigned partition starts. A group started at `latest` has fixed its
        start at the end of each partition; committed, a successor that takes a partition over after this worker
        died before its first commit resumes there, not at a later end that would skip what came between."""
        self._p.stage.begin()
        try:
            self._p.stage.commit([], fenced=True)
        except ServiceError as exc:  # a rebalance under way: the next batch's commit fixes the positions instead
            log.warning("gate worker %s: could not commit its starting positions: %s", self.worker, exc)

    def sync(self, force: bool = False) -> bool:
        """Apply control records written so far; re-plan when they changed something, or a plan expired.

        Until a re-plan succeeds the gate stays dirty: a failed one (OPA down) is retried before the next batch
        rather than letting that batch out under the plans from before the change.
        """
        self._read_optouts()
        end = self._p.control.end_offset()
        changed = end > self.state.offset
        if changed:
            for record in self._p.control.read_to(end):
                self.state = self._applied(record)
                self._pending_ms = record.timestamp_ms
            # Compaction may have removed the last records: the reader has still been past them.
            self.state = replace(self.state, offset=max(self.state.offset, end))
            self._dirty = True
        now = self._clock()
        self._take_refresh()
        if self._dirty or force or now >= self._next_replan:
            self._adopt_streams()
            self._replan(now)
        elif self._background and now >= self._next_refresh and self._refresh is None:
            if self._adopt_streams():
                self._replan(now)  # a stream taken on now is planned here, before its topic is subscribed
            else:
                self._refresh = _Refresh(self.state, now, list(self._schemas), self._generation)
                threading.Thread(target=self._refresh.run, args=(self._table,), name=f"gate-{self.worker}-refresh",
                                 daemon=True).start()
        if self._dirty:
            self._dirty = False
            self._announce(self._pending_ms)
        return changed

    def _read_optouts(self) -> None:
        """Take in the opt-out list's new entries; like the control topic, before the batch is routed, so a row
        consumed after an opt-out was recorded meets it."""
        source = self._p.optout
        if source is None:
            return
        end = source.end_offset()
        if end <= self._optout_offset:
            return
        for entry in source.read_to(end):
            if not is_digest(entry.key):
                # Perhaps a plain number written by mistake: skipped, and never logged.
                log.error("opt-out list entry at offset %s is not a keyed hash; ignored", entry.offset)
                continue
            self.opted_out.update(entry.key, entry.payload is not None)
        self._optout_offset = end

    def _applied(self, record: ControlRecord) -> PolicyState:
        try:
            state, refused = control.admit(self.state, record, self._p.control_keys)
        except AccordError as exc:
            # Stopping here would lose every later record (the reader is past them) and a gate that can never
            # apply a change is worse than one that skips a record it cannot read: skip it, loudly.
            log.error("control record %s (%s) skipped: %s", record.offset, record.key, exc)
            self._counters.records("_control", "skipped", 1)
            return replace(self.state, offset=max(self.state.offset, record.offset + 1))
        if refused is not None:
            # Whoever wrote it does not hold the signing key (or replays an old record): never applied, and
            # counted so that an alert fires; the gate goes on under the state it had.
            log.error("gate worker %s REFUSED control record %s (%s): %s", self.worker, record.offset, record.key,
                      refused.detail)
            self._counters.control_refused(refused.reason)
        return state

    def step(self, timeout_s: float = 0.1, max_records: int | None = None) -> int:
        """Consume one batch, route it under the plans in force after it was consumed, commit it; returns its size.

        While the policy engine is not ready nothing is consumed (see `_hold`).
        """
        if not self._p.planner.ready():
            self._hold(timeout_s)
            return 0
        if self.held:
            log.warning("gate worker %s: the policy engine is back; re-planning before delivering", self.worker)
            self.held = False
        self._subscribe_adopted()
        try:
            records = self._gather(timeout_s, max_records)
        except BaseException:
            # A poll that failed part-way (e.g. a subscribed topic deleted, as a drill's is after the drill) may have
            # taken records in that it does not hand over: back to the committed positions, so none is skipped.
            self._p.stage.abort()
            raise
        try:
            # After the poll, not before: a record consumed after a policy change must meet the new plan.
            self.sync()
        except BaseException:
            self._p.stage.abort()  # fail closed: nothing leaves, the batch is consumed again later
            raise
        work = self._history_work(records)
        if not records and work is None:
            return 0
        self._p.stage.begin()
        try:
            for record in records:
                self._route(record)
            if work is not None:
                self._replay(work)
            self._send_tables()
            self._audit_batch()
            self._p.stage.commit(records, fenced=work is not None)
        except BaseException:
            self._tally.clear()  # the batch is consumed again: count it then
            self._withheld.clear()
            self._batch.clear()
            self._cells.clear()
            self._p.stage.abort()
            raise
        # Counted per batch, after the commit: a metric label lookup per record costs as much as a row filter.
        for (stream, outcome), n in self._tally.items():
            self._counters.records(stream, outcome, n)
        self._tally.clear()
        if self._p.withheld is not None:
            for (subscriber, role, stream, reason), n in self._withheld.items():
                self._p.withheld(subscriber, role, stream, reason, n)
        self._withheld.clear()
        if work is not None and self._backfill is not None:
            self._backfill.committed(work)
        return len(records)

    def _gather(self, timeout_s: float, max_records: int | None) -> list[Record]:
        """One transaction's records: a poll, then what is ready at once, until the bounds say enough (a caller's
        `max_records` is one poll of at most that many). The control topic is read after the last poll, so every
        record still meets the plans in force after it was consumed."""
        records = self._p.stage.poll(timeout_s, max_records)
        if not records or max_records is not None:
            return records
        bounds = self._bounds
        fan_out = max([len(ds) for ds in self.deliveries.values()] or [1]) or 1
        limit = min(bounds.records, max(1, bounds.sends // fan_out))
        until = time.monotonic() + bounds.gather_s
        while len(records) < limit and time.monotonic() < until:
            more = self._p.stage.poll(0.0, limit - len(records))
            if not more:
                break
            records.extend(more)
        return records

    def _hold(self, timeout_s: float) -> None:
        """Fail closed while OPA is down or has not activated its verified bundle: poll nothing, so nothing is
        delivered or committed and the records wait in Kafka. Plans made before are not trusted afterwards (OPA
        may come back with other policies, and without the catalog): the gate re-plans before its next batch."""
        if not self.held:
            log.warning("gate worker %s: the policy engine is not ready; delivery paused", self.worker)
            self.held = True
        self._next_replan = min(self._next_replan, self._clock())
        time.sleep(timeout_s)

    def run(self, should_stop: Callable[[], bool], on_error: Callable[[Exception], None] | None = None) -> None:
        """Step until `should_stop()`; a failing batch is aborted, reported and retried after a pause."""
        while not should_stop():
            try:
                self.step()
            except WriterFenced:
                raise   # another live worker took this one's slot: it delivers from here on; this one stops
            except AccordError as exc:
                (on_error or _log_error)(exc)
                time.sleep(1.0)

    # -- history on a new grant ------------------------------------------------------------------------
    def _history_work(self, records: Sequence[Record]) -> Work | None:
        if self._backfill is None:
            return None
        try:
            return self._backfill.prepare(self.state, self.deliveries, records, self._p.stage.positions)
        except BaseException:
            self._p.stage.abort()  # the batch is consumed again, and the history step tried again with it
            raise

    def _replay(self, work: Work) -> None:
        """This step's marks and history chunk, evaluated exactly as the live gate does now, for the one delivery
        topic the grant reaches; a row the gate would quarantine is skipped (its publisher was told already), and a
        row the opt-out or a quality rule keeps from this subscriber is skipped too."""
        for key, value in work.marks:
            self._p.stage.send(BACKFILL_TOPIC, json.dumps(value).encode(), key=key.encode())
        chunk = work.chunk
        if chunk is None:
            return
        delivery = next((d for d in self.deliveries.get(chunk.job.stream, ()) if d.topic == chunk.job.topic), None)
        if delivery is None:
            raise AccordError(f"{chunk.job.topic} has no plan any more; its history waits")
        grant = chunk.job.grant.encode()
        for record in chunk.records:
            if record.timestamp_ms is not None and record.timestamp_ms < chunk.since_ms:
                continue
            admitted = self._admit(chunk.job.stream, record)
            if isinstance(admitted, Refusal):
                continue
            row, areas = admitted
            record = self._keyed(chunk.job.stream, record, row)
            outcome = evaluate(delivery, row, areas, OptOutCheck(self.opted_out, row))
            if isinstance(outcome, Shape):
                source = f"{record.topic}/{record.partition}/{record.offset}".encode()
                self._place(delivery, record, source, outcome(row), ((BACKFILL_HEADER, grant),))
                work.delivered += 1
        assert self._backfill is not None
        if (progress := self._backfill.progress(work)) is not None:
            self._p.stage.send(BACKFILL_TOPIC, json.dumps(progress[1]).encode(), key=progress[0].encode())

    # -- routing -----------------------------------------------------------------------------------
    def _route(self, record: Record) -> None:
        stream = self._stream_of[record.topic]
        admitted = self._admit(stream, record)
        if isinstance(admitted, Refusal):
            self._send_quarantine(stream, record, admitted.reasons, admitted.extra)
            self._tally[(stream, "quarantined")] += 1
            return
        value, areas = admitted
        record = self._keyed(stream, record, value)
        source = f"{record.topic}/{record.partition}/{record.offset}".encode()
        delivered = refused = withheld = 0
        opt_out = OptOutCheck(self.opted_out, value)
        encoded: dict[tuple[str, str], bytes] = {}  # this record's bodies, by schema form and shape
        for delivery in self.deliveries.get(stream, ()):
            outcome = evaluate(delivery, value, areas, opt_out)
            if outcome is None:
                continue
            if isinstance(outcome, Withheld):
                self._withhold(stream, record, delivery.plan, outcome.why)
                withheld += 1
                continue
            if isinstance(outcome, list):
                self._refuse(stream, record, delivery.plan, outcome)
                refused += 1
                continue
            if delivery.form is None or outcome.key is None:
                self._place(delivery, record, source, outcome(value))
            else:
                self._deliver_shared(delivery, record, source, value, outcome, encoded)
            delivered += 1
        if delivered or not (refused or withheld):  # a row only refused or withheld is counted as such, per plan
            self._tally[(stream, "delivered" if delivered else "no-subscriber")] += 1

    def _keyed(self, stream: str, record: Record, value: Mapping[str, Any]) -> Record:
        """The record with the stream's key for `value` (domain/partitions.py), whatever key its publisher gave it:
        so one area's deliveries share a delivery partition in their ingest order, and a key chosen by a publisher
        writing the ingest topic directly (an NHS number, say) never reaches a subscriber its plan hides it from."""
        key = stream_key(self._p.schemas[stream], value)
        return record if key == record.key else replace(record, key=key)

    def _admit(self, stream: str, record: Record) -> tuple[Mapping[str, Any], frozenset[str]] | Refusal:
        """The decoded row and the areas it lies in, or why it goes to quarantine instead."""
        try:
            value = self._decode[stream](record.value, SerializationContext(record.topic))
        except SerdeError as exc:
            return Refusal.one(AVRO_DECODE, "", str(exc))
        if value is None:
            return Refusal.one(AVRO_DECODE, "", "the record has no value")
        areas = resolve_areas(value, self._jurisdiction[stream], self._p.la_table, self._residence(stream, value),
                              self._trust_fields[stream], self._p.trusts)
        if isinstance(areas, Unresolved):
            extra = {"candidates": list(areas.candidates)} if areas.candidates else {}
            return Refusal.one(UNRESOLVED, areas.field, areas.reason, extra)
        # The ingest API's field rules again: a publisher's own Kafka client writes ingest topics directly, and
        # nothing reaches a subscriber that the API would have refused. After the jurisdiction, so that a row two
        # councils could claim still goes to quarantine as such and both are told.
        if problems := validate_record(self._schemas[stream], value, self._clock().date(), self._p.la_table):
            return Refusal([{"field": p.field, "rule": p.rule, "message": p.message} for p in problems], {})
        return value, areas

    def _place(self, delivery: Delivery, record: Record, source: bytes, shaped: dict[str, Any],
               extra: Sequence[tuple[str, bytes]] = ()) -> None:
        """A row for one delivery: sent now, or kept with its table's cells when the plan suppresses small counts."""
        if delivery.suppression is not None:
            self._cells.add(delivery, record, source, shaped, extra)
        else:
            self._deliver(delivery, record, source, shaped, extra)

    def _deliver_shared(self, delivery: Delivery, record: Record, source: bytes, value: Mapping[str, Any],
                        shape: Shape, encoded: dict[tuple[str, str], bytes]) -> None:
        """A row for a delivery whose body another delivery of the same record may already have encoded: the same
        schema form and shape make the same bytes, so only the 5-byte header (its own schema id) is new."""
        assert delivery.form is not None and shape.key is not None
        key = (delivery.form, shape.key)
        body = encoded.get(key)
        if body is None:
            payload = delivery.encode(shape(value), delivery.context)
            assert payload is not None  # only a missing record encodes to None
            encoded[key] = payload
        else:
            payload = delivery.encode.reframe(body, delivery.context)
        self._send(delivery, record, source, payload)

    def _deliver(self, delivery: Delivery, record: Record, source: bytes, shaped: dict[str, Any],
                 extra: Sequence[tuple[str, bytes]] = ()) -> None:
        self._send(delivery, record, source, delivery.encode(shaped, delivery.context), extra)

    def _send(self, delivery: Delivery, record: Record, source: bytes, payload: bytes | None,
              extra: Sequence[tuple[str, bytes]] = ()) -> None:
        placed = self._p.stage.send(delivery.topic, payload, key=record.key,
                                    headers=[(SOURCE_HEADER, source), (REVISION_HEADER, delivery.revision),
                                             (WORKER_HEADER, self._worker_bytes),
                                             (KEY_HEADER, delivery.pseudonym_key), *extra])
        self._batch.delivered(delivery.topic, delivery.plan, record, payload, placed)

    def _send_tables(self) -> None:
        """Each suppressed delivery's cells of this batch, table by table, with small counts hidden
        (domain/suppression.py; a table is the cells of one table key in one batch: docs/sharing-plans.md)."""
        for delivery, cells in self._cells.tables():
            rule = delivery.suppression
            assert rule is not None
            header = [(SUPPRESSION_HEADER, f"threshold={rule.threshold};round_to={rule.round_to}".encode())]
            shown = suppress_table(rule, [shaped for _, _, shaped, _ in cells])
            for (record, source, _, extra), shaped in zip(cells, shown, strict=True):
                self._deliver(delivery, record, source, shaped, [*header, *extra])
        self._cells.clear()

    def _audit_batch(self) -> None:
        self._batch.write(self._p.stage, self._p.audit_topic, self.worker, rfc3339(self._clock()))

    def _residence(self, stream: str, value: Mapping[str, Any]) -> str | None:
        field = self._lsoa[stream]
        return None if self._p.residence is None or field is None else self._p.residence.lad_of(value.get(field))

    def _withhold(self, stream: str, record: Record, plan: Plan, reason: str) -> None:
        """The National Data Opt-out keeps the row from this subscriber: lawful withholding, not quarantine (nothing
        is wrong with the row, the publisher has nothing to fix, and other subscribers may still receive it). It is
        counted per subscriber and reason, and audited with the batch; the NHS number is neither logged nor kept."""
        self._withheld[(plan.subscriber, plan.role, stream, reason)] += 1
        self._tally[(stream, "withheld")] += 1
        self._batch.withheld(plan.topic, plan, record, reason)

    def _refuse(self, stream: str, record: Record, plan: Plan, missing: list[str]) -> None:
        """A subscriber's quality rule refused the row: it goes to quarantine naming the subscriber, so the
        publisher can see which rows failed for whom; other subscribers still receive it."""
        rule = ", ".join(plan.required)
        reasons = [{"field": name, "rule": SUBSCRIBER_REQUIRED,
                    "message": f"{plan.subscriber} ({plan.role}) accepts only rows with {rule}; {name} is missing"}
                   for name in missing]
        refused_by = {"subscriber": plan.subscriber, "role": plan.role, "agreements": list(plan.agreements)}
        self._send_quarantine(stream, record, reasons, {"refused_by": refused_by})
        self._tally[(stream, "refused-by-subscriber")] += 1

    def _send_quarantine(self, stream: str, record: Record, reasons: list[dict[str, str]],
                         extra: Mapping[str, Any]) -> None:
        source = {"kind": "gate", "topic": record.topic, "partition": record.partition, "offset": record.offset}
        body: dict[str, Any] = {"stream": stream, "source": source,
                                "reasons": [{**reason, "value_excerpt": ""} for reason in reasons], **extra}
        headers = [("accord.quarantine.rule", reasons[0]["rule"].encode()),
                   ("accord.quarantine.field", reasons[0]["field"].encode()),
                   ("accord.quarantine.reasons", str(len(reasons)).encode()),
                   ("accord.quarantine.source-offset", str(record.offset).encode())]
        if "refused_by" in extra:
            headers.append(("accord.quarantine.subscriber", str(extra["refused_by"]["subscriber"]).encode()))
        encoded = json.dumps(body).encode()
        placed = self._p.stage.send(quarantine_topic(stream), encoded, key=record.key, headers=headers)
        self._batch.quarantined(stream, record, encoded, reasons[0]["rule"], placed)

    # -- planning ----------------------------------------------------------------------------------
    @property
    def deliveries(self) -> Mapping[str, list[Delivery]]:
        return self._table.by_stream

    def _replan(self, now: dt.datetime) -> None:
        self._generation += 1
        self._planned(now, self._table.replan(self.state, now))

    def _planned(self, now: dt.datetime, expiries: list[dt.datetime]) -> None:
        if self._background:
            self._next_replan = min(expiries, default=dt.datetime.max.replace(tzinfo=dt.UTC))
            self._next_refresh = now + self._replan_every
        else:
            self._next_replan = min([now + self._replan_every, *expiries])

    def _take_refresh(self) -> None:
        """Install a background refresh that has ended, unless a re-plan on this thread came after it was asked.
        One that failed (OPA down, another writer's catalog) has the re-plan asked again on this thread, before
        the batch: that fails closed as any re-plan does."""
        job = self._refresh
        if job is None or not job.done.is_set():
            return
        self._refresh = None
        if job.failure is not None:
            log.warning("gate worker %s: periodic re-plan failed (%s); re-planning before the batch", self.worker,
                        job.failure)
            self._next_replan = min(self._next_replan, job.now)
        elif job.generation == self._generation and job.state is self.state:
            assert job.decisions is not None
            self._planned(job.now, self._table.install(job.state, job.now, job.decisions))

    def _announce(self, event_ms: int | None) -> None:
        applied_ms = int(self._clock().timestamp() * 1000)
        if event_ms is not None:
            self._counters.enforced(max(0.0, (applied_ms - event_ms) / 1000))
        plans = {s: [d.topic for d in ds] for s, ds in self.deliveries.items()}
        self._p.status(self.worker, {"worker": self.worker, "offset": self.state.offset,
                                     "catalog_revision": self.state.catalog_revision, "event_ms": event_ms,
                                     "applied_ms": applied_ms, "deliveries": plans})


@dataclass
class _Refresh:
    """A periodic re-plan asked off the delivery thread: the decisions for `state` at `now`, or why not."""

    state: PolicyState
    now: dt.datetime
    streams: list[str]
    generation: int
    done: threading.Event = field(default_factory=threading.Event)
    decisions: dict[str, list[Decision]] | None = None
    failure: BaseException | None = None

    def run(self, table: DeliveryTable) -> None:
        try:
            # One question at a time: nobody waits for it, and a re-plan on the delivery thread meanwhile (a
            # control change) gets the planner's pool to itself.
            self.decisions = table.decide(self.state, self.streams, self.now, at_once=False)
        except BaseException as exc:  # handed to the delivery thread, which re-plans itself
            self.failure = exc
        finally:
            self.done.set()


def _log_error(exc: Exception) -> None:
    log.error("gate batch failed, will retry: %s", exc)


__all__ = ["AuditAppender", "ControlSource", "Gate", "GateCounters", "GateParts", "OptOutSource", "Stage",
           "StatusSink", "TransactionBounds", "WithheldCounter"]
