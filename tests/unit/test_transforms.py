from __future__ import annotations

import datetime as dt
import re

import pytest
from hypothesis import given
from hypothesis import strategies as st

from broker.domain.transforms import age_band, mask, postcode_district

BAND = re.compile(r"(\d+)-(\d+)|90\+|unknown")


@pytest.mark.parametrize(
    ("value", "keep_last", "masked"),
    [("9434765919", 4, "****5919"), ("9434765919", 0, "****"), (1234567890, 2, "****90"),
     (dt.date(1984, 3, 7), 2, "****07"), ("AB12", 4, "****12"), ("X", 3, "****")],
)
def test_mask_shows_at_most_the_last_characters_and_never_more_than_half(
    value: object, keep_last: int, masked: str
) -> None:
    assert mask(value, keep_last) == masked


def test_mask_keeps_none_and_refuses_a_negative_count() -> None:
    assert mask(None, 4) is None
    with pytest.raises(ValueError, match="keep_last"):
        mask("abc", -1)


@pytest.mark.parametrize(
    ("born", "at", "band"),
    [
        (dt.date(1990, 6, 24), dt.date(2020, 6, 24), "30-34"),  # 30th birthday that day
        (dt.date(1990, 6, 25), dt.date(2020, 6, 24), "25-29"),  # 30 tomorrow
        (dt.date(2020, 6, 24), dt.date(2020, 6, 24), "0-4"),
        (dt.date(2015, 6, 24), dt.date(2020, 6, 24), "5-9"),
        (dt.date(1930, 6, 25), dt.date(2020, 6, 24), "85-89"),
        (dt.date(1930, 6, 24), dt.date(2020, 6, 24), "90+"),
        (dt.date(1910, 1, 1), dt.date(2020, 6, 24), "90+"),
        (dt.date(2000, 2, 29), dt.date(2005, 2, 28), "0-4"),  # leap-day births turn 5 on 1 March
        (dt.date(2000, 2, 29), dt.date(2005, 3, 1), "5-9"),
        (dt.date(2020, 6, 25), dt.date(2020, 6, 24), "unknown"),
    ],
)
def test_age_band_at_boundaries(born: dt.date, at: dt.date, band: str) -> None:
    assert age_band(born, at) == band


def test_age_band_of_a_missing_date_is_none_and_of_a_non_date_is_an_error() -> None:
    assert age_band(None, dt.date(2020, 6, 24)) is None
    assert age_band(dt.date(1990, 1, 1), None) is None
    with pytest.raises(TypeError, match="dates"):
        age_band("1990-01-01", dt.date(2020, 6, 24))  # type: ignore[arg-type]


def test_age_band_accepts_timestamps() -> None:
    born = dt.datetime(1990, 6, 24, 23, 59, tzinfo=dt.UTC)
    assert age_band(born, dt.date(2020, 6, 24)) == "30-34"


@given(st.dates(), st.dates())
def test_age_band_is_total_and_bands_hold_the_age(born: dt.date, at: dt.date) -> None:
    band = age_band(born, at)
    assert band is not None
    found = BAND.fullmatch(band)
    assert found is not None
    if born > at:
        assert band == "unknown"
    elif found[1]:
        low, high = int(found[1]), int(found[2])
        assert high == low + 4 and low % 5 == 0
        assert at.year - born.year - 1 <= high and at.year - born.year >= low


@pytest.mark.parametrize(
    ("postcode", "district"),
    [("LE1 1AA", "LE1"), ("le1 1aa", "LE1"), ("LE11AA", "LE1"), ("LE11 1AA", "LE11"), ("B1 1BB", "B1"),
     ("EC1A 1BB", "EC1A"), ("M1 1AE", "M1"), ("SW1A 2AA", "SW1A"), ("W1A 0AX", "W1A"), ("CR2 6XH", "CR2"),
     ("DN55 1PT", "DN55"), ("  ng7  2rd ", "NG7"), ("GIR 0AA", "GIR")],
)
def test_postcode_district_is_the_upper_cased_outward_code(postcode: str, district: str) -> None:
    assert postcode_district(postcode) == district


@pytest.mark.parametrize("garbage", ["", "   ", "LE1", "not a postcode", "LE1 1A", "1LE 1AA", "LE1 1CA", "QE1 1AA",
                                     "LE1 1AAA", None, 12345])
def test_postcode_district_of_garbage_is_none(garbage: object) -> None:
    assert postcode_district(garbage) is None


@given(st.text())
def test_postcode_district_never_raises(text: str) -> None:
    district = postcode_district(text)
    assert district is None or (district.isupper() and 1 <= len(district) <= 4)
