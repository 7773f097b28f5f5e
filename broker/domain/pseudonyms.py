"""Keyed pseudonyms: one per value within a subscriber, unlinkable across subscribers (HKDF + HMAC-SHA256)."""

from __future__ import annotations

import datetime as dt

from cryptography.hazmat.primitives import hashes, hmac
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

KEY_INFO_PREFIX = b"accord pseudonym v1:"
KEY_BYTES = 32
PSEUDONYM_HEX_CHARS = 32
_SEPARATOR = "\x1f"


def subscriber_key(secret: bytes, subscriber: str) -> bytes:
    """The subscriber's 32-byte pseudonym key, derived from the deployment's pseudonym secret."""
    if not secret:
        raise ValueError("the pseudonym secret is empty; set one so that pseudonyms cannot be recomputed by anyone")
    hkdf = HKDF(algorithm=hashes.SHA256(), length=KEY_BYTES, salt=None, info=KEY_INFO_PREFIX + subscriber.encode())
    return hkdf.derive(secret)


class Pseudonymiser:
    """Turns (field, value) into 32 hex characters of HMAC-SHA256 over stream, field and value."""

    def __init__(self, key: bytes, stream: str) -> None:
        if not key:
            raise ValueError("a pseudonym key must not be empty")
        # Every message starts with the stream name, so its HMAC state is computed once and copied per value.
        self._base = hmac.HMAC(key, hashes.SHA256())
        self._base.update(f"{stream}{_SEPARATOR}".encode())

    def __call__(self, field: str, value: object) -> str | None:
        if value is None:
            return None
        text = value.isoformat() if isinstance(value, dt.date) else str(value)
        mac = self._base.copy()
        mac.update(f"{field}{_SEPARATOR}{text}".encode())
        return mac.finalize().hex()[:PSEUDONYM_HEX_CHARS]
