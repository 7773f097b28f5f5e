from __future__ import annotations

import copy
import datetime as dt
import io
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import fastavro
import pytest

from broker.domain.plans import FieldRule, Plan, Projector, projected_schema
from broker.domain.topics import delivery_topic, value_subject
from broker.errors import PolicyEngineError

T1_SCHEMA: dict[str, Any] = json.loads(
    (Path(__file__).resolve().parents[2] / "schemas/ukhsa.positive-tests.avsc").read_text(encoding="utf-8")
)
TODAY = dt.date(2020, 6, 26)

ANALYST: dict[str, Any] = {  # the plan in docs/sharing-plans.md
    "allow": True, "reasons": [], "agreements": ["t1-leicester"],
    "subscriber": "leicester-city-council", "role": "analyst", "stream": "ukhsa.positive-tests",
    "purpose": "health-protection",
    "fields": {"lsoa": {"transform": "keep", "method": None, "as": "lsoa", "params": {}},
               "dob": {"transform": "generalise", "method": "age-band", "as": "age_band",
                       "params": {"at": "specimen_date"}},
               "sex": {"transform": "keep", "method": None, "as": "sex", "params": {}}},
    "row_filter": {"jurisdiction": ["utla", "ltla"], "areas": ["E06000016"], "required": []},
    "expiry": "2022-06-30T00:00:00Z",
    "revision": "c-3f9a1b2c4d5e/17",
}
ANALYST["scopes"] = [{"agreements": ["t1-leicester"], "areas": ["E06000016"], "fields": ANALYST["fields"]}]
LEICESTER = frozenset({"E06000016"})


def keep(name: str) -> dict[str, Any]:
    return {"transform": "keep", "method": None, "as": name, "params": {}}


def with_fields(**fields: dict[str, Any]) -> dict[str, Any]:
    """A plan of one agreement (one scope) delivering `fields`."""
    return {**ANALYST, "role": "dph", "fields": fields,
            "scopes": [{"agreements": ["t1-leicester"], "areas": ["E06000016"], "fields": fields}]}


DPH = with_fields(
    specimen_id={"transform": "mask", "method": None, "as": "specimen_id", "params": {"keep_last": "4"}},
    nhs_number={"transform": "pseudonymise", "method": None, "as": "nhs_pseudonym", "params": {}},
    **{name: keep(name) for name in ("dob", "sex", "specimen_date", "test_type", "pillar", "lsoa", "ltla", "utla")},
    postcode={"transform": "generalise", "method": "postcode-district", "as": "postcode_district", "params": {}},
)


def t1_record(**changes: object) -> dict[str, Any]:
    record: dict[str, Any] = {
        "specimen_id": "LAB20-0001234", "nhs_number": "9434765919", "name": "Ada Example",
        "dob": dt.date(1984, 6, 24), "sex": "FEMALE", "ethnicity": "A", "address": "1 High Street",
        "postcode": "LE1 6ZG", "occupation": None, "specimen_date": dt.date(2020, 6, 24),
        "lab_report_date": dt.date(2020, 6, 25), "test_type": "PCR", "pillar": "PILLAR_2",
        "lsoa": "E01013627", "msoa": "E02002830", "ltla": "E06000016", "utla": "E06000016",
    }
    record.update(changes)
    return record


def fake_pseudonym(field: str, value: object) -> str | None:
    return None if value is None else f"p:{field}:{value}"


def projector(doc: dict[str, Any], schema: dict[str, Any] = T1_SCHEMA) -> Projector:
    return Projector(Plan.from_opa(doc), schema, pseudonymise=fake_pseudonym, today=lambda: TODAY)


def in_leicester(project: Projector, record: dict[str, Any]) -> dict[str, Any]:
    """`record` as delivered when it is a Leicester row (the plans' one scope)."""
    delivered = project(record, LEICESTER)
    assert delivered is not None
    return delivered


def round_trip(schema: dict[str, Any], record: dict[str, Any]) -> Any:
    parsed = fastavro.parse_schema(schema)
    buffer = io.BytesIO()
    fastavro.schemaless_writer(buffer, parsed, record)
    buffer.seek(0)
    return fastavro.schemaless_reader(buffer, parsed, parsed)


def keys_anywhere(node: Any) -> Iterator[str]:
    if isinstance(node, dict):
        for key, value in node.items():
            yield key
            yield from keys_anywhere(value)
    elif isinstance(node, list):
        for item in node:
            yield from keys_anywhere(item)


# -- reading plans --------------------------------------------------------------------------------------------------

def test_from_opa_reads_the_contract_example() -> None:
    plan = Plan.from_opa(ANALYST)
    assert (plan.subscriber, plan.role, plan.stream, plan.purpose) == (
        "leicester-city-council", "analyst", "ukhsa.positive-tests", "health-protection")
    assert plan.allow and plan.reasons == () and plan.agreements == ("t1-leicester",)
    assert plan.fields[1] == FieldRule("dob", "generalise", "age-band", "age_band", {"at": "specimen_date"})
    assert [rule.output for rule in plan.fields] == ["lsoa", "age_band", "sex"]
    assert plan.jurisdiction == ("utla", "ltla") and plan.areas == frozenset({"E06000016"})
    assert plan.expiry == dt.datetime(2022, 6, 30, tzinfo=dt.UTC)
    assert plan.revision == "c-3f9a1b2c4d5e/17"
    assert plan.topic == "deliver.leicester-city-council.analyst.ukhsa.positive-tests"
    assert value_subject(plan.topic) == "deliver.leicester-city-council.analyst.ukhsa.positive-tests-value"
    assert hash(plan) == hash(Plan.from_opa(copy.deepcopy(ANALYST)))


def test_delivery_topic_names_subscriber_role_and_stream() -> None:
    assert delivery_topic("nottingham-city-council", "dph", "nhstt.cases-to-trace") == (
        "deliver.nottingham-city-council.dph.nhstt.cases-to-trace")


def test_from_opa_reads_a_default_deny() -> None:
    plan = Plan.from_opa({**ANALYST, "allow": False, "reasons": ["agreement t1-leicester expired"], "agreements": [],
                          "fields": {}, "scopes": [],
                          "row_filter": {"jurisdiction": ["utla", "ltla"], "areas": [], "required": []},
                          "expiry": None})
    assert not plan.allow and plan.fields == () and plan.areas == frozenset() and plan.expiry is None
    assert plan.reasons == ("agreement t1-leicester expired",)


def test_a_plan_expires_at_its_expiry() -> None:
    plan = Plan.from_opa(ANALYST)
    assert not plan.expired(dt.datetime(2022, 6, 29, 23, 59, tzinfo=dt.UTC))
    assert plan.expired(dt.datetime(2022, 6, 30, tzinfo=dt.UTC))


def test_a_numeric_keep_last_is_read_as_text() -> None:
    plan = Plan.from_opa(with_fields(nhs_number={"transform": "mask", "method": None, "as": "nhs_number",
                                                 "params": {"keep_last": 4}}))
    assert plan.fields[0].params == {"keep_last": "4"}


@pytest.mark.parametrize("key", ["allow", "reasons", "agreements", "subscriber", "role", "stream", "purpose", "fields",
                                 "scopes", "row_filter", "expiry", "revision"])
def test_from_opa_refuses_a_plan_missing_a_key(key: str) -> None:
    doc = {k: v for k, v in ANALYST.items() if k != key}
    with pytest.raises(PolicyEngineError, match=f"missing key '{key}'"):
        Plan.from_opa(doc)


@pytest.mark.parametrize(
    ("rule", "problem"),
    [
        ({"transform": "redact", "method": None, "as": "dob", "params": {}}, "unknown transform 'redact'"),
        ({"transform": "drop", "method": None, "as": "dob", "params": {}}, "unknown transform 'drop'"),
        ({"transform": "generalise", "method": "k-anonymity", "as": "dob", "params": {}}, "unknown generalise method"),
        ({"transform": "generalise", "method": None, "as": "dob", "params": {}}, "unknown generalise method"),
        ({"transform": "keep", "method": "age-band", "as": "dob", "params": {}}, "method must be null for keep"),
        ({"transform": "keep", "method": None, "params": {}}, "missing key 'as'"),
        ({"transform": "keep", "method": None, "as": "date of birth", "params": {}}, "as must be text matching"),
        ({"transform": "keep", "method": None, "as": "dob"}, "missing key 'params'"),
        ({"transform": "keep", "method": None, "as": "dob", "params": {"at": "x"}}, "unknown params at"),
        ({"transform": "mask", "method": None, "as": "dob", "params": {"keep_last": "four"}}, "keep_last must be"),
        ({"transform": "mask", "method": None, "as": "dob", "params": {"keep_last": "-1"}}, "keep_last must be"),
        ({"transform": "generalise", "method": "age-band", "as": "age_band", "params": {"at": None}}, "non-empty"),
        ("keep", "expected an object"),
    ],
)
def test_from_opa_refuses_a_malformed_field_rule(rule: object, problem: str) -> None:
    with pytest.raises(PolicyEngineError, match=r"malformed sharing plan at fields\.dob") as raised:
        Plan.from_opa(with_fields(dob=rule))  # type: ignore[arg-type]
    assert problem in str(raised.value)


@pytest.mark.parametrize(
    ("changes", "problem"),
    [
        ({"expiry": "2022-06-30"}, "with a zone"),
        ({"expiry": "next tuesday"}, "with a zone"),
        ({"expiry": 1656547200}, "with a zone"),
        ({"allow": "true"}, "must be true or false"),
        ({"reasons": "none"}, "reasons must be a list of text"),
        ({"agreements": [1]}, "agreements must be a list of text"),
        ({"subscriber": "leicester city council"}, "subscriber must be text matching"),
        ({"role": ""}, "role must be text matching"),
        ({"stream": None}, "stream must be text"),
        ({"fields": []}, "expected an object"),
        ({"row_filter": {"areas": []}}, "missing key 'jurisdiction'"),
        ({"row_filter": {"jurisdiction": [], "areas": []}}, "missing key 'required'"),
        ({"row_filter": {"jurisdiction": [], "areas": [], "required": ["nhs number"]}}, "not an Avro field name"),
        ({"fields": {"dob": keep("sex"), "sex": keep("sex")}}, "several fields are delivered as sex"),
    ],
)
def test_from_opa_refuses_a_malformed_plan(changes: dict[str, Any], problem: str) -> None:
    with pytest.raises(PolicyEngineError, match="malformed sharing plan") as raised:
        Plan.from_opa({**ANALYST, **changes})
    assert problem in str(raised.value)


def test_from_opa_refuses_something_that_is_not_an_object() -> None:
    with pytest.raises(PolicyEngineError, match="expected an object"):
        Plan.from_opa(None)  # type: ignore[arg-type]


# -- projected schemas ----------------------------------------------------------------------------------------------

def test_the_analyst_schema_has_the_plans_fields_in_stream_order() -> None:
    schema = projected_schema(T1_SCHEMA, Plan.from_opa(ANALYST))
    assert [f["name"] for f in schema["fields"]] == ["age_band", "sex", "lsoa"]
    assert schema["name"] == "PositiveTest"
    assert schema["namespace"] == "uk.accord.deliver.leicester_city_council.analyst"
    assert "t1-leicester" in schema["doc"] and "c-3f9a1b2c4d5e/17" in schema["doc"]
    assert schema["fields"][0] == {"name": "age_band", "type": ["null", "string"], "default": None,
                                   "doc": schema["fields"][0]["doc"]}
    assert "specimen_date" in schema["fields"][0]["doc"]
    assert not [key for key in keys_anywhere(schema) if key.startswith("accord.")]
    fastavro.parse_schema(schema)


def test_an_analyst_record_round_trips_through_its_schema() -> None:
    project = projector(ANALYST)
    delivered = in_leicester(project, t1_record())
    assert delivered == {"age_band": "35-39", "sex": "FEMALE", "lsoa": "E01013627"}
    assert list(delivered) == [f["name"] for f in project.schema["fields"]]
    assert round_trip(project.schema, delivered) == delivered


def test_a_dph_plan_keeps_enums_and_dates_and_round_trips() -> None:
    project = projector(DPH)
    names = [f["name"] for f in project.schema["fields"]]
    assert names == ["specimen_id", "nhs_pseudonym", "dob", "sex", "postcode_district", "specimen_date",
                     "test_type", "pillar", "lsoa", "ltla", "utla"]
    sex = project.schema["fields"][3]["type"]
    assert sex == {"type": "enum", "name": "Sex", "symbols": ["FEMALE", "MALE", "INDETERMINATE", "UNKNOWN"],
                   "default": "UNKNOWN"}
    named: dict[str, Any] = {}
    fastavro.parse_schema(project.schema, named_schemas=named)
    assert set(named) >= {f"uk.accord.deliver.leicester_city_council.dph.{n}" for n in ("Sex", "TestType", "Pillar")}
    delivered = in_leicester(project, t1_record())
    assert delivered["specimen_id"] == "****1234"
    assert delivered["nhs_pseudonym"] == "p:nhs_number:9434765919"
    assert delivered["postcode_district"] == "LE1"
    assert delivered["dob"] == dt.date(1984, 6, 24) and delivered["pillar"] == "PILLAR_2"
    assert round_trip(project.schema, delivered) == delivered


def test_nulls_stay_null_through_every_transform() -> None:
    delivered = in_leicester(projector(DPH), t1_record(nhs_number=None, lsoa=None))
    assert delivered["nhs_pseudonym"] is None and delivered["lsoa"] is None


def test_age_band_without_at_uses_the_processing_day_and_lsoa_reads_the_tagged_field() -> None:
    doc = with_fields(
        dob={"transform": "generalise", "method": "age-band", "as": "age_band", "params": {}},
        postcode={"transform": "generalise", "method": "lsoa", "as": "lsoa", "params": {}},
        ltla={"transform": "keep", "method": None, "as": "district", "params": {}},
    )
    project = projector(doc)
    assert project(t1_record(dob=dt.date(2015, 6, 26)), LEICESTER) == {"age_band": "5-9", "lsoa": "E01013627",
                                                            "district": "E06000016"}
    assert "the processing day" in project.schema["fields"][0]["doc"]


def test_a_plan_naming_a_field_the_stream_lacks_is_refused() -> None:
    with pytest.raises(PolicyEngineError, match="names shoe_size, not in the stream schema"):
        projected_schema(T1_SCHEMA, Plan.from_opa(with_fields(shoe_size=keep("shoe_size"))))


@pytest.mark.parametrize(
    ("params", "problem"),
    [({"at": "specimen_time"}, "reads specimen_time, which is not a field"), ({"at": "name"}, "name is not a date")],
)
def test_an_age_band_needs_date_fields(params: dict[str, str], problem: str) -> None:
    doc = with_fields(dob={"transform": "generalise", "method": "age-band", "as": "age_band", "params": params})
    with pytest.raises(PolicyEngineError, match=problem):
        projector(doc)


def test_a_plan_for_another_stream_is_refused() -> None:
    with pytest.raises(PolicyEngineError, match=r"cannot be applied to the schema of stream ukhsa\.positive-tests"):
        projected_schema(T1_SCHEMA, Plan.from_opa({**ANALYST, "stream": "nhstt.cases-to-trace"}))


SHARED_ENUM: dict[str, Any] = {
    "type": "record", "name": "Case", "namespace": "uk.accord.test", "accord.stream": "ukhsa.positive-tests",
    "fields": [
        {"name": "sex", "type": {"type": "enum", "name": "Sex", "symbols": ["F", "M"]}, "accord.tags": ["q"]},
        {"name": "reported_sex", "type": ["null", "Sex"], "default": None},
        {"name": "stated_sex", "type": "uk.accord.test.Sex"},
        {"name": "visits", "type": {"type": "array", "items": {
            "type": "record", "name": "Visit", "namespace": "uk.accord.other",
            "fields": [{"name": "kind", "type": {"type": "enum", "name": "Kind", "symbols": ["GP", "AE"]}},
                       {"name": "again", "type": ["null", "Kind"], "default": None}]}}},
        {"name": "last_visit", "type": ["null", "uk.accord.other.Visit"], "default": None},
    ],
}


def test_a_named_type_used_only_by_reference_is_defined_where_first_delivered() -> None:
    project = projector(with_fields(reported_sex=keep("reported_sex"), stated_sex=keep("stated_sex"),
                                    last_visit=keep("last_visit")), SHARED_ENUM)
    fields = project.schema["fields"]
    assert fields[0]["type"] == ["null", {"type": "enum", "name": "Sex", "symbols": ["F", "M"]}]
    assert fields[1]["type"] == "Sex"
    assert fields[2]["type"][1]["name"] == "Visit"
    record = {"sex": "M", "reported_sex": "F", "stated_sex": "M", "visits": [],
              "last_visit": {"kind": "AE", "again": "GP"}}
    delivered = in_leicester(project, record)
    assert round_trip(project.schema, delivered) == delivered


def test_named_types_that_would_clash_in_the_delivery_namespace_are_refused() -> None:
    schema = copy.deepcopy(SHARED_ENUM)
    schema["fields"].append({"name": "other", "type": {"type": "enum", "name": "uk.accord.other.Sex",
                                                        "symbols": ["X"]}})
    with pytest.raises(PolicyEngineError, match="would both be Sex"):
        projected_schema(schema, Plan.from_opa(with_fields(sex=keep("sex"), other=keep("other"))))


def test_a_type_the_stream_never_defines_is_refused() -> None:
    schema = {**SHARED_ENUM, "fields": [{"name": "sex", "type": "Gender"}]}
    with pytest.raises(PolicyEngineError, match=r"uses type uk\.accord\.test\.Gender but never defines it"):
        projected_schema(schema, Plan.from_opa(with_fields(sex=keep("sex"))))


def test_the_stream_schema_is_left_untouched() -> None:
    before = copy.deepcopy(T1_SCHEMA)
    projector(DPH)
    assert before == T1_SCHEMA


# -- scopes: a field's treatment holds only in the areas of the agreements that grant it -------------------------

CHARNWOOD, BLABY, LEICESTERSHIRE = "E07000130", "E07000129", "E10000018"
COUNTY = sorted([LEICESTERSHIRE, BLABY, CHARNWOOD])
IN_CHARNWOOD, IN_BLABY = frozenset({CHARNWOOD, LEICESTERSHIRE}), frozenset({BLABY, LEICESTERSHIRE})
MINIMISED = ANALYST["fields"]
IDENTIFIERS = {name: keep(name) for name in ("nhs_number", "name", "lsoa")}


def county_plan(*scopes: tuple[str, list[str], dict[str, Any]]) -> dict[str, Any]:
    """Leicestershire's analysts under agreements, each (id, areas, fields); the summary `fields` as OPA sums up."""
    summary: dict[str, Any] = {}
    for _, _, fields in scopes:
        summary = {**fields, **summary}
    areas = sorted({area for _, scope_areas, _ in scopes for area in scope_areas})
    return {**ANALYST, "subscriber": "leicestershire-county-council", "agreements": sorted(s[0] for s in scopes),
            "fields": summary, "row_filter": {**ANALYST["row_filter"], "areas": areas},
            "scopes": [{"agreements": [ident], "areas": areas, "fields": fields} for ident, areas, fields in scopes]}


# The case: a district agreement with identifiers and a county-wide minimised one, for one subscriber.
DISTRICT_AND_COUNTY = county_plan(("t1-charnwood-outbreak", [CHARNWOOD], IDENTIFIERS),
                                  ("t1-leicestershire", COUNTY, MINIMISED))


def test_from_opa_reads_each_scope_with_its_agreements_areas_and_fields() -> None:
    plan = Plan.from_opa(DISTRICT_AND_COUNTY)
    district, county = plan.scopes
    assert district.agreements == ("t1-charnwood-outbreak",) and district.areas == frozenset({CHARNWOOD})
    assert [rule.output for rule in district.fields] == ["nhs_number", "name", "lsoa"]
    assert county.agreements == ("t1-leicestershire",) and county.areas == frozenset(COUNTY)
    assert [rule.output for rule in county.fields] == ["lsoa", "age_band", "sex"]


def test_identifiers_granted_for_a_district_reach_only_that_districts_rows() -> None:
    project = projector(DISTRICT_AND_COUNTY)
    record = t1_record(ltla=CHARNWOOD, utla=LEICESTERSHIRE)

    assert project(record, IN_CHARNWOOD) == {"nhs_number": "9434765919", "name": "Ada Example", "age_band": "35-39",
                                             "sex": "FEMALE", "lsoa": "E01013627"}
    assert project(record | {"ltla": BLABY}, IN_BLABY) == {"nhs_number": None, "name": None, "age_band": "35-39",
                                                           "sex": "FEMALE", "lsoa": "E01013627"}
    assert project(record, frozenset({LEICESTERSHIRE})) == project(record, IN_BLABY)  # the county, no district
    assert project(record, frozenset({"E06000016"})) is None  # in no scope: not delivered


def test_a_field_some_scopes_do_not_deliver_is_optional_and_both_shapes_round_trip() -> None:
    project = projector(DISTRICT_AND_COUNTY)
    fields = {field["name"]: field for field in project.schema["fields"]}
    assert list(fields) == ["nhs_number", "name", "age_band", "sex", "lsoa"]
    assert (fields["name"]["type"], fields["name"]["default"]) == (["null", "string"], None)  # "string" in the stream
    assert fields["sex"]["type"][0] == "null" and fields["sex"]["default"] is None  # only the county scope has it
    assert "null elsewhere" in fields["name"]["doc"]
    record = t1_record(ltla=CHARNWOOD, utla=LEICESTERSHIRE)
    for areas in (IN_CHARNWOOD, IN_BLABY):
        delivered = project(record, areas)
        assert delivered is not None and round_trip(project.schema, delivered) == delivered


def test_a_single_scope_plan_keeps_the_stream_definitions() -> None:
    schema = projected_schema(T1_SCHEMA, Plan.from_opa(with_fields(name=keep("name"), sex=keep("sex"))))
    name = schema["fields"][0]
    assert name["name"] == "name" and name["type"] == "string" and "default" not in name


def test_a_row_in_several_scopes_gets_each_fields_most_revealing_treatment() -> None:
    masked = {"transform": "mask", "method": None, "as": "name", "params": {"keep_last": "2"}}
    dated = {**IDENTIFIERS, "dob": keep("dob")}
    project = projector(county_plan(("t1-charnwood-outbreak", [CHARNWOOD], dated),
                                    ("t1-leicestershire", COUNTY, {**MINIMISED, "name": masked})))
    record = t1_record()

    charnwood, blaby = project(record, IN_CHARNWOOD), project(record, IN_BLABY)

    assert charnwood is not None and blaby is not None
    assert (charnwood["name"], charnwood["dob"], charnwood["age_band"]) == ("Ada Example", dt.date(1984, 6, 24), None)
    assert (blaby["name"], blaby["dob"], blaby["age_band"]) == ("****le", None, "35-39")
    fields = {field["name"]: field["type"] for field in project.schema["fields"]}
    assert fields["dob"] == ["null", {"type": "int", "logicalType": "date"}] and fields["name"] == ["null", "string"]
    for delivered in (charnwood, blaby):
        assert round_trip(project.schema, delivered) == delivered


def test_one_name_delivered_kept_in_one_scope_and_transformed_in_another_is_a_union_of_both() -> None:
    banded = {"transform": "generalise", "method": "age-band", "as": "dob", "params": {"at": "specimen_date"}}
    project = projector(county_plan(("t1-charnwood-outbreak", [CHARNWOOD], {"dob": keep("dob")}),
                                    ("t1-leicestershire", COUNTY, {"dob": banded})))
    assert project.schema["fields"][0]["type"] == ["null", "string", {"type": "int", "logicalType": "date"}]
    for areas, expected in ((IN_CHARNWOOD, dt.date(1984, 6, 24)), (IN_BLABY, "35-39")):
        delivered = project(t1_record(), areas)
        assert delivered == {"dob": expected} and round_trip(project.schema, delivered) == delivered


def test_equally_revealing_treatments_go_to_the_earlier_scope() -> None:
    def masked(keep_last: str) -> dict[str, Any]:
        return {"nhs_number": {"transform": "mask", "method": None, "as": "nhs_number",
                               "params": {"keep_last": keep_last}}}
    project = projector(county_plan(("t1-a", [CHARNWOOD], masked("4")), ("t1-b", COUNTY, masked("2"))))
    assert project(t1_record(), IN_CHARNWOOD) == {"nhs_number": "****5919"}
    assert project(t1_record(), IN_BLABY) == {"nhs_number": "****19"}


@pytest.mark.parametrize(
    ("changes", "problem"),
    [
        ({"scopes": {}}, "scopes: expected a list"),
        ({"scopes": [{"agreements": ["t1-leicestershire"], "areas": COUNTY}]}, "missing key 'fields'"),
        ({"row_filter": {**ANALYST["row_filter"], "areas": [*COUNTY, "E06000016"]}},
         "their areas (E07000129, E07000130, E10000018) are not row_filter.areas"),
        ({"agreements": ["t1-leicestershire"]}, "they name agreements ['t1-charnwood-outbreak', 't1-leicestershire']"),
    ],
)
def test_from_opa_refuses_scopes_that_are_not_the_plans_rows_and_agreements(changes: dict[str, Any],
                                                                             problem: str) -> None:
    with pytest.raises(PolicyEngineError, match="malformed sharing plan") as raised:
        Plan.from_opa({**DISTRICT_AND_COUNTY, **changes})
    assert problem in str(raised.value)


def test_from_opa_refuses_a_name_filled_from_different_fields_in_different_scopes() -> None:
    doc = county_plan(("t1-a", [CHARNWOOD], {"ltla": keep("district")}), ("t1-b", COUNTY, {"utla": keep("district")}))
    doc["fields"] = {"ltla": keep("district")}  # a summary that hides the clash
    with pytest.raises(PolicyEngineError, match="district would be filled from different fields"):
        Plan.from_opa(doc)


def test_a_refused_plan_has_no_scopes_whatever_it_says() -> None:
    assert Plan.from_opa({**DISTRICT_AND_COUNTY, "allow": False}).scopes == ()
