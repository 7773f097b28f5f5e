"""Pull-API cursors: where a subscriber's next read of one delivery topic starts, as an opaque, signed token.

A cursor holds the next offset of each partition of the topic (delivery topics have one partition today; a cursor
names any number). It is the base64url of that JSON map, a dot, and the base64url of an HMAC-SHA256 over the topic
and the map, so a subscriber can neither forge one (skip a fence, read offsets it was never sent) nor replay one
made for another body's or role's topic: either fails to verify, and the caller gets a 400, never a read.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import json
from collections.abc import Mapping

from broker.errors import AccordError

MAX_CURSOR_CHARS = 4096   # far more than any real topic's partitions need; a larger header is refused unread
MAX_PARTITIONS = 256
MAC_BYTES = 16            # 128 bits of HMAC-SHA256: forging one is out of reach, and cursors stay short


class BadCursor(AccordError):
    """A cursor this deployment did not issue for this topic (or not a cursor at all)."""


Positions = Mapping[int, int]


class CursorCodec:
    """Signs and verifies cursors with one deployment secret (every API process of a deployment shares it)."""

    def __init__(self, secret: bytes) -> None:
        if len(secret) < 16:
            raise ValueError("a cursor secret needs at least 16 bytes")
        self._secret = secret

    def encode(self, topic: str, positions: Positions) -> str:
        payload = json.dumps({str(p): int(o) for p, o in sorted(positions.items())}, separators=(",", ":")).encode()
        return f"{_b64(payload)}.{_b64(self._mac(topic, payload))}"

    def decode(self, topic: str, cursor: str) -> dict[int, int]:
        """The positions of a cursor issued for `topic`; BadCursor for anything else."""
        if len(cursor) > MAX_CURSOR_CHARS:
            raise BadCursor(f"a cursor is at most {MAX_CURSOR_CHARS} characters")
        body, dot, mac = cursor.partition(".")
        if not dot:
            raise BadCursor("not a cursor this service issued (no signature)")
        payload, signature = _unb64(body), _unb64(mac)
        if not hmac.compare_digest(signature, self._mac(topic, payload)):
            raise BadCursor("not a cursor this service issued for this delivery (its signature does not verify)")
        return _positions(payload)

    def _mac(self, topic: str, payload: bytes) -> bytes:
        # The topic is signed with the positions: a cursor of another body's (or role's) topic does not verify.
        return hmac.new(self._secret, topic.encode() + b"\n" + payload, hashlib.sha256).digest()[:MAC_BYTES]


def advanced(positions: Positions, partition: int, offset: int) -> dict[int, int]:
    """`positions` after the record at (`partition`, `offset`) has been handed over."""
    return {**positions, partition: max(offset + 1, positions.get(partition, 0))}


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).decode().rstrip("=")


def _unb64(text: str) -> bytes:
    try:
        return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))
    except (binascii.Error, ValueError) as exc:
        raise BadCursor("not a cursor this service issued (not base64url)") from exc


def _positions(payload: bytes) -> dict[int, int]:
    # Signed by us, so well formed; checked anyway, since a leaked secret must not turn into a 500.
    try:
        raw = json.loads(payload)
        positions = {int(p): int(o) for p, o in raw.items()}
    except (ValueError, TypeError, AttributeError) as exc:
        raise BadCursor("the cursor's positions do not read") from exc
    if len(positions) > MAX_PARTITIONS or any(p < 0 or o < 0 for p, o in positions.items()):
        raise BadCursor("the cursor's positions are out of range")
    return positions
