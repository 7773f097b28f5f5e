from __future__ import annotations

import datetime as dt
import io
import json
from pathlib import Path
from typing import Any

import avro.schema
import fastavro
import fastavro.validation
import pytest

from broker.domain.geography import LaTable
from broker.domain.geography_files import load_la_table
from broker.domain.validation import field_tags, validate_record

SCHEMA_DIR = Path(__file__).resolve().parents[2] / "schemas"
STREAMS = (
    "ukhsa.positive-tests", "nhstt.cases-to-trace", "nhsd.shielded-patients",
    "dhsc.care-home-capacity", "nhse.hospital-sitrep", "nis.vaccination-uptake",
)
TAGS = {
    "direct-identifier", "quasi-identifier", "special-category", "commercially-sensitive", "small-count",
    "geography:postcode", "geography:lsoa", "geography:msoa", "geography:ltla", "geography:utla",
    "geography:trust", "geography:icb",
}
TODAY = dt.date(2021, 3, 15)
UTC = dt.UTC

VALID: dict[str, dict[str, object]] = {
    "ukhsa.positive-tests": {
        "specimen_id": "LEI20062600017", "nhs_number": "9434765919", "name": "Ada Example", "dob": dt.date(1984, 3, 2),
        "sex": "FEMALE", "ethnicity": "H", "address": "1 Example Street, Leicester", "postcode": "LE1 6ZG",
        "occupation": None, "specimen_date": dt.date(2020, 6, 24), "lab_report_date": dt.date(2020, 6, 25),
        "test_type": "PCR", "pillar": "PILLAR_2", "lsoa": "E01013627", "msoa": "E02002830", "ltla": "E06000016",
        "utla": "E06000016",
    },
    "nhstt.cases-to-trace": {
        "ctas_id": "A1B2C3D4", "name": "Bo Example", "phone": "07700900123", "email": None,
        "address": "2 Example Road, Loughborough", "postcode": "LE11 3AB", "ltla": "E07000130", "utla": "E10000018",
        "specimen_date": dt.date(2020, 6, 23), "onset_date": dt.date(2020, 6, 21),
        "case_created_ts": dt.datetime(2020, 6, 24, 8, 15, tzinfo=UTC), "attempts": 4,
        "last_attempt_ts": dt.datetime(2020, 6, 25, 17, 40, tzinfo=UTC), "status": "UNREACHABLE",
    },
    "nhsd.shielded-patients": {
        "nhs_number": "4010232137", "name": "Cy Example", "dob": dt.date(1941, 11, 5),
        "address": "3 Example Lane, Mansfield", "postcode": "NG18 1AA", "phone": None, "email": None,
        "gp_practice_code": "C84001", "added_date": dt.date(2020, 4, 2), "removed_flag": False,
        "ltla": "E07000174", "utla": "E10000024",
    },
    "dhsc.care-home-capacity": {
        "cqc_location_id": "1-101234567", "home_name": "Example House", "ltla": "E07000132", "utla": "E10000018",
        "date": dt.date(2020, 6, 25), "beds_vacant": 3, "staff_newly_suspected": 1, "staff_newly_confirmed": 0,
        "residents_newly_suspected": 2, "residents_newly_confirmed": 1, "ppe_rag": "AMBER",
        "visiting_status": "END_OF_LIFE_ONLY", "staff_absent": 4,
    },
    "nhse.hospital-sitrep": {
        "trust_ods_code": "RWE", "icb": "E54000015", "date": dt.date(2020, 6, 25), "covid_inpatients": 92,
        "mv_beds": 7, "admissions": 11, "diagnoses": 3, "discharges": 9, "staff_absences": 410,
    },
    "nis.vaccination-uptake": {
        "as_at_date": dt.date(2021, 3, 14), "lsoa": "E01013627", "utla": "E06000016", "age_band": "AGE_65_69",
        "ethnicity_group": "ASIAN", "dose": "FIRST", "vaccinated_n": 41, "eligible_n": 63,
    },
}

# (stream, fields to change, the violations expected as (field, rule)).
INVALID = [
    ("ukhsa.positive-tests", {"ltla": "E07000129", "utla": "E06000016"}, [("utla", "utla-consistent")]),
    ("ukhsa.positive-tests", {"dob": dt.date(2021, 3, 16)}, [("dob", "date-not-future")]),
    ("ukhsa.positive-tests", {"postcode": ""}, [("postcode", "required")]),
    ("ukhsa.positive-tests", {"msoa": "E01013627", "ltla": "E07000999"}, [("msoa", "gss-format"),
                                                                          ("ltla", "gss-known")]),
    ("nhstt.cases-to-trace", {"postcode": "LE11"}, [("postcode", "postcode-format")]),
    ("nhstt.cases-to-trace", {"last_attempt_ts": dt.datetime(2021, 3, 16, tzinfo=UTC)},
     [("last_attempt_ts", "date-not-future")]),
    ("nhstt.cases-to-trace", {"ctas_id": " "}, [("ctas_id", "required")]),
    ("nhsd.shielded-patients", {"ltla": "E10000024"}, [("ltla", "gss-format")]),
    ("nhsd.shielded-patients", {"nhs_number": "", "added_date": dt.date(2021, 4, 1)},
     [("nhs_number", "required"), ("added_date", "date-not-future")]),
    ("dhsc.care-home-capacity", {"utla": "E10000099"}, [("utla", "gss-known")]),
    ("dhsc.care-home-capacity", {"ltla": "E07000170"}, [("utla", "utla-consistent")]),
    ("nhse.hospital-sitrep", {"icb": "E06000016"}, [("icb", "gss-format")]),
    ("nhse.hospital-sitrep", {"trust_ods_code": ""}, [("trust_ods_code", "required")]),
    ("nis.vaccination-uptake", {"lsoa": "E02002830"}, [("lsoa", "gss-format")]),
    ("nis.vaccination-uptake", {"utla": "E07000129"}, [("utla", "gss-format")]),
]


def load(stream: str) -> dict[str, Any]:
    loaded: dict[str, Any] = json.loads((SCHEMA_DIR / f"{stream}.avsc").read_text(encoding="utf-8"))
    return loaded


@pytest.fixture(scope="module")
def table() -> LaTable:
    return load_la_table()


def test_one_schema_per_template_stream() -> None:
    assert {path.name for path in SCHEMA_DIR.glob("*.avsc")} >= {f"{stream}.avsc" for stream in STREAMS}
    assert set(VALID) == set(STREAMS)


@pytest.mark.parametrize("stream", STREAMS)
def test_parses_with_fastavro_and_apache_avro(stream: str) -> None:
    text = (SCHEMA_DIR / f"{stream}.avsc").read_text(encoding="utf-8")
    fastavro.parse_schema(json.loads(text))
    assert avro.schema.parse(text).get_prop("accord.stream") == stream


@pytest.mark.parametrize("stream", STREAMS)
def test_conventions(stream: str) -> None:
    schema = load(stream)
    assert schema["accord.stream"] == stream
    assert schema["doc"].strip()
    tags = field_tags(schema)
    for field in schema["fields"]:
        assert field.get("doc", "").strip(), f"{field['name']} has no doc"
        assert set(tags[field["name"]]) <= TAGS, field["name"]
    assert schema["accord.required"] and set(schema["accord.required"]) <= set(tags)
    assert schema["accord.jurisdiction"]
    for name in schema["accord.jurisdiction"]:
        assert any(tag.startswith("geography:") for tag in tags[name]), f"jurisdiction field {name} has no geography"


@pytest.mark.parametrize("stream", STREAMS)
def test_optional_fields_are_null_first_with_null_default(stream: str) -> None:
    for field in load(stream)["fields"]:
        nullable = isinstance(field["type"], list) and "null" in field["type"]
        if nullable:
            assert field["type"][0] == "null" and "default" in field and field["default"] is None, field["name"]
        assert nullable or field.get("default", "absent") is not None, field["name"]


@pytest.mark.parametrize("stream", STREAMS)
def test_dates_and_timestamps_use_logical_types(stream: str) -> None:
    for field in load(stream)["fields"]:
        branches = field["type"] if isinstance(field["type"], list) else [field["type"]]
        logical = {b.get("logicalType") for b in branches if isinstance(b, dict)}
        if field["name"].endswith("_ts"):
            assert logical == {"timestamp-millis"}, field["name"]
        elif field["name"] == "date" or field["name"].endswith(("_date", "dob")):
            assert logical == {"date"}, field["name"]


@pytest.mark.parametrize("stream", STREAMS)
def test_valid_record_round_trips_without_violations(stream: str, table: LaTable) -> None:
    schema = load(stream)
    parsed = fastavro.parse_schema(schema)
    buffer = io.BytesIO()
    fastavro.schemaless_writer(buffer, parsed, VALID[stream])
    buffer.seek(0)
    decoded = fastavro.schemaless_reader(buffer, parsed, None)
    assert isinstance(decoded, dict) and decoded == VALID[stream]
    assert validate_record(schema, decoded, TODAY, table) == []


@pytest.mark.parametrize(("stream", "changes", "expected"), INVALID)
def test_invalid_records_give_exactly_the_expected_violations(
    stream: str, changes: dict[str, object], expected: list[tuple[str, str]], table: LaTable
) -> None:
    schema = load(stream)
    row = {**VALID[stream], **changes}
    # Each row is still valid Avro: these rules catch what the wire format cannot.
    assert fastavro.validation.validate(row, fastavro.parse_schema(schema), raise_errors=False)
    assert [(v.field, v.rule) for v in validate_record(schema, row, TODAY, table)] == expected

