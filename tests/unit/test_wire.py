"""Confluent framing: what a user sees when bytes on a topic are not what an Avro consumer expects."""

from __future__ import annotations

import pytest

from broker.domain.wire import MAX_SCHEMA_ID, frame, unframe
from broker.errors import SerdeError


def test_frame_is_magic_byte_then_big_endian_id_then_body() -> None:
    assert frame(258, b"avro") == b"\x00\x00\x00\x01\x02avro"


@pytest.mark.parametrize(("schema_id", "body"), [(1, b"\x02x"), (MAX_SCHEMA_ID, b""), (0, b"\x00" * 1000)])
def test_unframe_returns_what_frame_was_given(schema_id: int, body: bytes) -> None:
    assert unframe(frame(schema_id, body)) == (schema_id, body)


@pytest.mark.parametrize(
    ("data", "expected"),
    [
        (b"", "empty message"),
        (b'{"case_id": "C1"}', "expected magic byte 0, got 0x7b (is this JSON?)"),
        (b"Obj\x01\x04\x14avro.codec", "got 0x4f (is this an Avro container file rather than one framed record?)"),
        (b"hello", "got 0x68 (is this text?)"),
        (b"\x01\x00\x00\x00\x01", "expected magic byte 0, got 0x01"),
        (b"\x00\x00\x01", "truncated header: message is 3 bytes, the Confluent header alone is 5"),
        (b"\x00\xff\xff\xff\xfe\x02", "schema id -2 is negative"),
    ],
)
def test_unframe_says_what_is_wrong(data: bytes, expected: str) -> None:
    with pytest.raises(SerdeError) as err:
        unframe(data)
    assert expected in str(err.value)


def test_header_alone_is_a_framed_empty_body() -> None:
    # An Avro body can be zero bytes (a record with no fields); truncation shows up when decoding.
    assert unframe(b"\x00\x00\x00\x00\x07") == (7, b"")


@pytest.mark.parametrize("schema_id", [-1, MAX_SCHEMA_ID + 1])
def test_frame_refuses_an_id_no_reader_could_decode(schema_id: int) -> None:
    with pytest.raises(SerdeError, match=f"got {schema_id}"):
        frame(schema_id, b"")

