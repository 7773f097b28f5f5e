"""Row-level quality rules for template streams: each failure is a Violation, never a silent drop."""

from __future__ import annotations

import datetime as dt
import re
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any

from broker.domain.geography import LSOA_PREFIXES, LTLA_PREFIXES, UTLA_PREFIXES, LaTable, is_well_formed
from broker.domain.optout import NHS_NUMBER_FIELD, check_digit, normalise

REQUIRED = "required"
GSS_FORMAT = "gss-format"
GSS_KNOWN = "gss-known"
GSS_RETIRED = "gss-retired"
UTLA_CONSISTENT = "utla-consistent"
POSTCODE_FORMAT = "postcode-format"
DATE_NOT_FUTURE = "date-not-future"
NHS_NUMBER = "nhs-number"
CODE_LIST = "code-list"
MAX_LENGTH = "max-length"

# A field's declared limits in its schema: `accord.max_length` (characters; DEFAULT_MAX_LENGTH when not declared),
# `accord.codes` (the values a coded string may take) and `accord.format` ("nhs-number").
MAX_LENGTH_KEY = "accord.max_length"
CODES_KEY = "accord.codes"
FORMAT_KEY = "accord.format"
NHS_NUMBER_FORMAT = "nhs-number"
DEFAULT_MAX_LENGTH = 1_000
AREA_CODE_CACHED = 16        # characters: a GSS code has 9; longer text is checked each time, not kept
AREA_CODES_KEPT = 100_000    # area codes whose checks are kept (England has about 36,000 LSOAs)

DIRECT_IDENTIFIER = "direct-identifier"
LTLA_TAG = "geography:ltla"
UTLA_TAG = "geography:utla"
POSTCODE_TAG = "geography:postcode"
GSS_LEVEL_PREFIXES: Mapping[str, frozenset[str]] = {
    "geography:lsoa": LSOA_PREFIXES,
    "geography:msoa": frozenset({"E02"}),
    LTLA_TAG: LTLA_PREFIXES,
    UTLA_TAG: UTLA_PREFIXES,
    "geography:icb": frozenset({"E54"}),
}

EXCERPT_MAX = 40
# Outward code (area, district, optional sub-district) then inward code; letters that Royal Mail never
# uses in a position are excluded so that typos like O-for-0 are caught. GIR 0AA is the one legacy exception.
_POSTCODE = re.compile(
    r"GIR ?0AA|[A-PR-UWYZ](?:[0-9]{1,2}|[A-HK-Y][0-9]{1,2}|[0-9][A-HJKPS-UW]|[A-HK-Y][0-9][ABEHMNPRV-Y])"
    r" ?[0-9][ABD-HJLNP-UW-Z]{2}"
)


@dataclass(frozen=True)
class Violation:
    """One rule a record broke; `value_excerpt` is cut short and masked for direct identifiers."""

    field: str
    rule: str
    message: str
    value_excerpt: str


def field_tags(schema: Mapping[str, Any]) -> dict[str, list[str]]:
    """Each field's `accord.tags` (empty list when untagged), in schema order."""
    return {field["name"]: list(field.get("accord.tags", [])) for field in schema.get("fields", [])}


def validate_record(
    schema: Mapping[str, Any], record: Mapping[str, Any], today: dt.date, la_table: LaTable
) -> list[Violation]:
    """Every violation in `record`, in schema field order; an empty list means the row may be routed."""
    cached = _RULES.get(id(schema))
    if cached is None or cached[0] is not schema:  # the gate checks many records of few schemas
        if len(_RULES) > 64:
            _RULES.clear()
        cached = _RULES[id(schema)] = (schema, RecordRules.of(schema))
    return cached[1].violations(record, today, la_table)


_RULES: dict[int, tuple[Mapping[str, Any], RecordRules]] = {}


@dataclass(frozen=True)
class _FieldRules:
    """What can be wrong with one field, worked out from its schema entry, so a record's checks skip what cannot."""

    name: str
    required: bool
    declared: Mapping[str, Any]
    tagged: bool             # a geography tag: its value is checked against its level
    longest: int             # a longer string breaks its declared length
    listed: bool             # coded, or an NHS number: every string value is checked further
    area_code: bool          # only GSS tags: what its checks find depends on the code alone (and the LA table)

    @classmethod
    def of(cls, name: str, tags: list[str], required: bool, declared: Mapping[str, Any]) -> _FieldRules:
        tagged = any(tag in GSS_LEVEL_PREFIXES or tag == POSTCODE_TAG for tag in tags)
        listed = declared.get(CODES_KEY) is not None or declared.get(FORMAT_KEY) == NHS_NUMBER_FORMAT or \
            name == NHS_NUMBER_FIELD
        area_code = any(tag in GSS_LEVEL_PREFIXES for tag in tags) and POSTCODE_TAG not in tags
        return cls(name, required, declared, tagged, int(declared.get(MAX_LENGTH_KEY, DEFAULT_MAX_LENGTH)), listed,
                   area_code)


@dataclass(frozen=True)
class RecordRules:
    """A schema's row rules read once, so that checking each record of a request does not read the schema again."""

    tags: dict[str, list[str]]
    fields: tuple[_FieldRules, ...]   # tagged fields in schema order, then required untagged ones
    ltla_field: str | None
    utla_field: str | None
    # What the checks found in each area code seen (by LA table, field and code): a request's records share a few
    # hundred codes, each checked once. Area codes are not personal data; the cache is bounded.
    _areas: dict[tuple[LaTable, str, str], tuple[Violation, ...]] = field(default_factory=dict, compare=False,
                                                                          repr=False)
    _clean: tuple[tuple[str, Clean], ...] = field(default=(), init=False, compare=False, repr=False)

    @classmethod
    def of(cls, schema: Mapping[str, Any]) -> RecordRules:
        tags = field_tags(schema)
        required = list(schema.get("accord.required", []))
        declared = {field["name"]: field for field in schema.get("fields", [])}
        checked = (*tags, *(name for name in required if name not in tags))
        return cls(tags, tuple(_FieldRules.of(name, tags.get(name, []), name in required, declared.get(name, {}))
                               for name in checked),
                   _first_tagged(tags, LTLA_TAG), _first_tagged(tags, UTLA_TAG))

    def __post_init__(self) -> None:
        quick = tuple((rules.name, _clean_test(rules, self._areas)) for rules in self.fields)
        object.__setattr__(self, "_clean", quick)

    def violations(self, record: Mapping[str, Any], today: dt.date, la_table: LaTable) -> list[Violation]:
        """Every violation in `record`, in schema field order; an empty list means the row may be routed."""
        # Most records break no rule: each field's quick test (_clean_test) says so without building a reason; only
        # a record one of them is unsure of goes through the checks that say what is wrong.
        get = record.get
        for name, clean in self._clean:
            if not clean(get(name), today, la_table):
                return self.all_violations(record, today, la_table)
        if self.ltla_field is None or self.utla_field is None:
            return []
        ltla, utla = get(self.ltla_field), get(self.utla_field)
        if ltla is None or utla is None or utla == la_table.upper_tier_of(ltla):
            return []
        return self.all_violations(record, today, la_table)

    def all_violations(self, record: Mapping[str, Any], today: dt.date, la_table: LaTable) -> list[Violation]:
        """`violations` found by running every check of every field (what the quick tests stand in for)."""
        rows = _Row(record, self.tags)
        violations: list[Violation] = []
        for rules in self.fields:
            name, value = rules.name, record.get(rules.name)
            if rules.required and is_blank(value):
                violations.append(rows.violation(name, REQUIRED, f"{name} is required: give a non-empty value"))
            elif value is not None:
                # The checks below find nothing in a short uncoded string or a number of an untagged field: they
                # are skipped there, which on a usual record is most of its fields.
                if isinstance(value, str) and (rules.listed or len(value) > rules.longest):
                    violations.extend(_check_declared(rows, name, rules.declared))
                if rules.area_code and type(value) is str and len(value) <= AREA_CODE_CACHED:
                    violations.extend(self._area_checked(rows, name, value, today, la_table))
                elif rules.tagged or isinstance(value, dt.date):
                    violations.extend(_check_value(rows, name, today, la_table))
        # A code already reported as missing, malformed or unknown has no upper tier worth comparing.
        failed = {v.field for v in violations if v.rule in (REQUIRED, GSS_FORMAT, GSS_KNOWN, GSS_RETIRED)}
        violations.extend(_check_utla_consistent(rows, self.ltla_field, self.utla_field, la_table, failed))
        return violations


    def _area_checked(self, rows: _Row, name: str, value: str, today: dt.date,
                      la_table: LaTable) -> tuple[Violation, ...]:
        key = (la_table, name, value)
        found = self._areas.get(key)
        if found is None:
            if len(self._areas) >= AREA_CODES_KEPT:
                self._areas.clear()
            found = self._areas[key] = tuple(_check_value(rows, name, today, la_table))
        return found


Clean = Callable[[Any, dt.date, LaTable], bool]


def _clean_test(rules: _FieldRules, areas: dict[tuple[LaTable, str, str], tuple[Violation, ...]]) -> Clean:
    """A quick test that the field's checks would find nothing in a value: True only when they surely would not,
    False when they might find something (then they are run to say what). Built for the checks the field has."""
    text = _clean_text(rules, areas)
    required, tagged = rules.required, rules.tagged

    def clean(value: Any, today: dt.date, la_table: LaTable) -> bool:
        if type(value) is str:
            return text(value, la_table)
        if value is None:
            return not required
        if tagged or isinstance(value, str):
            return False
        return not isinstance(value, dt.date) or (type(value) is dt.date and value <= today)

    return clean


def _clean_text(rules: _FieldRules,
                areas: dict[tuple[LaTable, str, str], tuple[Violation, ...]]) -> Callable[[str, LaTable], bool]:
    name, required, longest, declared = rules.name, rules.required, rules.longest, rules.declared
    codes = declared.get(CODES_KEY)
    if codes is not None and all(isinstance(code, str) for code in codes):
        codes = frozenset(codes)
    nhs = declared.get(FORMAT_KEY) == NHS_NUMBER_FORMAT or name == NHS_NUMBER_FIELD
    if rules.area_code and not required and codes is None and not nhs:
        shortest = min(longest, AREA_CODE_CACHED)
        return lambda value, la_table: len(value) <= shortest and areas.get((la_table, name, value)) == ()
    if not rules.tagged and codes is None and not nhs:
        if required:
            return lambda value, _: len(value) <= longest and value != "" and not value.isspace()
        return lambda value, _: len(value) <= longest
    postcode_only = rules.tagged and not rules.area_code and not any(
        tag in GSS_LEVEL_PREFIXES for tag in declared.get("accord.tags", []))

    def text_clean(value: str, la_table: LaTable) -> bool:
        if (required and (value == "" or value.isspace())) or len(value) > longest or \
                (codes is not None and value not in codes) or (nhs and not _plain_nhs(value)):
            return False
        if rules.area_code:
            return len(value) <= AREA_CODE_CACHED and areas.get((la_table, name, value)) == ()
        if rules.tagged:
            return postcode_only and _POSTCODE.fullmatch(value.upper()) is not None
        return True

    return text_clean


def _plain_nhs(value: str) -> bool:
    """`value` is an NHS number as `_check_nhs_number` wants it: 10 digits alone, the last the check digit."""
    return len(value) == 10 and value.isascii() and value.isdigit() and check_digit(value[:9]) == int(value[9])


def _first_tagged(tags: Mapping[str, list[str]], tag: str) -> str | None:
    return next((name for name, tagged in tags.items() if tag in tagged), None)


@dataclass(frozen=True)
class _Row:
    record: Mapping[str, Any]
    tags: dict[str, list[str]]

    def violation(self, name: str, rule: str, message: str) -> Violation:
        masked = DIRECT_IDENTIFIER in self.tags.get(name, [])
        return Violation(name, rule, message, value_excerpt(self.record.get(name), masked=masked))


def value_excerpt(value: object, *, masked: bool = False) -> str:
    """At most EXCERPT_MAX characters of `value`; when masked, only the last 2-3 characters show."""
    if value is None:
        return ""
    try:
        text = utf8_safe(value.isoformat() if isinstance(value, dt.date) else str(value))
    except ValueError:  # str() refuses an int of more than 4300 digits
        text = f"<an integer of {value.bit_length()} bits>" if isinstance(value, int) else "<unprintable value>"
    if not masked:
        return text[:EXCERPT_MAX]
    # Short identifiers show fewer characters so that most of the value always stays hidden.
    keep = 3 if len(text) >= 8 else 2 if len(text) >= 4 else 0
    hidden = "*" * (len(text) - keep) + text[len(text) - keep :]
    return hidden[-EXCERPT_MAX:]


def utf8_safe(text: str, *, strict: bool = False) -> str:
    """`text` with any lone surrogate (which JSON can carry but UTF-8 cannot) written as an escape like \\ud800,
    so it can go into a Kafka header or a JSON response; with `strict`, ValueError saying where the first one is."""
    if text.isascii():  # known to Python without looking at the characters: most text, and it holds no surrogate
        return text
    try:
        text.encode("utf-8")
    except UnicodeEncodeError as exc:
        if strict:
            raise ValueError(f"text holds a lone surrogate {text[exc.start]!r} at character {exc.start}, which is not "
                             "Unicode; send UTF-8 text") from None
        return text.encode("utf-8", "backslashreplace").decode("utf-8")
    return text


def is_blank(value: object) -> bool:
    # Whitespace-only text is as useless to a subscriber as an empty string (a blank postcode cannot be routed).
    return value is None or (isinstance(value, str) and not value.strip())


def _check_value(rows: _Row, name: str, today: dt.date, la_table: LaTable) -> Iterator[Violation]:
    value = rows.record[name]
    for tag in rows.tags.get(name, []):
        if tag in GSS_LEVEL_PREFIXES:
            yield from _check_gss(rows, name, tag, la_table)
        elif tag == POSTCODE_TAG and not (isinstance(value, str) and _POSTCODE.fullmatch(value.upper())):
            yield rows.violation(name, POSTCODE_FORMAT, f"{name} is not a UK postcode such as SW1A 1AA")
    if _is_future(value, today):
        yield rows.violation(name, DATE_NOT_FUTURE, f"{name} is later than {today.isoformat()}: check the clock")


def _check_declared(rows: _Row, name: str, field: Mapping[str, Any]) -> Iterator[Violation]:
    """The limits a schema declares for a string field: its length, its code list, its format."""
    value = rows.record[name]
    if not isinstance(value, str):
        return
    limit = int(field.get(MAX_LENGTH_KEY, DEFAULT_MAX_LENGTH))
    if len(value) > limit:
        yield rows.violation(name, MAX_LENGTH, f"{name} is {len(value)} characters long; at most {limit} are allowed")
        return  # a value that long is no code and no NHS number either: one reason is enough
    codes = field.get(CODES_KEY)
    if codes is not None and value not in codes:
        yield rows.violation(name, CODE_LIST, f"{name} is not in its code list ({_listed(codes)})")
    if field.get(FORMAT_KEY) == NHS_NUMBER_FORMAT or name == NHS_NUMBER_FIELD:
        yield from _check_nhs_number(rows, name, value)


def _check_nhs_number(rows: _Row, name: str, value: str) -> Iterator[Violation]:
    try:
        digits = normalise(value)
    except ValueError as exc:  # the message names the fault, never the number
        yield rows.violation(name, NHS_NUMBER, f"{name} is {exc}")
        return
    if digits != value:
        yield rows.violation(name, NHS_NUMBER, f"{name} must be the 10 digits alone, without spaces or hyphens")


def _listed(codes: Any) -> str:
    shown = [str(code) for code in codes]
    return ", ".join(shown) if len(shown) <= 20 else ", ".join(shown[:20]) + f" and {len(shown) - 20} more"


def _check_gss(rows: _Row, name: str, tag: str, la_table: LaTable) -> Iterator[Violation]:
    value = rows.record[name]
    prefixes = GSS_LEVEL_PREFIXES[tag]
    level = tag.partition(":")[2].upper()
    if not (is_well_formed(value) and value[:3] in prefixes):
        allowed = ", ".join(sorted(prefixes))
        yield rows.violation(name, GSS_FORMAT, f"{name} is not a {level} GSS code (9 characters, prefix {allowed})")
    elif tag in (LTLA_TAG, UTLA_TAG) and not la_table.is_known(value):
        # A code a reorganisation retired is the publisher's out-of-date reference data, not a typo: name its successor.
        rule = GSS_RETIRED if la_table.retirement(value) else GSS_KNOWN
        yield rows.violation(name, rule, f"{name}: {la_table.why_unknown(value)}")


def _check_utla_consistent(rows: _Row, ltla_field: str | None, utla_field: str | None, la_table: LaTable,
                           failed: set[str]) -> Iterator[Violation]:
    if ltla_field is None or utla_field is None or {ltla_field, utla_field} & failed:
        return
    ltla, utla = rows.record.get(ltla_field), rows.record.get(utla_field)
    if ltla is None or utla is None:
        return
    expected = la_table.upper_tier_of(ltla)
    if utla != expected:
        yield rows.violation(
            utla_field, UTLA_CONSISTENT, f"{utla_field} should be {expected}, the upper tier of {ltla_field} {ltla}"
        )


def _is_future(value: object, today: dt.date) -> bool:
    # datetime subclasses date, so it must be tested first; a timestamp counts as future only after
    # the end of `today` in UTC, because publishers stamp rows in UTC whatever the local time.
    if isinstance(value, dt.datetime):
        aware = value if value.tzinfo is not None else value.replace(tzinfo=dt.UTC)
        return aware >= dt.datetime.combine(today + dt.timedelta(days=1), dt.time.min, tzinfo=dt.UTC)
    return isinstance(value, dt.date) and value > today
