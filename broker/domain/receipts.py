"""Proof of delivery: a subscriber's signed receipt for a range of records it has durably stored.

A receipt names one delivery topic-partition, an inclusive offset range, the SHA-256 of the records in it (the same
`records_digest` the gate's delivery-batch records carry: for each record in offset order, its key's length as a
4-byte big-endian signed integer, -1 for none, then the key, then the value the same way) and the id of the
subscriber's Ed25519 key. The signature covers `message()`: the UTF-8 bytes of

    canonical_json({"kind": "accord-delivery-receipt/v1", "topic", "partition", "first_offset", "last_offset",
                    "records_digest", "key_id"})

(keys sorted, no spaces; broker/domain/audit.py's `canonical_json`). The key id is the fingerprint: the first 16
hex characters of SHA-256 over the raw 32-byte public key.
"""

from __future__ import annotations

import base64
import binascii
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from cryptography.exceptions import InvalidSignature, UnsupportedAlgorithm
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat, load_pem_public_key

from broker.domain.audit import canonical_json, key_id
from broker.domain.audit_records import DELIVERY_RECEIPT, RECORDS_DIGEST, records_digest
from broker.domain.messages import Record
from broker.errors import AccordError

__all__ = [
    "DELIVERY_RECEIPT",
    "KEY_REGISTERED",
    "KEY_RETIRED",
    "Claim",
    "ReceiptError",
    "claims_for",
    "fingerprint",
    "parse_public_key",
    "public_key_text",
    "range_digest",
    "receipt_record",
    "sign",
    "signature_valid",
]

RECEIPT_KIND = "accord-delivery-receipt/v1"
KEY_REGISTERED, KEY_RETIRED = "receipt-key-registered", "receipt-key-retired"   # governance events
MAX_RANGE = 100_000  # offsets per receipt: the API reads the whole range to hash it, so one request stays bounded


class ReceiptError(AccordError):
    """A receipt or a receipt key that cannot be taken; `status` is the HTTP status to answer with."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status


@dataclass(frozen=True)
class Claim:
    """What a receipt asserts: the records [first_offset, last_offset] of topic-partition hash to `records_digest`."""

    topic: str
    partition: int
    first_offset: int
    last_offset: int
    records_digest: str
    key_id: str

    def message(self) -> bytes:
        """The bytes the subscriber signs (see the module docstring)."""
        return canonical_json({"kind": RECEIPT_KIND, "topic": self.topic, "partition": self.partition,
                               "first_offset": self.first_offset, "last_offset": self.last_offset,
                               "records_digest": self.records_digest, "key_id": self.key_id}).encode("utf-8")

    def to_json(self) -> dict[str, Any]:
        return {"topic": self.topic, "partition": self.partition, "first_offset": self.first_offset,
                "last_offset": self.last_offset, "records_digest": self.records_digest, "key_id": self.key_id}

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> Claim:
        return cls(str(data["topic"]), int(data["partition"]), int(data["first_offset"]), int(data["last_offset"]),
                   str(data["records_digest"]), str(data["key_id"]))


def range_digest(records: Iterable[Record]) -> str:
    """The `records_digest` of consumed records, taken in offset order."""
    return records_digest((r.key, r.value) for r in sorted(records, key=lambda r: r.offset))


def claims_for(records: Iterable[Record], key: str, max_range: int = MAX_RANGE) -> list[Claim]:
    """One claim per topic-partition of `records` (a batch a sink stored): its first to last offset and digest; a
    partition's records spanning `max_range` offsets or more are claimed in several pieces."""
    parts: dict[tuple[str, int], list[list[Record]]] = {}
    for record in sorted(records, key=lambda r: (r.topic, r.partition, r.offset)):
        pieces = parts.setdefault((record.topic, record.partition), [])
        if not pieces or record.offset - pieces[-1][0].offset >= max_range:
            pieces.append([])
        pieces[-1].append(record)
    return [Claim(topic, partition, rs[0].offset, rs[-1].offset, range_digest(rs), key)
            for (topic, partition), pieces in sorted(parts.items()) for rs in pieces]


def sign(private_key: Ed25519PrivateKey, claim: Claim) -> str:
    """The claim's signature, base64."""
    return base64.b64encode(private_key.sign(claim.message())).decode("ascii")


def signature_valid(public_key: Ed25519PublicKey, claim: Claim, signature: str) -> bool:
    try:
        public_key.verify(base64.b64decode(signature, validate=True), claim.message())
    except (InvalidSignature, binascii.Error, ValueError):
        return False
    return True


def public_key_text(public_key: Ed25519PublicKey) -> str:
    """The raw 32-byte public key, base64: how a key is registered and kept on the governance log."""
    return base64.b64encode(public_key.public_bytes(Encoding.Raw, PublicFormat.Raw)).decode("ascii")


def parse_public_key(text: str) -> Ed25519PublicKey:
    """An Ed25519 public key given as PEM or as the base64 of its raw 32 bytes; ReceiptError (400) otherwise."""
    text = text.strip()
    try:
        if text.startswith("-----BEGIN"):
            key = load_pem_public_key(text.encode("ascii"))
            if isinstance(key, Ed25519PublicKey):
                return key
            raise ValueError("not an Ed25519 key")
        raw = base64.b64decode(text, validate=True)
        return Ed25519PublicKey.from_public_bytes(raw)
    except (ValueError, TypeError, binascii.Error, UnicodeEncodeError, UnsupportedAlgorithm) as exc:
        raise ReceiptError(400, "public_key must be an Ed25519 public key, as PEM or as the base64 of its raw 32 "
                                f"bytes ({exc})") from None


def fingerprint(public_key: Ed25519PublicKey) -> str:
    return key_id(public_key)


def receipt_record(claim: Claim, signature: str, records: int, actor: Mapping[str, str], at: str) -> dict[str, Any]:
    """The audit record of an accepted receipt: the claim, its signature, who sent it and how many records it
    covers (what `accord audit receipts` reads back and verifies)."""
    return {**claim.to_json(), "signature": signature, "records": records, "digest_method": RECORDS_DIGEST,
            "body": actor["body"], "role": actor["role"], "person": actor["person"], "at": at}
