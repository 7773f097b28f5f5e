"""Keyed pseudonyms: one per value within a subscriber, unlinkable across subscribers (HKDF + HMAC-SHA256).

Keys are versioned: version 1 derives from the deployment's pseudonym secret, version n from the master secret of
version n. A rotation is announced on the control topic (`pseudonym-key/<subscriber>`, or `pseudonym-key/*` for
all) with the time it takes effect; until then the subscriber's pseudonyms stay as they were, and every delivery
says in its `accord.pseudonym-key` header which version made it. Old masters are kept, so an old version's
pseudonyms can still be re-derived.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping
from typing import Any

from cryptography.hazmat.primitives import hashes, hmac
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

KEY_INFO_PREFIX = b"accord pseudonym v1:"
KEY_HEADER = "accord.pseudonym-key"
FIRST_VERSION = 1
KEY_BYTES = 32
PSEUDONYM_HEX_CHARS = 32
_SEPARATOR = "\x1f"
ALL_SUBSCRIBERS = "*"


def subscriber_key(secret: bytes, subscriber: str, version: int = FIRST_VERSION) -> bytes:
    """The subscriber's 32-byte pseudonym key of `version`, derived from that version's master secret (version 1:
    the deployment's pseudonym secret, with the derivation pseudonyms always had)."""
    if not secret:
        raise ValueError("the pseudonym secret is empty; set one so that pseudonyms cannot be recomputed by anyone")
    if version < FIRST_VERSION:
        raise ValueError(f"pseudonym key versions start at {FIRST_VERSION}, not {version}")
    info = KEY_INFO_PREFIX if version == FIRST_VERSION else f"accord pseudonym key v{version}:".encode()
    hkdf = HKDF(algorithm=hashes.SHA256(), length=KEY_BYTES, salt=None, info=info + subscriber.encode())
    return hkdf.derive(secret)


def key_in_force(rotations: Mapping[str, Mapping[str, Any]], subscriber: str,
                 now: dt.datetime) -> tuple[int, dt.datetime | None]:
    """The key version a subscriber's deliveries use at `now` (timezone-aware), and when an announced rotation
    will change it (None if none is pending). The subscriber's own announcement wins over one for everybody (`*`).
    """
    rotation = rotations.get(subscriber) or rotations.get(ALL_SUBSCRIBERS)
    if rotation is None:
        return FIRST_VERSION, None
    effective = dt.datetime.fromisoformat(str(rotation["from"]).replace("Z", "+00:00"))
    if now >= effective:
        return int(rotation["version"]), None
    return int(rotation.get("previous") or FIRST_VERSION), effective


def key_label(version: int) -> bytes:
    """The `accord.pseudonym-key` header's value: `v<version>`."""
    return f"v{version}".encode()


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
