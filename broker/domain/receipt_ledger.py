"""What the audit trail says about proof of delivery: each body's receipt keys (folded from governance events), and,
per delivery topic-partition, which delivered offsets a receipt acknowledges and which none does yet."""

from __future__ import annotations

import contextlib
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, replace
from typing import Any

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from broker.domain.audit import Entry
from broker.domain.audit_records import DELIVERY_BATCH, DELIVERY_RECEIPT, KINDS
from broker.domain.receipts import KEY_REGISTERED, KEY_RETIRED, Claim, signature_valid

GOVERNANCE_EVENT = KINDS[b"governance"]

Run = tuple[int, int]   # an inclusive offset range [first, last]


@dataclass(frozen=True)
class ReceiptKey:
    key_id: str
    body: str
    public_key: str          # base64 of the raw 32 bytes
    registered_at: str
    registered_by: str
    retired_at: str | None = None

    @property
    def active(self) -> bool:
        return self.retired_at is None

    def to_json(self) -> dict[str, Any]:
        return {"key_id": self.key_id, "body": self.body, "public_key": self.public_key,
                "registered_at": self.registered_at, "registered_by": self.registered_by,
                "retired_at": self.retired_at, "active": self.active}


def fold_key_event(keys: Mapping[str, ReceiptKey], event: Mapping[str, Any]) -> dict[str, ReceiptKey]:
    """`keys` (key id → key) after one governance event; events of other kinds change nothing. A key id stays its
    first registration's: the same public key registered again (by another body, or after it was retired) changes
    nothing."""
    kind, data = event.get("type"), event.get("data") or {}
    out = dict(keys)
    if kind == KEY_REGISTERED:
        ident = str(data["key_id"])
        if ident not in out:
            person = (event.get("actor") or {}).get("person", "")
            out[ident] = ReceiptKey(ident, str(data["body"]), str(data["public_key"]), str(event.get("at")),
                                    str(person))
    elif kind == KEY_RETIRED:
        ident = str(data["key_id"])
        known = out.get(ident)
        if known is not None and known.body == data["body"] and known.active:
            out[ident] = replace(known, retired_at=str(event.get("at")))
    return out


def keys_from(events: Iterable[Mapping[str, Any]]) -> dict[str, ReceiptKey]:
    keys: dict[str, ReceiptKey] = {}
    for event in events:
        keys = fold_key_event(keys, event)
    return keys


def merged(runs: Iterable[Run]) -> list[Run]:
    """Overlapping or adjacent runs joined, in order."""
    out: list[list[int]] = []
    for first, last in sorted(runs):
        if out and first <= out[-1][1] + 1:
            out[-1][1] = max(out[-1][1], last)
        else:
            out.append([first, last])
    return [(a, b) for a, b in out]


def missing(delivered: Iterable[Run], acknowledged: Iterable[Run]) -> list[Run]:
    """The delivered offsets no acknowledged run covers, as runs."""
    acks = merged(acknowledged)
    out: list[Run] = []
    for first, last in merged(delivered):
        start = first
        for a_first, a_last in acks:
            if a_last < start or a_first > last:
                continue
            if a_first > start:
                out.append((start, a_first - 1))
            start = max(start, a_last + 1)
            if start > last:
                break
        if start <= last:
            out.append((start, last))
    return out


@dataclass(frozen=True)
class PartitionReceipts:
    """One delivery topic-partition: what the gate delivered, which runs receipts acknowledged (with their keys),
    and the delivered runs not acknowledged yet."""

    topic: str
    partition: int
    delivered: list[Run]
    acknowledged: list[tuple[Run, str]]     # (run, key id), one per accepted receipt
    unacknowledged: list[Run]

    def to_json(self) -> dict[str, Any]:
        return {"topic": self.topic, "partition": self.partition, "delivered": [list(r) for r in self.delivered],
                "acknowledged": [{"first_offset": r[0], "last_offset": r[1], "key_id": k}
                                 for r, k in self.acknowledged],
                "unacknowledged": [list(r) for r in self.unacknowledged]}


def report(batches: Sequence[Mapping[str, Any]], receipts: Sequence[Mapping[str, Any]],
           prefix: str) -> list[PartitionReceipts]:
    """Per topic-partition whose name starts with `prefix`: `batches` are delivery-batch audit records (their
    `offsets` runs), `receipts` accepted delivery-receipt records."""
    delivered: dict[tuple[str, int], list[Run]] = {}
    for batch in batches:
        if str(batch.get("topic", "")).startswith(prefix):
            runs = delivered.setdefault((str(batch["topic"]), int(batch["partition"])), [])
            runs.extend((int(a), int(b)) for a, b in batch.get("offsets") or [])
    acked: dict[tuple[str, int], list[tuple[Run, str]]] = {}
    for receipt in receipts:
        if str(receipt.get("topic", "")).startswith(prefix):
            run = (int(receipt["first_offset"]), int(receipt["last_offset"]))
            entry = acked.setdefault((str(receipt["topic"]), int(receipt["partition"])), [])
            if (run, str(receipt["key_id"])) not in entry:      # a receipt sent again acknowledges nothing new
                entry.append((run, str(receipt["key_id"])))
    out = []
    for topic, partition in sorted(set(delivered) | set(acked)):
        runs, acks = merged(delivered.get((topic, partition), [])), sorted(acked.get((topic, partition), []))
        out.append(PartitionReceipts(topic, partition, runs, acks, missing(runs, [r for r, _ in acks])))
    return out


@dataclass(frozen=True)
class Ledger:
    """What a chained audit trail holds for receipts: delivery batches, accepted receipts, receipt keys."""

    batches: list[Mapping[str, Any]]
    receipts: list[Mapping[str, Any]]
    keys: dict[str, ReceiptKey]


def ledger(entries: Iterable[Entry]) -> Ledger:
    batches: list[Mapping[str, Any]] = []
    receipts: list[Mapping[str, Any]] = []
    keys: dict[str, ReceiptKey] = {}
    for entry in entries:
        event = entry.body.get("event")
        if not isinstance(event, dict):
            continue
        if entry.kind == DELIVERY_BATCH:
            batches.append(event)
        elif entry.kind == DELIVERY_RECEIPT:
            receipts.append(event)
        elif entry.kind == GOVERNANCE_EVENT and event.get("type") in (KEY_REGISTERED, KEY_RETIRED):
            with contextlib.suppress(KeyError, TypeError, ValueError):
                keys = fold_key_event(keys, event)
    return Ledger(batches, receipts, keys)


def receipt_verifies(receipt: Mapping[str, Any], public_key: Ed25519PublicKey) -> bool:
    """Whether an accepted receipt's signature verifies with `public_key` over its canonical form."""
    try:
        claim = Claim.from_json(receipt)
    except (KeyError, TypeError, ValueError):
        return False
    return signature_valid(public_key, claim, str(receipt.get("signature", "")))
