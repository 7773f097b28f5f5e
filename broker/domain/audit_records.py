"""What the audit chainer makes of raw audit records, and where it resumes from the tail of its chain.

Each chained entry names the raw record it came from (topic, partition, offset); the last such entry in the chain is
where chaining resumes, so a record is chained once even when the chainer stops between writing and noting it.
"""

from __future__ import annotations

import base64
import json
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from broker.domain.audit import CHECKPOINT, Entry
from broker.errors import AuditError

# Producers key raw audit records by what they describe; the governance service was first and says "governance".
KINDS = {
    b"governance": "governance-event",
    b"catalog-change": "catalog-change",
    b"delivery-batch": "delivery-batch",
    b"policy-decision": "policy-decision",
}
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
