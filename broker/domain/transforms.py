"""The value transforms a sharing plan names: masking, age bands and postcode districts, as pure functions."""

from __future__ import annotations

import datetime as dt
import re

MASK = "****"
OLDEST_BAND = 90
UNKNOWN_AGE = "unknown"

# Outward code (area, district, optional sub-district letter) then the inward code, which is always a digit and
# two letters; letters Royal Mail never uses in a position are excluded, as in validation's postcode rule.
_POSTCODE = re.compile(
    r"(?P<outward>GIR|[A-PR-UWYZ](?:[0-9]{1,2}|[A-HK-Y][0-9]{1,2}|[0-9][A-HJKPS-UW]|[A-HK-Y][0-9][ABEHMNPRV-Y]))"
    r"[0-9][ABD-HJLNP-UW-Z]{2}"
)
_WHITESPACE = re.compile(r"\s+")


def mask(value: object, keep_last: int) -> str | None:
    """`****` followed by the last `keep_last` characters of the value; None stays None.

    At most half the characters are ever shown, so a short value under a generous `keep_last` stays hidden.
    """
    if keep_last < 0:
        raise ValueError(f"keep_last must be 0 or more, not {keep_last}")
    if value is None:
        return None
    text = value.isoformat() if isinstance(value, dt.date) else str(value)
    shown = min(keep_last, len(text) // 2)
    return MASK + text[len(text) - shown :] if shown else MASK


def age_band(born: dt.date | None, at: dt.date | None) -> str | None:
    """The 5-year band ("0-4" ... "85-89", "90+") of someone born on `born`, on the day `at`.

    None when either date is missing; "unknown" when `born` is after `at` (the data contradicts itself, and a
    band would be a guess). Raises TypeError for values that are not dates.
    """
    if born is None or at is None:
        return None
    if not isinstance(born, dt.date) or not isinstance(at, dt.date):
        raise TypeError(f"age bands need dates, not {type(born).__name__} and {type(at).__name__}")
    # Someone born on 29 February gets a year older on 1 March in common years, as UK law counts it.
    age = at.year - born.year - ((at.month, at.day) < (born.month, born.day))
    if age < 0:
        return UNKNOWN_AGE
    if age >= OLDEST_BAND:
        return f"{OLDEST_BAND}+"
    low = age - age % 5
    return f"{low}-{low + 4}"


def postcode_district(postcode: object) -> str | None:
    """The outward code of a UK postcode ("le1 1aa" -> "LE1"); None for a missing or malformed postcode."""
    if not isinstance(postcode, str):
        return None
    found = _POSTCODE.fullmatch(_WHITESPACE.sub("", postcode).upper())
    return found["outward"] if found else None
