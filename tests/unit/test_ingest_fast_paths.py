"""The ingest's fast paths give the answers of the plain ones they replaced: the nesting depth of a body counted
without parsing it, an outcome's JSON, a schema's row rules read once."""

from __future__ import annotations

import datetime as dt
import json
import re
from dataclasses import asdict
from typing import Any

from hypothesis import given
from hypothesis import strategies as st

from broker.api.bodies import json_depth
from broker.domain.geography import LaTable
from broker.domain.geography_files import load_la_table
from broker.domain.json_avro import from_json
from broker.domain.validation import RecordRules, Violation, validate_record
from broker.services.ingest import Outcome
from tests.unit.catalog_support import SCHEMAS

# The counting of before: one regex alternative per string character, then the brackets walked one by one.
_STRING = re.compile(rb'"(?:[^"\\]|\\.)*"', re.DOTALL)
_NOT_BRACKETS = bytes(b for b in range(256) if b not in b"[]{}")


def _depth_walked(raw: bytes) -> int:
    depth = deepest = 0
    for byte in _STRING.sub(b"", raw).translate(None, _NOT_BRACKETS):
        depth += 1 if byte in b"[{" else -1
        deepest = max(deepest, depth)
    return deepest


@given(st.lists(st.sampled_from([b"[", b"]", b"{", b"}", b'"', b"\\", b"a", b",", b"\n", b'\\"', b"[["]),
                max_size=60))
def test_the_depth_is_the_one_walked_bracket_by_bracket(pieces: list[bytes]) -> None:
    raw = b"".join(pieces)
    assert json_depth(raw) == _depth_walked(raw)


def test_brackets_inside_strings_do_not_nest() -> None:
    assert json_depth(json.dumps({"records": [{"name": "[[[{{{", "note": 'say "[" twice'}]}).encode()) == 3
    assert json_depth(b'{"a": "]]]]"}') == 1
    assert json_depth(b"[" * 40 + b"]" * 40) == 40
    assert json_depth(b'"[[[') == 3 and json_depth(b'"a" "[["') == 0  # an unclosed quote hides nothing
    assert json_depth(b"") == 0 and json_depth(b"]]][") == 0


def test_an_outcome_as_json_is_the_dataclass_as_a_dict() -> None:
    reasons = (Violation("postcode", "postcode-format", "postcode is not a UK postcode", "XX"),
               Violation("", "schema-fit", "the record does not fit", ""))
    outcome = Outcome(3, "quarantined", "quarantine.ukhsa.positive-tests", 0, 17, reasons)
    expected = {**asdict(outcome), "reasons": [asdict(r) for r in reasons]}
    assert outcome.as_json() == expected and json.dumps(outcome.as_json()) == json.dumps(expected)


def test_rules_read_once_find_what_validate_record_finds() -> None:
    schema: dict[str, Any] = json.loads((SCHEMAS / "ukhsa.positive-tests.avsc").read_text())
    table, today = load_la_table(), dt.date(2020, 6, 26)
    rules = RecordRules.of(schema)
    good, problems = from_json(schema, {
        "specimen_id": "LEI-1", "nhs_number": "9434765919", "name": "Ada Example", "dob": "1984-03-07",
        "sex": "FEMALE", "ethnicity": "H", "address": "1 Example Road", "postcode": "LE1 1AA",
        "specimen_date": "2020-06-22", "lab_report_date": "2020-06-23", "test_type": "PCR", "pillar": "PILLAR_2",
        "ltla": "E06000016", "utla": "E06000016"})
    assert problems == []
    bad = {**good, "nhs_number": "9434765918", "postcode": "nowhere", "utla": "E10000018",
           "specimen_date": dt.date(2020, 7, 1)}
    assert rules.violations(good, today, table) == validate_record(schema, good, today, table) == []
    found = rules.violations(bad, today, table)
    assert found == validate_record(schema, bad, today, table)
    assert {(v.field, v.rule) for v in found} >= {("nhs_number", "nhs-number"), ("postcode", "postcode-format"),
                                                  ("utla", "utla-consistent"), ("specimen_date", "date-not-future")}


def test_an_area_code_checked_once_is_answered_the_same_and_per_la_table() -> None:
    schema: dict[str, Any] = json.loads((SCHEMAS / "ukhsa.positive-tests.avsc").read_text())
    full, today = load_la_table(), dt.date(2020, 6, 26)
    without_leicester = LaTable([a for a in full if a.code != "E06000016"], "the table without Leicester")
    rules = RecordRules.of(schema)
    record = {"specimen_id": "LEI-1", "name": "A", "dob": dt.date(1984, 3, 7), "address": "1 Road",
              "postcode": "LE1 1AA", "specimen_date": dt.date(2020, 6, 22), "lab_report_date": dt.date(2020, 6, 23),
              "ltla": "E06000016", "utla": "E06000016"}
    assert rules.violations(record, today, full) == rules.violations(record, today, full) == []
    unknown = rules.violations(record, today, without_leicester)
    assert [(v.field, v.rule) for v in unknown] == [("ltla", "gss-known"), ("utla", "gss-known")]
    assert rules.violations(record, today, without_leicester) == unknown
    assert rules.violations(record, today, full) == []
