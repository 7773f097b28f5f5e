"""Confluent wire format: magic byte 0, a 4-byte big-endian schema id, then the Avro body."""

from __future__ import annotations

import struct

from broker.errors import SerdeError

MAGIC_BYTE = 0
# Signed, as Java clients read the id; registries hand out ids in 1..2^31-1.
_HEADER = struct.Struct(">bi")
HEADER_SIZE = _HEADER.size
MAX_SCHEMA_ID = 2**31 - 1


def frame(schema_id: int, body: bytes) -> bytes:
    """The Avro `body` prefixed with the header that names its writer schema."""
    if not 0 <= schema_id <= MAX_SCHEMA_ID:
        raise SerdeError(f"schema id must be between 0 and {MAX_SCHEMA_ID}, got {schema_id}")
    return _HEADER.pack(MAGIC_BYTE, schema_id) + body


def unframe(data: bytes) -> tuple[int, bytes]:
    """The schema id and the Avro body of a Confluent-framed message."""
    return header_schema_id(data), bytes(data[HEADER_SIZE:])


def header_schema_id(data: bytes) -> int:
    """The schema id in a framed message's header; SerdeError if `data` is not framed."""
    if not data:
        raise SerdeError(
            f"empty message: expected magic byte {MAGIC_BYTE} and a 4-byte schema id before the Avro body"
        )
    if data[0] != MAGIC_BYTE:
        raise SerdeError(f"expected magic byte {MAGIC_BYTE}, got 0x{data[0]:02x}{_guess(data)}")
    if len(data) < HEADER_SIZE:
        raise SerdeError(
            f"truncated header: message is {len(data)} bytes, the Confluent header alone is {HEADER_SIZE} "
            f"(magic byte {MAGIC_BYTE} + 4-byte schema id)"
        )
    _, schema_id = _HEADER.unpack_from(data)
    schema_id = int(schema_id)
    if schema_id < 0:
        raise SerdeError(f"schema id {schema_id} is negative: the header is corrupt or was not written by a "
                         "Confluent-compatible serializer")
    return schema_id


def _guess(data: bytes) -> str:
    """A hint at what unframed bytes might be, so the user knows which producer to look at."""
    if data[:4] == b"Obj\x01":
        return " (is this an Avro container file rather than one framed record?)"
    if data[:1] in (b"{", b"["):
        return " (is this JSON?)"
    if data[:1].isascii() and data[:1].decode().isprintable():
        return " (is this text?)"
    return ""
