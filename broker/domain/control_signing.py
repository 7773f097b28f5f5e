"""Signed control records: what a control record's signature covers, and why a gate refuses one.

Whoever can write the control topic decides who receives what, so a gate applies a record only if a key it trusts
signed it. The signer puts three headers on each record:

- `accord.control.key-id`: which key signed (the first 16 hex characters of SHA-256 over the raw public key);
- `accord.control.signed-at`: microseconds since the epoch, strictly increasing per signer;
- `accord.control.signature`: Ed25519 over `signed_message(topic, key, value, signed_at)`.

A valid signature is not enough against a replay (a principal that may write the topic appending an old, validly
signed grant again), so a record is also refused when

- its signed-at is not after that of the last record applied under the same key (the log keeps every record, so
  the newer one is always read first), or
- the broker did not stamp it (the topic's `message.timestamp.type=LogAppendTime`), or it was appended more than
  `MAX_APPEND_DELAY_MS` after it was signed: an old record appended again now, whatever happened to its history.
"""

from __future__ import annotations

import struct
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from enum import StrEnum

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from broker.domain.audit import key_id
from broker.domain.messages import ControlRecord

KEY_ID_HEADER = "accord.control.key-id"
SIGNED_AT_HEADER = "accord.control.signed-at"
SIGNATURE_HEADER = "accord.control.signature"
# A signer hands a record to its producer at once; five minutes covers producer retries and clock skew between
# the signer's host and the broker, and nothing signed longer ago than that is appended honestly.
MAX_APPEND_DELAY_MS = 5 * 60 * 1000
_DOMAIN = b"accord-control-v1"
_NONE = struct.pack(">i", -1)

# The trusted public key with this key id, or None when no trusted key has it.
KeyLookup = Callable[[str], Ed25519PublicKey | None]


class Refusal(StrEnum):
    """Why a control record was not applied (the label of the refusal counter)."""

    UNSIGNED = "unsigned"
    UNKNOWN_KEY = "unknown-key"
    BAD_SIGNATURE = "bad-signature"
    NOT_BROKER_STAMPED = "not-broker-stamped"
    STALE = "stale"
    REPLAYED = "replayed"


@dataclass(frozen=True)
class Refused:
    reason: Refusal
    detail: str


@dataclass(frozen=True)
class Signature:
    """The signature headers of one record, as a signer made them or a reader found them."""

    key_id: str
    signed_at_us: int
    signature: bytes

    def headers(self) -> list[tuple[str, bytes]]:
        return [(KEY_ID_HEADER, self.key_id.encode()), (SIGNED_AT_HEADER, str(self.signed_at_us).encode()),
                (SIGNATURE_HEADER, self.signature)]

    @classmethod
    def from_headers(cls, headers: Sequence[tuple[str, bytes]]) -> Signature | None:
        """The signature a record carries; None if any header is missing or malformed (an unsigned record)."""
        found = {name: value for name, value in headers}
        kid, at, signature = (found.get(h) for h in (KEY_ID_HEADER, SIGNED_AT_HEADER, SIGNATURE_HEADER))
        if kid is None or at is None or signature is None or not at.isdigit():
            return None
        try:
            return cls(kid.decode("ascii"), int(at), signature)
        except UnicodeDecodeError:
            return None


def signed_message(topic: str, key: str, value: bytes | None, signed_at_us: int) -> bytes:
    """The bytes a control record's signature covers: a domain tag, then topic, key, signed-at and value, each
    length-prefixed (4 bytes, big-endian; a tombstone's value as length -1), so no two records share a message."""
    parts = [topic.encode(), key.encode(), str(signed_at_us).encode()]
    framed = b"".join(struct.pack(">i", len(p)) + p for p in parts)
    tail = _NONE if value is None else struct.pack(">i", len(value)) + value
    return _DOMAIN + framed + tail


def sign(private_key: Ed25519PrivateKey, topic: str, key: str, value: bytes | None, signed_at_us: int) -> Signature:
    message = signed_message(topic, key, value, signed_at_us)
    return Signature(key_id(private_key.public_key()), signed_at_us, private_key.sign(message))


def check(record: ControlRecord, keys: KeyLookup, last_signed_at_us: int | None) -> Signature | Refused:
    """The record's verified signature, or why it must not be applied.

    `last_signed_at_us` is the signed-at of the last record applied under the same key (None: none was).
    """
    signature = Signature.from_headers(record.headers)
    if signature is None:
        return Refused(Refusal.UNSIGNED, "it carries no control signature")
    public = keys(signature.key_id)
    if public is None:
        return Refused(Refusal.UNKNOWN_KEY, f"key {signature.key_id} is not a trusted control-signing key")
    try:
        public.verify(signature.signature,
                      signed_message(record.topic, record.key, record.payload, signature.signed_at_us))
    except InvalidSignature:
        return Refused(Refusal.BAD_SIGNATURE, f"its signature does not verify with key {signature.key_id}")
    if not record.broker_stamped:
        return Refused(Refusal.NOT_BROKER_STAMPED, "the broker did not stamp its append time: set "
                       "message.timestamp.type=LogAppendTime on the control topic")
    delay_ms = record.timestamp_ms - signature.signed_at_us // 1000
    if abs(delay_ms) > MAX_APPEND_DELAY_MS:
        return Refused(Refusal.STALE, f"signed {delay_ms // 1000} s before the broker appended it: a replay of an "
                       "old record")
    if last_signed_at_us is not None and signature.signed_at_us <= last_signed_at_us:
        return Refused(Refusal.REPLAYED, f"signed at {signature.signed_at_us}, not after the record already applied "
                       f"under this key ({last_signed_at_us}): a replay")
    return signature
