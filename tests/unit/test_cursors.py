"""Pull-API cursors: they round-trip, and nothing but a cursor issued for the same topic with the same secret reads."""

from __future__ import annotations

import base64
import contextlib
import json

import pytest
from hypothesis import given
from hypothesis import strategies as st

from broker.domain.cursors import MAX_CURSOR_CHARS, BadCursor, CursorCodec, advanced

CODEC = CursorCodec(b"k" * 32)
TOPIC = "deliver.leicester-city-council.dph.ukhsa.positive-tests"


@given(st.dictionaries(st.integers(0, 255), st.integers(0, 2**62), max_size=8))
def test_a_cursor_round_trips(positions: dict[int, int]) -> None:
    assert CODEC.decode(TOPIC, CODEC.encode(TOPIC, positions)) == positions


def test_a_cursor_of_another_topic_or_secret_does_not_read() -> None:
    cursor = CODEC.encode(TOPIC, {0: 10})
    with pytest.raises(BadCursor, match="signature"):
        CODEC.decode("deliver.nottingham-city-council.dph.ukhsa.positive-tests", cursor)
    with pytest.raises(BadCursor, match="signature"):
        CODEC.decode(TOPIC.replace(".dph.", ".analyst."), cursor)
    with pytest.raises(BadCursor, match="signature"):
        CursorCodec(b"another deployment's key!").decode(TOPIC, cursor)


def test_an_edited_cursor_does_not_read() -> None:
    _body, _, mac = CODEC.encode(TOPIC, {0: 10}).partition(".")
    moved = base64.urlsafe_b64encode(json.dumps({"0": 0}).encode()).decode().rstrip("=")
    with pytest.raises(BadCursor, match="signature"):
        CODEC.decode(TOPIC, f"{moved}.{mac}")


@given(st.text(max_size=200))
def test_any_text_is_a_cursor_or_a_bad_cursor_never_another_error(text: str) -> None:
    with contextlib.suppress(BadCursor):
        CODEC.decode(TOPIC, text)


def test_an_oversized_cursor_is_refused_unread() -> None:
    with pytest.raises(BadCursor, match="at most"):
        CODEC.decode(TOPIC, "A" * (MAX_CURSOR_CHARS + 1))


def test_advancing_never_moves_a_partition_back() -> None:
    assert advanced({0: 5}, 0, 9) == {0: 10}
    assert advanced({0: 5}, 1, 0) == {0: 5, 1: 1}
    assert advanced({0: 12}, 0, 3) == {0: 12}
