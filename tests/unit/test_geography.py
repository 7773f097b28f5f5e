"""The LA table: ONS December 2023 (every UK authority, counties from their districts), retired codes with their
successors, and reading ONS's own lookups of any year."""

from __future__ import annotations

import csv
from collections import Counter
from pathlib import Path

import pytest
import yaml

from broker.domain.geography import GssCode, LaTable, LocalAuthority, Tier, is_well_formed
from broker.domain.geography_files import (
    AUTHORITY_COLUMNS,
    GEOGRAPHY_DIR,
    geography_files,
    load_la_table,
    read_authority_rows,
    read_la_table,
)
from broker.errors import ConfigError
from tests.unit.geography_support import ons_ward_rows

LEICESTERSHIRE_DISTRICTS = tuple(f"E07000{n}" for n in range(129, 136))
NOTTINGHAMSHIRE_DISTRICTS = tuple(f"E07000{n}" for n in range(170, 177))
ENGLAND = "E92000001"
HEADER = ",".join(AUTHORITY_COLUMNS)
LEICESTER_ROW = "E06000016,Leicester,E06000016,Leicester,E12000004,East Midlands,England"
BLABY_ROW = "E07000129,Blaby,E10000018,Leicestershire,E12000004,East Midlands,England"


@pytest.fixture(scope="module")
def table() -> LaTable:
    return load_la_table()


def write_table(tmp_path: Path, *rows: str, header: str = HEADER) -> Path:
    path = tmp_path / "la.csv"
    path.write_text("\n".join([header, *rows]) + "\n", encoding="utf-8")
    return path


@pytest.mark.parametrize(
    ("code", "entity"),
    [("E01013627", "LSOA"), ("W01001694", "Welsh LSOA"), ("E02002830", "MSOA"),
     ("E06000016", "English unitary authority"), ("E07000129", "non-metropolitan district"), ("E10000018", "county"),
     ("E54000015", "integrated care board"), ("W06000015", "Welsh local authority"),
     ("S12000036", "Scottish council area"), ("S92000003", "Scotland"), ("N92000002", "Northern Ireland")],
)
def test_gss_code_names_its_entity(code: str, entity: str) -> None:
    parsed = GssCode(code)
    assert parsed.prefix == code[:3]
    assert parsed.entity == entity
    assert str(parsed) == code


@pytest.mark.parametrize(
    "text",
    ["E0600001", "E060000160", "e06000016", " E06000016", "E06O00016", "E05000001", "X06000016", "", 6000016, None],
)
def test_malformed_gss_codes_are_rejected(text: object) -> None:
    assert not is_well_formed(text)
    if isinstance(text, str):
        with pytest.raises(ValueError, match="not a GSS code"):
            GssCode(text)


def test_the_shipped_table_is_every_uk_authority_of_ons_december_2023(table: LaTable) -> None:
    assert geography_files().vintage == table.vintage == "ONS December 2023"
    lower = [a for a in table if a.is_lower_tier]
    assert len(lower) == 361
    assert sum(a.country_code == ENGLAND for a in lower) == 296
    assert Counter(a.code[:3] for a in lower) == {"E06": 63, "E07": 164, "E08": 36, "E09": 33, "W06": 22,
                                                  "S12": 32, "N09": 11}
    assert len({a.upper_tier_code for a in lower if a.country_code == ENGLAND}) == 153


def test_each_district_lies_in_one_county_of_the_table_and_each_county_in_one_region(table: LaTable) -> None:
    counties = [a for a in table if a.tier is Tier.COUNTY]
    assert len(counties) == 21 and all(c.code.startswith("E10") for c in counties)
    districts = [a for a in table if a.tier is Tier.LTLA_ONLY]
    assert len(districts) == 164
    for district in districts:
        county = table.get(district.upper_tier_code)
        assert county is not None and county.tier is Tier.COUNTY, district.code
        assert district.code in table.districts_of(county.code)
        assert county.region_code == district.region_code, district.code
    assert sum(len(table.districts_of(c.code)) for c in counties) == 164
    assert len(table.districts_of("E10000014")) == 11  # Hampshire


def test_get_returns_the_row(table: LaTable) -> None:
    assert table.get("E06000016") == LocalAuthority("E06000016", "Leicester", Tier.UNITARY, "E06000016", "E12000004",
                                                    ENGLAND)
    assert table.get("E10000018") == LocalAuthority("E10000018", "Leicestershire", Tier.COUNTY, "E10000018",
                                                    "E12000004", ENGLAND)
    cardiff = table.get("W06000015")
    assert cardiff is not None and (cardiff.region_code, cardiff.country_code) == ("W92000004", "W92000004")
    edinburgh = table.get("S12000036")
    assert edinburgh is not None and edinburgh.name == "City of Edinburgh" and edinburgh.region_code == "S92000003"
    assert table.get("E06999999") is None


@pytest.mark.parametrize(
    ("county", "districts"),
    [("E10000018", LEICESTERSHIRE_DISTRICTS), ("E10000024", NOTTINGHAMSHIRE_DISTRICTS)],
)
def test_county_serves_itself_and_its_districts(table: LaTable, county: str, districts: tuple[str, ...]) -> None:
    assert table.districts_of(county) == districts
    assert table.areas_served(county) == frozenset({county, *districts})
    for district in districts:
        assert table.upper_tier_of(district) == county
        assert table.areas_served(district) == frozenset({district})


@pytest.mark.parametrize("code", ["E06000016", "E08000003", "E09000001", "E06000053", "W06000015", "S12000036"])
def test_unitary_is_its_own_upper_tier_and_serves_only_itself(table: LaTable, code: str) -> None:
    authority = table.get(code)
    assert authority is not None and authority.is_lower_tier and authority.is_upper_tier
    assert table.upper_tier_of(code) == code
    assert table.areas_served(code) == frozenset({code})
    assert table.districts_of(code) == ()


def test_regions_and_countries_are_areas_holding_their_authorities(table: LaTable) -> None:
    east_midlands = table.areas_served("E12000004")
    assert {"E06000016", "E10000018", *LEICESTERSHIRE_DISTRICTS} <= east_midlands
    assert "E08000003" not in east_midlands and not table.is_known("E12000004") and table.is_area("E12000004")
    assert len([c for c in east_midlands if not c.startswith("E10")]) == 35
    assert len(table.areas_served(ENGLAND)) == 296 + 21
    assert table.areas_served("W92000004") == {a.code for a in table if a.code.startswith("W")}
    assert (table.name_of("E12000004"), table.name_of("N92000002")) == ("East Midlands", "Northern Ireland")


def test_unknown_code_serves_nothing(table: LaTable) -> None:
    assert not table.is_known("E07000999") and not table.is_area("E07000999")
    assert table.upper_tier_of("E07000999") is None
    assert table.areas_served("E07000999") == frozenset()
    assert table.districts_of("E10000999") == ()
    assert table.why_unknown("E07000999") == ("E07000999 is not in the LA table (ONS December 2023): check the code "
                                              "and its vintage")


@pytest.mark.parametrize(("code", "successors"), [
    ("E07000026", "its successor is E06000063 (Cumberland)"),                    # Allerdale
    ("E07000027", "its successor is E06000064 (Westmorland and Furness)"),       # Barrow-in-Furness
    ("E07000246", "its successor is E06000066 (Somerset)"),                      # Somerset West and Taunton
    ("E10000023", "its successor is E06000065 (North Yorkshire)"),
    ("E10000006", "its successors are E06000063 (Cumberland) and E06000064 (Westmorland and Furness)"),
])
def test_codes_retired_in_april_2023_are_unknown_and_name_their_successors(table: LaTable, code: str,
                                                                          successors: str) -> None:
    assert not table.is_known(code) and table.areas_served(code) == frozenset()
    retired = table.retirement(code)
    assert retired is not None and retired.retired_on.isoformat() == "2023-04-01"
    assert table.why_unknown(code) == f"{code} ({retired.name}) was abolished on 2023-04-01; {successors} " \
                                      "(ONS December 2023)"


def test_all_20_codes_of_the_2023_reorganisation_are_retired(table: LaTable) -> None:
    cumbria = [f"E0700002{n}" for n in range(6, 10)] + ["E07000030", "E07000031", "E10000006"]
    north_yorkshire = [f"E07000{n}" for n in range(163, 170)] + ["E10000023"]
    somerset = ["E07000187", "E07000188", "E07000189", "E07000246", "E10000027"]
    assert all(table.retirement(code) is not None for code in cumbria + north_yorkshire + somerset)


@pytest.mark.parametrize(("year", "metro"), [("23", True), ("24", False)], ids=["may-2023-cty", "may-2024-ctyua"])
def test_an_ons_ward_lookup_reads_as_the_same_table(tmp_path: Path, table: LaTable, year: str, metro: bool) -> None:
    header, rows = ons_ward_rows(year, metro)
    path = tmp_path / "ons.csv"
    with path.open("w", encoding="utf-8-sig", newline="") as handle:  # ONS's files start with a byte-order mark
        csv.writer(handle).writerows([header, *rows])
    loaded = read_la_table(path, "test")
    assert sorted(loaded, key=lambda a: a.code) == sorted(table, key=lambda a: a.code)
    assert read_authority_rows(path) == read_authority_rows(GEOGRAPHY_DIR / "lad-utla-region-2023.csv")


def test_quoted_names_with_commas_load(tmp_path: Path) -> None:
    loaded = read_la_table(write_table(tmp_path, '"E06000023","Bristol, City of",E06000023,"Bristol, City of",'
                                                 "E12000009,South West,England"), "TEST23")
    assert loaded.vintage == "TEST23"
    authority = loaded.get("E06000023")
    assert authority is not None and authority.name == "Bristol, City of"


@pytest.mark.parametrize(
    ("rows", "message"),
    [
        (["E05000001,Ward,E05000001,Ward,E12000004,East Midlands,England"],
         r"la\.csv:2: 'E05000001' is not a LAD code"),
        (["E07000129,Blaby,E06000016,Leicester,E12000004,East Midlands,England"],
         r"la\.csv:2: district E07000129 needs its county"),
        (["E06000016,Leicester,E10000018,Leicestershire,E12000004,East Midlands,England"],
         r"la\.csv:2: E06000016 is a unitary authority, its own upper tier"),
        (["E06000016,Leicester,E06000016,Leicester,E92000001,England,England"], r"la\.csv:2: .*needs an E12 region"),
        (["E06000016,Leicester,E06000016,Leicester,E12000004,East Midlands,Mercia"], r"country 'Mercia'"),
        (["E06000016,Leicester,E06000016"], r"la\.csv:2: expected 7 columns, found 3"),
        ([LEICESTER_ROW, LEICESTER_ROW.replace("E12000004,East Midlands", "E12000005,West Midlands")],
         r"la\.csv:3: E06000016 differs from its row on line 2 \(region_code 'E12000004' then 'E12000005'"),
        ([BLABY_ROW, "E07000130,Charnwood,E10000018,Leicestershire,E12000005,West Midlands,England"],
         r"county E10000018 is named or placed differently"),
        ([LEICESTER_ROW, "E06000018,Nottingham,E06000018,Nottingham,E12000004,Midlands East,England"],
         r"E12000004 is named both 'East Midlands' and 'Midlands East'"),
    ],
)
def test_bad_rows_name_file_line_and_fix(tmp_path: Path, rows: list[str], message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        read_la_table(write_table(tmp_path, *rows), "test")


def test_a_repeated_identical_row_is_one_authority(tmp_path: Path) -> None:
    assert len(read_la_table(write_table(tmp_path, LEICESTER_ROW, LEICESTER_ROW), "test")) == 1


def test_missing_columns_and_missing_file(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="needs columns for region_code, region_name, country"):
        read_la_table(write_table(tmp_path, "E06000016,Leicester,E06000016,Leicester",
                                  header="LAD23CD,LAD23NM,UTLA23CD,UTLA23NM"), "test")
    with pytest.raises(ConfigError, match="cannot read the LA table"):
        read_la_table(tmp_path / "absent.csv", "test")
    with pytest.raises(ConfigError, match=r"cannot read .*geography\.yaml .*accord geography load"):
        load_la_table(tmp_path)


@pytest.mark.parametrize(("successors", "message"), [
    ("E07000129,Blaby,2023-04-01,E06000016", "E07000129 is in force in the LA table and listed as retired"),
    ("E07000026,Allerdale,2023-04-01,E06000063", "successor E06000063 of E07000026 is neither in the LA table"),
    ("E07000026,Allerdale,2023-04-01,E07000027\nE07000027,Barrow,2023-04-01,E07000026", "lead back to"),
    ("E07000026,Allerdale,1 April 2023,E06000016", "retired_on '1 April 2023' is not a date"),
    ("E07000026,Allerdale,2023-04-01,", "must be GSS codes"),
])
def test_a_bad_successors_table_is_refused(tmp_path: Path, successors: str, message: str) -> None:
    path = tmp_path / "successors.csv"
    path.write_text("retired_code,retired_name,retired_on,successor_codes\n" + successors + "\n", encoding="utf-8")
    with pytest.raises(ConfigError, match=message):
        read_la_table(write_table(tmp_path, LEICESTER_ROW, BLABY_ROW), "test", path)


def test_a_successor_retired_later_is_followed_to_the_code_in_force(tmp_path: Path) -> None:
    path = tmp_path / "successors.csv"
    path.write_text("retired_code,retired_name,retired_on,successor_codes\n"
                    "E07000001,Old District,2020-04-01,E07000002\nE07000002,Middle District,2023-04-01,E06000016\n")
    loaded = read_la_table(write_table(tmp_path, LEICESTER_ROW), "test", path)
    assert loaded.why_unknown("E07000001").endswith("its successor is E06000016 (Leicester) (test)")


@pytest.mark.parametrize(("manifest", "message"), [
    ("vintage: ONS\nauthorities: a.csv\n", r"geography\.yaml: needs lsoas"),
    ("vintage: ONS\nvintage: ONS\n", r"geography\.yaml:2: expected one `key: value` line"),
    ("!!python/object/apply:os.getcwd []\n", r"geography\.yaml:1: expected one `key: value` line"),
    ("vintage: ONS\nauthorities: ../bodies.yaml\nlsoas: l.csv\n", r"authorities '\.\./bodies\.yaml' must name a file"),
])
def test_a_bad_manifest_is_refused_with_its_line(tmp_path: Path, manifest: str, message: str) -> None:
    (tmp_path / "geography.yaml").write_text(manifest, encoding="utf-8")
    with pytest.raises(ConfigError, match=message):
        load_la_table(tmp_path)


def test_the_shipped_manifest_reads_as_yaml_too() -> None:
    files = geography_files()
    assert yaml.safe_load((GEOGRAPHY_DIR / "geography.yaml").read_text(encoding="utf-8")) == {
        "vintage": files.vintage, "authorities": files.authorities.name, "lsoas": files.lsoas.name,
        "successors": "successors.csv"}
