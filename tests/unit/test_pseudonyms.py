from __future__ import annotations

import datetime as dt

import pytest
from hypothesis import given
from hypothesis import strategies as st

from broker.domain.pseudonyms import Pseudonymiser, subscriber_key

SECRET = b"deployment pseudonym secret, 32b"
STREAM = "ukhsa.positive-tests"


def pseudonymiser(subscriber: str, stream: str = STREAM) -> Pseudonymiser:
    return Pseudonymiser(subscriber_key(SECRET, subscriber), stream)


def test_subscriber_keys_are_32_bytes_and_differ_by_subscriber_and_secret() -> None:
    leicester = subscriber_key(SECRET, "leicester-city-council")
    assert len(leicester) == 32
    assert leicester == subscriber_key(SECRET, "leicester-city-council")
    assert leicester != subscriber_key(SECRET, "nottingham-city-council")
    assert leicester != subscriber_key(b"another secret", "leicester-city-council")


def test_an_empty_secret_is_refused() -> None:
    with pytest.raises(ValueError, match="secret"):
        subscriber_key(b"", "leicester-city-council")


def test_pseudonyms_are_32_hex_characters_and_stable_within_a_subscriber() -> None:
    first = pseudonymiser("leicester-city-council")("nhs_number", "9434765919")
    again = pseudonymiser("leicester-city-council")("nhs_number", "9434765919")
    assert first == again
    assert first is not None and len(first) == 32
    int(first, 16)


def test_pseudonyms_are_unlinkable_across_subscribers_fields_and_streams() -> None:
    value = "9434765919"
    leicester = pseudonymiser("leicester-city-council")("nhs_number", value)
    assert leicester != pseudonymiser("nottingham-city-council")("nhs_number", value)
    assert leicester != pseudonymiser("leicester-city-council")("specimen_id", value)
    assert leicester != pseudonymiser("leicester-city-council", "nhstt.cases-to-trace")("nhs_number", value)


def test_none_stays_none_and_dates_use_iso_format() -> None:
    p = pseudonymiser("leicester-city-council")
    assert p("nhs_number", None) is None
    assert p("dob", dt.date(1984, 3, 7)) == p("dob", "1984-03-07")


@given(st.text(), st.text(), st.text())
def test_pseudonyms_are_deterministic_and_separate_values(field: str, value: str, other: str) -> None:
    p = pseudonymiser("leicester-city-council")
    assert p(field, value) == p(field, value)
    if other != value:
        assert p(field, value) != p(field, other)
