"""Raw audit records: what producers write (policy decisions, delivery batches, catalog changes, export requests),
what the audit chainer makes of them, where it resumes from the tail of its chain, and the anchors of its
checkpoints that it publishes on the governance log.

Each chained entry names the raw record it came from (topic, partition, offset); the last such entry in the chain is
where chaining resumes, so a record is chained once even when the chainer stops between writing and noting it.
"""

from __future__ import annotations

import base64
import hashlib
import json
import struct
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from broker.domain.audit import CHECKPOINT, EXPORT, Anchor, Entry
from broker.domain.plans import FieldRule, Plan
from broker.errors import AuditError

POLICY_DECISION = "policy-decision"
DELIVERY_BATCH = "delivery-batch"
QUARANTINE_BATCH = "quarantine-batch"
WITHHELD_BATCH = "withheld-batch"
CATALOG_CHANGE = "catalog-change"
DELIVERY_RECEIPT = "delivery-receipt"   # a subscriber's accepted receipt (broker/domain/receipts.py)
# Producers key raw audit records by what they describe; the governance service was first and says "governance".
KINDS = {
    b"governance": "governance-event",
    CATALOG_CHANGE.encode(): CATALOG_CHANGE,
    DELIVERY_BATCH.encode(): DELIVERY_BATCH,
    QUARANTINE_BATCH.encode(): QUARANTINE_BATCH,
    WITHHELD_BATCH.encode(): WITHHELD_BATCH,
    POLICY_DECISION.encode(): POLICY_DECISION,
    DELIVERY_RECEIPT.encode(): DELIVERY_RECEIPT,
    EXPORT.encode(): EXPORT,
}
ANCHOR = "audit-anchor"  # the type of an anchor event on the governance log
RECORDS_DIGEST = "sha256(len-key-len-value)"  # names `records_digest` in each batch record, for other verifiers
_NULL_LENGTH = struct.pack(">i", -1)
# A record from a producer this version does not know is still chained: an audit trail that drops what it cannot
# read would hide exactly what nobody expected.
UNRECOGNISED = "unrecognised"


@dataclass(frozen=True)
class Source:
    topic: str
    partition: int
    offset: int


def raw_entry(key: bytes | None, value: bytes | None, source: Source) -> tuple[str, dict[str, Any]]:
    """The kind and body of the entry for one raw record; a value that is not JSON is kept as base64."""
    kind = KINDS.get(key or b"", UNRECOGNISED)
    body: dict[str, Any] = {"source": {"topic": source.topic, "partition": source.partition, "offset": source.offset}}
    if kind == UNRECOGNISED:
        body["key"] = None if key is None else base64.b64encode(key).decode("ascii")
    try:
        body["event"] = json.loads(value or b"null", parse_constant=_refuse_constant)
    except ValueError:
        body["raw_base64"] = base64.b64encode(value or b"").decode("ascii")
    return kind, body


def _refuse_constant(name: str) -> Any:
    raise ValueError(f"{name} is not JSON")


@dataclass(frozen=True)
class Resume:
    """Where to continue: after `last` in the chain, `unsigned` entries since the last checkpoint, and the raw
    offset to read next (0 when nothing was chained yet)."""

    last: Entry | None
    unsigned: int
    next_offset: int


def resume_from_tail(tail: Sequence[Entry], whole: bool) -> Resume | None:
    """The resume point from the chain's last entries, or None when `tail` is too short to tell.

    `whole` says `tail` is the entire chain. Otherwise it must reach back to a checkpoint (to count the unsigned
    entries) and to a chained record (for the raw offset).
    """
    checkpoints = [i for i, entry in enumerate(tail) if entry.kind == CHECKPOINT]
    sourced = [entry for entry in tail if entry.kind != CHECKPOINT]
    if not whole and not (checkpoints and sourced):
        return None
    unsigned = len(tail) - 1 - checkpoints[-1] if checkpoints else len(tail)
    next_offset = _source_offset(sourced[-1]) + 1 if sourced else 0
    return Resume(tail[-1] if tail else None, unsigned, next_offset)


def _source_offset(entry: Entry) -> int:
    source = entry.body.get("source")
    offset = source.get("offset") if isinstance(source, dict) else None
    if isinstance(offset, bool) or not isinstance(offset, int):
        raise AuditError(f"audit entry {entry.seq} ({entry.kind}) does not name the raw record it came from, so "
                         "chaining cannot tell where to resume: was the chain topic written by something else?")
    return offset


# -- what producers write -----------------------------------------------------------------------------------------
def decision_terms(plan: Plan, catalog_revision: str | None) -> dict[str, Any]:
    """What a policy decision decided, without when, by whom or its id: equal terms are the same decision again."""
    return {
        "subscriber": plan.subscriber, "role": plan.role, "stream": plan.stream, "purpose": plan.purpose,
        "allow": plan.allow, "reasons": list(plan.reasons), "agreements": list(plan.agreements),
        "fields": _rules(plan.fields),
        "scopes": [{"agreements": list(s.agreements), "areas": sorted(s.areas), "fields": _rules(s.fields)}
                   for s in plan.scopes],
        "areas": sorted(plan.areas), "required": list(plan.required),
        "opt_out": {"applies": plan.opt_out, "reasons": list(plan.opt_out_reasons)},
        "expiry": None if plan.expiry is None else plan.expiry.isoformat(),
        "revision": plan.revision, "catalog_revision": catalog_revision,
    }


def _rules(rules: Iterable[FieldRule]) -> list[dict[str, Any]]:
    return [{"field": r.name, "transform": r.transform, "method": r.method, "as": r.output} for r in rules]


def decision_record(plan: Plan, decision_id: str | None, catalog_revision: str | None, worker: str,
                    at: str) -> dict[str, Any]:
    """A gate worker's policy decision for one subscription; `decision_id` is OPA's, as in OPA's decision log."""
    return {**decision_terms(plan, catalog_revision), "decision_id": decision_id, "worker": worker, "at": at}


@dataclass(frozen=True)
class Delivered:
    """One record a gate delivered (where it landed, what it held) and the ingest record it was made from."""

    offset: int
    key: bytes | None
    value: bytes | None
    source: Source


def records_digest(records: Iterable[tuple[bytes | None, bytes | None]]) -> str:
    """Hex SHA-256 over (key, value) pairs in order: for each, the key's length as a 4-byte big-endian signed
    integer (-1 for no key) followed by the key, then the value's length and the value the same way.

    Lengths keep record boundaries unambiguous; a subscriber recomputes it from the keys and values it read.
    """
    digest = hashlib.sha256()
    for key, value in records:
        for part in (key, value):
            digest.update(_NULL_LENGTH if part is None else struct.pack(">i", len(part)) + part)
    return digest.hexdigest()


def batch_record(topic: str, partition: int, delivered: Sequence[Delivered], plan: Plan, worker: str,
                 at: str) -> dict[str, Any]:
    """What one gate transaction delivered to one delivery topic-partition, under one plan.

    `offsets` lists runs of consecutive offsets as [first, last] pairs: one run unless another worker's transaction
    wrote to the same partition in between. `records_digest` covers the records in offset order.
    """
    return {**_landed(topic, partition, delivered),
            "subscriber": plan.subscriber, "role": plan.role, "stream": plan.stream, "purpose": plan.purpose,
            "revision": plan.revision, "worker": worker, "at": at}


def quarantine_batch_record(topic: str, partition: int, quarantined: Sequence[Delivered], rules: Mapping[str, int],
                            stream: str, worker: str, at: str) -> dict[str, Any]:
    """What one gate transaction sent to a stream's quarantine topic-partition (rows it refused, with reasons
    and no values): the same landing, digest and sources as a delivery batch, and how many rows each rule refused."""
    return {**_landed(topic, partition, quarantined), "stream": stream, "rules": dict(sorted(rules.items())),
            "worker": worker, "at": at}


def withheld_batch_record(topic: str, plan: Plan, sources: Sequence[Source], reasons: Mapping[str, int],
                          worker: str, at: str) -> dict[str, Any]:
    """The rows one gate transaction withheld from one delivery topic under the National Data Opt-out: lawful
    withholding, not quarantine. Which ingest records (by offset) and how many per reason; no values, no NHS number."""
    grouped: dict[tuple[str, int], list[int]] = {}
    for source in sources:
        grouped.setdefault((source.topic, source.partition), []).append(source.offset)
    return {"topic": topic, "subscriber": plan.subscriber, "role": plan.role, "stream": plan.stream,
            "purpose": plan.purpose, "revision": plan.revision, "rule": "national-data-opt-out",
            "records": len(sources), "reasons": dict(sorted(reasons.items())),
            "sources": [{"topic": t, "partition": p, "offsets": _runs(sorted(o))}
                        for (t, p), o in sorted(grouped.items())],
            "worker": worker, "at": at}


def _landed(topic: str, partition: int, records: Sequence[Delivered]) -> dict[str, Any]:
    if not records:
        raise ValueError(f"a batch record for {topic}/{partition} needs at least one record")
    ordered = sorted(records, key=lambda d: d.offset)
    sources: dict[tuple[str, int], list[int]] = {}
    for record in ordered:
        sources.setdefault((record.source.topic, record.source.partition), []).append(record.source.offset)
    return {
        "topic": topic, "partition": partition, "first_offset": ordered[0].offset,
        "last_offset": ordered[-1].offset, "records": len(ordered), "offsets": _runs([d.offset for d in ordered]),
        "records_digest": records_digest((d.key, d.value) for d in ordered), "digest_method": RECORDS_DIGEST,
        "sources": [{"topic": t, "partition": p, "first_offset": min(o), "last_offset": max(o), "records": len(o)}
                    for (t, p), o in sorted(sources.items())],
    }


def _runs(offsets: Sequence[int]) -> list[list[int]]:
    runs: list[list[int]] = []
    for offset in offsets:
        if runs and offset == runs[-1][1] + 1:
            runs[-1][1] = offset
        else:
            runs.append([offset, offset])
    return runs


def catalog_contents(document: dict[str, Any] | None) -> dict[str, Any]:
    """What a compiled catalog holds, by id: its revision is a hash of the whole document, so it names the rest."""
    if document is None:
        return {"revision": None}
    return {"revision": document.get("revision"),
            **{part: sorted(document.get(part) or {}) for part in ("bodies", "streams", "agreements")}}


def catalog_change(change: str, control_key: str, control_offset: int, by: Mapping[str, str] | None, at: str,
                   details: dict[str, Any]) -> dict[str, Any]:
    """A policy change announced on the control topic (`control_key` at `control_offset`): a catalog applied, an
    agreement revoked or reinstated, an emergency level declared; `by` is the verified body, role and person."""
    return {"change": change, "control": {"key": control_key, "offset": control_offset}, "by": by, "at": at,
            **details}


# -- exports and anchors --------------------------------------------------------------------------------------------
def export_request(request: str, by: str, at: str) -> dict[str, Any]:
    """What `accord audit export` writes (keyed `audit-export`): the chain signs right after it, and `request` (a
    random id) lets the exporter find that checkpoint. `by` is the verified Kafka principal that asked."""
    return {"request": request, "by": by, "at": at}


def sealed_at(entries: Iterable[Entry], request: str) -> int | None:
    """The seq of the checkpoint that signs the chain right after the export request `request`, once chained."""
    requested = False
    for entry in entries:
        if requested and entry.kind == CHECKPOINT:
            return entry.seq
        event = entry.body.get("event")
        requested = entry.kind == EXPORT and isinstance(event, dict) and event.get("request") == request
    return None


def anchor_event(anchor: Anchor, event_id: str, at: str) -> dict[str, Any]:
    """The governance-log event that publishes `anchor`; governance state ignores it (no dispute, no effect)."""
    return {"event_id": event_id, "type": ANCHOR, "dispute": None, "at": at, "actor": None,
            "data": {"chain": anchor.chain, "seq": anchor.seq, "hash": anchor.hash, "key_id": anchor.key_id,
                     "signature": anchor.signature}}


def anchor_from_event(event: Any, chain: str) -> Anchor | None:
    """The anchor a governance-log event publishes for the chain topic `chain`; None for any other event.

    Raises AuditError for an anchor of `chain` that is malformed: a verifier must not pass over it silently.
    """
    if not isinstance(event, dict) or event.get("type") != ANCHOR:
        return None
    data = event.get("data")
    if not isinstance(data, dict) or data.get("chain") != chain:
        return None
    seq, texts = data.get("seq"), [data.get(name) for name in ("hash", "key_id", "signature")]
    if isinstance(seq, bool) or not isinstance(seq, int) or seq < 0 or not all(isinstance(t, str) for t in texts):
        raise AuditError(f"an anchor of {chain} on the governance log is malformed: it needs seq (a whole number), "
                         f"hash, key_id and signature (text), got {json.dumps(data, sort_keys=True)[:200]}")
    return Anchor(chain, seq, str(texts[0]), str(texts[1]), str(texts[2]))
