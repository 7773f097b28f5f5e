from __future__ import annotations

import dataclasses
import datetime as dt
from typing import Any

import pytest

from broker.domain.geography import LaTable
from broker.domain.geography_files import load_la_table
from broker.domain.json_avro import from_json
from broker.domain.validation import Violation, field_tags, validate_record, value_excerpt

TODAY = dt.date(2020, 6, 26)
UTC = dt.UTC

SCHEMA: dict[str, Any] = {
    "type": "record",
    "name": "Probe",
    "accord.required": ["case_id", "postcode", "seen"],
    "fields": [
        {"name": "case_id", "type": "string", "doc": "id", "accord.tags": ["direct-identifier"]},
        {"name": "postcode", "type": "string", "doc": "pc", "accord.tags": ["quasi-identifier", "geography:postcode"]},
        {"name": "lsoa", "type": ["null", "string"], "default": None, "doc": "l", "accord.tags": ["geography:lsoa"]},
        {"name": "msoa", "type": ["null", "string"], "default": None, "doc": "m", "accord.tags": ["geography:msoa"]},
        {"name": "ltla", "type": ["null", "string"], "default": None, "doc": "lt", "accord.tags": ["geography:ltla"]},
        {"name": "utla", "type": ["null", "string"], "default": None, "doc": "ut", "accord.tags": ["geography:utla"]},
        {"name": "icb", "type": ["null", "string"], "default": None, "doc": "i", "accord.tags": ["geography:icb"]},
        {"name": "seen", "type": {"type": "int", "logicalType": "date"}, "doc": "d"},
        {"name": "at", "type": ["null", {"type": "long", "logicalType": "timestamp-millis"}], "default": None,
         "doc": "t"},
        {"name": "note", "type": ["null", "string"], "default": None, "doc": "n"},
    ],
}


@pytest.fixture(scope="module")
def table() -> LaTable:
    return load_la_table()


def record(**changes: object) -> dict[str, object]:
    base: dict[str, object] = {
        "case_id": "AB123456", "postcode": "LE1 6ZG", "lsoa": "E01013627", "msoa": "E02002830",
        "ltla": "E07000130", "utla": "E10000018", "icb": "E54000015", "seen": TODAY,
        "at": dt.datetime(2020, 6, 26, 9, 30, tzinfo=UTC), "note": None,
    }
    base.update(changes)
    return base


def rules(violations: list[Violation]) -> list[tuple[str, str]]:
    return [(v.field, v.rule) for v in violations]


def test_field_tags_lists_every_field_in_order() -> None:
    tags = field_tags(SCHEMA)
    assert list(tags) == [f["name"] for f in SCHEMA["fields"]]
    assert tags["postcode"] == ["quasi-identifier", "geography:postcode"]
    assert tags["note"] == []


def test_valid_record_has_no_violations(table: LaTable) -> None:
    assert validate_record(SCHEMA, record(), TODAY, table) == []
    assert validate_record(SCHEMA, record(lsoa=None, msoa=None, ltla=None, utla=None, icb=None), TODAY, table) == []


@pytest.mark.parametrize("value", [None, "", "   "])
def test_required_field_blank(table: LaTable, value: object) -> None:
    # A blank postcode is reported once, as missing, not again as a malformed postcode.
    assert rules(validate_record(SCHEMA, record(postcode=value), TODAY, table)) == [("postcode", "required")]


def test_required_field_absent(table: LaTable) -> None:
    row = record()
    del row["seen"], row["case_id"]
    violations = validate_record(SCHEMA, row, TODAY, table)
    assert rules(violations) == [("case_id", "required"), ("seen", "required")]
    assert all(v.value_excerpt == "" for v in violations)


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("lsoa", "E02002830"), ("lsoa", "E0101362"), ("msoa", "E01013627"), ("icb", "E06000016"),
        ("ltla", "E10000018"), ("ltla", "e07000130"), ("ltla", 7000130), ("utla", "E07000130"),
        ("utla", "E12000004"),
    ],
)
def test_gss_code_of_the_wrong_level_or_shape(table: LaTable, field: str, value: object) -> None:
    assert rules(validate_record(SCHEMA, record(**{field: value}), TODAY, table)) == [(field, "gss-format")]


@pytest.mark.parametrize(("field", "value"), [("ltla", "E07000999"), ("utla", "E10000099"), ("ltla", "N09000099")])
def test_well_formed_but_unknown_la(table: LaTable, field: str, value: str) -> None:
    violations = validate_record(SCHEMA, record(**{field: value}), TODAY, table)
    assert rules(violations) == [(field, "gss-known")]
    assert violations[0].message == f"{field}: {value} is not in the LA table (ONS December 2023): check the code " \
                                    "and its vintage"


def test_a_code_retired_in_2023_is_refused_naming_its_successor(table: LaTable) -> None:
    violations = validate_record(SCHEMA, record(ltla="E07000026", utla="E10000006"), TODAY, table)  # Allerdale
    assert rules(violations) == [("ltla", "gss-retired"), ("utla", "gss-retired")]
    assert violations[0].message == ("ltla: E07000026 (Allerdale) was abolished on 2023-04-01; its successor is "
                                     "E06000063 (Cumberland) (ONS December 2023)")
    assert "its successors are E06000063 (Cumberland) and E06000064 (Westmorland and Furness)" in \
        violations[1].message
    assert validate_record(SCHEMA, record(ltla="E06000063", utla="E06000063"), TODAY, table) == []


@pytest.mark.parametrize("lsoa", ["E01013627", "W01001694"])
def test_english_and_welsh_lsoas_are_lsoa_codes(table: LaTable, lsoa: str) -> None:
    assert validate_record(SCHEMA, record(lsoa=lsoa), TODAY, table) == []


@pytest.mark.parametrize(
    ("ltla", "utla", "expected"),
    [("E07000130", "E06000016", "E10000018"), ("E06000016", "E10000018", "E06000016"),
     ("E07000170", "E10000018", "E10000024")],
)
def test_utla_must_be_the_ltlas_upper_tier(table: LaTable, ltla: str, utla: str, expected: str) -> None:
    violations = validate_record(SCHEMA, record(ltla=ltla, utla=utla), TODAY, table)
    assert rules(violations) == [("utla", "utla-consistent")]
    assert expected in violations[0].message


@pytest.mark.parametrize(("ltla", "utla"), [("E06000016", "E06000016"), ("E07000176", "E10000024"),
                                             ("E09000001", "E09000001"), ("S12000036", "S12000036")])
def test_consistent_tiers_pass(table: LaTable, ltla: str, utla: str) -> None:
    assert validate_record(SCHEMA, record(ltla=ltla, utla=utla), TODAY, table) == []


@pytest.mark.parametrize(
    "postcode", ["SW1A 1AA", "M1 1AE", "B33 8TH", "CR2 6XH", "DN55 1PT", "W1A 0AX", "EC1A 1BB", "le1 6zg", "LE16ZG",
                 "GIR 0AA"],
)
def test_postcode_shapes_accepted(table: LaTable, postcode: str) -> None:
    assert validate_record(SCHEMA, record(postcode=postcode), TODAY, table) == []


@pytest.mark.parametrize(
    "postcode", ["LE1", "LE1 6Z", "1LE 6ZG", "LE1 6ZGX", "QE1 6ZG", "LE1 6CG", "LE1  6ZG", "LE1-6ZG", 12345],
)
def test_postcode_shapes_refused(table: LaTable, postcode: object) -> None:
    assert rules(validate_record(SCHEMA, record(postcode=postcode), TODAY, table)) == [("postcode", "postcode-format")]


@pytest.mark.parametrize(
    ("changes", "future"),
    [
        ({"seen": TODAY}, []),
        ({"seen": TODAY + dt.timedelta(days=1)}, [("seen", "date-not-future")]),
        ({"at": dt.datetime(2020, 6, 26, 23, 59, 59, 999000, tzinfo=UTC)}, []),
        ({"at": dt.datetime(2020, 6, 27, 0, 0, tzinfo=UTC)}, [("at", "date-not-future")]),
        # 00:30 on the 27th in BST is 23:30 on the 26th in UTC, so still today.
        ({"at": dt.datetime(2020, 6, 27, 0, 30, tzinfo=dt.timezone(dt.timedelta(hours=1)))}, []),
        ({"at": dt.datetime(2020, 6, 27, 0, 30)}, [("at", "date-not-future")]),
    ],
)
def test_dates_and_timestamps_may_not_be_in_the_future(
    table: LaTable, changes: dict[str, object], future: list[tuple[str, str]]
) -> None:
    assert rules(validate_record(SCHEMA, record(**changes), TODAY, table)) == future


def test_several_violations_come_in_schema_order(table: LaTable) -> None:
    row = record(case_id="", postcode="nope", lsoa="E02002830", ltla="E07000129", utla="E06000016",
                 seen=dt.date(2021, 1, 1))
    assert rules(validate_record(SCHEMA, row, TODAY, table)) == [
        ("case_id", "required"), ("postcode", "postcode-format"), ("lsoa", "gss-format"),
        ("seen", "date-not-future"), ("utla", "utla-consistent"),
    ]


def test_direct_identifiers_are_masked_in_excerpts(table: LaTable) -> None:
    schema = {**SCHEMA, "fields": [*SCHEMA["fields"], {"name": "phone", "type": "string", "doc": "p",
                                                     "accord.tags": ["direct-identifier", "geography:postcode"]}]}
    violations = validate_record(schema, record(phone="07700900123"), TODAY, table)
    assert [(v.rule, v.value_excerpt) for v in violations] == [("postcode-format", "********123")]
    assert "07700900" not in violations[0].message


@pytest.mark.parametrize(
    ("value", "masked", "expected"),
    [
        ("9434765919", True, "*******919"),
        ("AB12", True, "**12"),
        ("A1", True, "**"),
        ("x" * 60 + "tail", True, "*" * 37 + "ail"),
        ("x" * 60, False, "x" * 40),
        (dt.date(2020, 6, 26), False, "2020-06-26"),
        (None, True, ""),
    ],
)
def test_value_excerpt(value: object, masked: bool, expected: str) -> None:
    assert value_excerpt(value, masked=masked) == expected


def test_long_values_are_cut_in_violations(table: LaTable) -> None:
    (violation,) = validate_record(SCHEMA, record(postcode="P" * 100), TODAY, table)
    assert violation.value_excerpt == "P" * 40


def test_violation_is_frozen() -> None:
    violation = Violation("f", "required", "m", "")
    with pytest.raises(dataclasses.FrozenInstanceError):
        violation.rule = "other"  # type: ignore[misc]


CODED: dict[str, Any] = {
    "type": "record", "name": "Coded", "fields": [
        {"name": "nhs_number", "type": ["null", "string"], "default": None, "accord.format": "nhs-number",
         "accord.tags": ["direct-identifier"]},
        {"name": "ethnicity", "type": ["null", "string"], "default": None, "accord.codes": ["A", "B", "Z", "99"]},
        {"name": "name", "type": "string", "accord.max_length": 5},
        {"name": "note", "type": ["null", "string"], "default": None},
        {"name": "sex", "type": {"type": "enum", "name": "Sex", "symbols": ["FEMALE", "MALE"]}},
        {"name": "seen", "type": {"type": "int", "logicalType": "date"}},
        {"name": "at", "type": ["null", {"type": "long", "logicalType": "timestamp-millis"}], "default": None},
    ],
}


def coded(**changes: object) -> dict[str, object]:
    return {"nhs_number": "9434765919", "ethnicity": "A", "name": "Ada", "note": None, **changes}


def test_declared_limits_pass_for_good_values(table: LaTable) -> None:
    assert validate_record(CODED, coded(), TODAY, table) == []
    assert validate_record(CODED, coded(nhs_number=None, ethnicity="99", note="x" * 1_000), TODAY, table) == []


@pytest.mark.parametrize(("value", "fault"), [
    ("9434765918", "check digit (modulus 11) is wrong"), ("", "not a 10-digit NHS number"),
    ("\x00", "not a 10-digit NHS number"), ("<script>", "not a 10-digit NHS number"),
    ("943 476 5919", "without spaces"), ("1" * 11, "not a 10-digit NHS number"),
])
def test_nhs_numbers_need_ten_digits_and_their_check_digit(table: LaTable, value: str, fault: str) -> None:
    [violation] = validate_record(CODED, coded(nhs_number=value), TODAY, table)
    assert (violation.field, violation.rule) == ("nhs_number", "nhs-number")
    assert fault in violation.message
    assert not value or value not in violation.message  # the message names the fault, never the number


def test_a_field_named_nhs_number_is_checked_without_a_declared_format(table: LaTable) -> None:
    schema = {"type": "record", "name": "Bare", "fields": [{"name": "nhs_number", "type": "string"}]}
    assert rules(validate_record(schema, {"nhs_number": "1234567890"}, TODAY, table)) == [("nhs_number", "nhs-number")]


def test_coded_fields_take_only_their_codes(table: LaTable) -> None:
    [violation] = validate_record(CODED, coded(ethnicity="White British"), TODAY, table)
    assert (violation.field, violation.rule) == ("ethnicity", "code-list")
    assert violation.message == "ethnicity is not in its code list (A, B, Z, 99)"


def test_every_string_has_a_maximum_length(table: LaTable) -> None:
    [declared] = validate_record(CODED, coded(name="Adaline"), TODAY, table)
    assert (declared.rule, declared.message) == ("max-length", "name is 7 characters long; at most 5 are allowed")
    [default] = validate_record(CODED, coded(note="x" * 100_000), TODAY, table)
    assert (default.field, default.rule) == ("note", "max-length") and "at most 1000" in default.message
    assert len(default.value_excerpt) <= 40
    # a 100 kB NHS number is refused once, for its length
    huge = validate_record(CODED, coded(nhs_number="9" * 100_000), TODAY, table)
    assert rules(huge) == [("nhs_number", "max-length")]


def test_json_dates_must_be_iso_strings_never_numbers() -> None:
    for value in (0, 18_000, -1, True):
        _, [problem] = from_json(CODED, {"seen": value})
        assert (problem.field, problem.rule) == ("seen", "schema-type")
        assert "ISO 8601 string such as 2020-06-22, not as a number" in problem.message
    _, [stamp] = from_json(CODED, {"at": 1_592_816_400_000})
    assert "such as 2020-06-22T09:00:00Z" in stamp.message
    converted, problems = from_json(CODED, {"seen": "2020-06-22"})
    assert problems == [] and converted["seen"] == dt.date(2020, 6, 22)


def test_json_enum_values_outside_the_symbols_name_the_codes() -> None:
    _, [problem] = from_json(CODED, {"sex": "F"})
    assert (problem.field, problem.rule, problem.message) == ("sex", "code-list",
                                                             "sex is not one of its codes (FEMALE, MALE)")
    assert from_json(CODED, {"sex": "MALE"}) == ({"sex": "MALE"}, [])
