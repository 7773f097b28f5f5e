from __future__ import annotations

from typing import Any

import pytest

from broker.domain.geography import LaTable
from broker.domain.geography_files import load_la_table
from broker.domain.jurisdiction import Unresolved, admits, resolve_areas
from broker.domain.plans import Plan

LEICESTER, NOTTINGHAM = "E06000016", "E06000018"
LEICESTERSHIRE, BLABY, CHARNWOOD = "E10000018", "E07000129", "E07000130"
JURISDICTION = ("utla", "ltla")


@pytest.fixture(scope="module")
def la() -> LaTable:
    return load_la_table()


def plan(areas: list[str], *, allow: bool = True) -> Plan:
    doc: dict[str, Any] = {
        "allow": allow, "reasons": [] if allow else ["no agreement in force"], "agreements": ["t1"] if allow else [],
        "subscriber": "some-council", "role": "dph", "stream": "ukhsa.positive-tests", "purpose": "health-protection",
        "fields": {}, "scopes": [{"agreements": ["t1"], "areas": areas, "fields": {}}] if allow else [],
        "row_filter": {"jurisdiction": list(JURISDICTION), "areas": areas, "required": []},
        "expiry": None, "revision": "c-000000000000/1",
    }
    return Plan.from_opa(doc)


def test_a_unitary_row_belongs_to_its_unitary(la: LaTable) -> None:
    assert resolve_areas({"utla": LEICESTER, "ltla": LEICESTER}, JURISDICTION, la) == frozenset({LEICESTER})


def test_a_district_row_belongs_to_the_district_and_its_county(la: LaTable) -> None:
    areas = resolve_areas({"utla": LEICESTERSHIRE, "ltla": BLABY}, JURISDICTION, la)
    assert areas == frozenset({BLABY, LEICESTERSHIRE})


def test_a_district_alone_still_brings_its_county(la: LaTable) -> None:
    assert resolve_areas({"utla": None, "ltla": BLABY}, JURISDICTION, la) == frozenset({BLABY, LEICESTERSHIRE})


def test_an_unknown_code_is_ignored_when_a_known_one_is_present(la: LaTable) -> None:
    assert resolve_areas({"utla": LEICESTER, "ltla": "E06999999"}, JURISDICTION, la) == frozenset({LEICESTER})


def test_only_unknown_codes_are_unresolved_and_the_message_shows_them(la: LaTable) -> None:
    found = resolve_areas({"utla": None, "ltla": "E07999999"}, JURISDICTION, la)
    assert isinstance(found, Unresolved)
    assert found.field == "ltla"
    assert "E07999999" in found.reason and "utla=None" in found.reason


def test_a_row_with_only_retired_codes_is_unresolved_and_says_which_code_replaced_them(la: LaTable) -> None:
    # A Kafka-client publisher skips HTTP ingest; the gate quarantines the row with the same advice.
    found = resolve_areas({"utla": "E10000023", "ltla": "E07000165"}, JURISDICTION, la)   # North Yorkshire, Harrogate
    assert isinstance(found, Unresolved)
    assert found.reason == ("no jurisdiction field holds a known LA code (saw utla='E10000023', ltla='E07000165'); "
                            "E10000023 (North Yorkshire) was abolished on 2023-04-01; its successor is E06000065 "
                            "(North Yorkshire) (ONS December 2023); E07000165 (Harrogate) was abolished on 2023-04-01; "
                            "its successor is E06000065 (North Yorkshire) (ONS December 2023)")


def test_nulls_everywhere_are_unresolved(la: LaTable) -> None:
    found = resolve_areas({"utla": None, "ltla": None}, JURISDICTION, la)
    assert isinstance(found, Unresolved)
    assert found.field == "utla"
    assert resolve_areas({}, JURISDICTION, la) == found


def test_a_district_whose_county_disagrees_with_the_utla_is_unresolved(la: LaTable) -> None:
    found = resolve_areas({"utla": LEICESTER, "ltla": BLABY}, JURISDICTION, la)
    assert found == Unresolved(f"ltla {BLABY} is in {LEICESTERSHIRE} but utla says {LEICESTER}", "utla",
                               (LEICESTER, BLABY, LEICESTERSHIRE))


def test_two_districts_of_different_counties_are_unresolved(la: LaTable) -> None:
    found = resolve_areas({"utla": "E07000170", "ltla": BLABY}, JURISDICTION, la)
    assert isinstance(found, Unresolved)
    assert "E10000024" in found.reason


def test_two_different_unitaries_are_unresolved(la: LaTable) -> None:
    found = resolve_areas({"utla": LEICESTER, "ltla": NOTTINGHAM}, JURISDICTION, la)
    assert found == Unresolved(f"utla {LEICESTER} and ltla {NOTTINGHAM} are different upper-tier authorities", "ltla",
                               (LEICESTER, NOTTINGHAM))


def test_a_stream_without_jurisdiction_fields_resolves_nothing(la: LaTable) -> None:
    assert isinstance(resolve_areas({"utla": LEICESTER}, (), la), Unresolved)


def test_a_county_plan_admits_its_districts_rows(la: LaTable) -> None:
    county = plan([LEICESTERSHIRE, *la.districts_of(LEICESTERSHIRE)])
    for row in ({"utla": LEICESTERSHIRE, "ltla": BLABY}, {"utla": None, "ltla": CHARNWOOD}):
        areas = resolve_areas(row, JURISDICTION, la)
        assert isinstance(areas, frozenset)
        assert admits(county, areas)


def test_a_district_plan_does_not_admit_a_row_known_only_by_its_county(la: LaTable) -> None:
    areas = resolve_areas({"utla": LEICESTERSHIRE, "ltla": None}, JURISDICTION, la)
    assert isinstance(areas, frozenset)
    assert not admits(plan([BLABY]), areas)


def test_a_plan_for_one_city_does_not_admit_anothers_rows(la: LaTable) -> None:
    areas = resolve_areas({"utla": LEICESTER, "ltla": LEICESTER}, JURISDICTION, la)
    assert isinstance(areas, frozenset)
    assert admits(plan([LEICESTER]), areas)
    assert not admits(plan([NOTTINGHAM]), areas)


def test_a_denied_plan_admits_nothing() -> None:
    assert not admits(plan([], allow=False), frozenset({LEICESTER}))
    assert not admits(plan([LEICESTER], allow=False), frozenset({LEICESTER}))
