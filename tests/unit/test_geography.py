from __future__ import annotations

from pathlib import Path

import pytest

from broker.domain.geography import (
    DEFAULT_LA_TABLE_PATH,
    GssCode,
    LaTable,
    LocalAuthority,
    Tier,
    is_well_formed,
    load_la_table,
)
from broker.errors import ConfigError

LEICESTERSHIRE_DISTRICTS = tuple(f"E07000{n}" for n in range(129, 136))
NOTTINGHAMSHIRE_DISTRICTS = tuple(f"E07000{n}" for n in range(170, 177))
HEADER = "code,name,tier,upper_tier_code,region_code"


@pytest.fixture(scope="module")
def table() -> LaTable:
    return load_la_table()


def write_table(tmp_path: Path, *rows: str) -> Path:
    path = tmp_path / "la.csv"
    path.write_text("\n".join(["# vintage: TEST23", HEADER, *rows]) + "\n", encoding="utf-8")
    return path


@pytest.mark.parametrize(
    ("code", "entity"),
    [("E01013627", "LSOA"), ("E02002830", "MSOA"), ("E06000016", "English unitary authority"),
     ("E07000129", "non-metropolitan district"), ("E10000018", "county"), ("E54000015", "integrated care board"),
     ("W06000015", "Welsh local authority"), ("S12000036", "Scottish council area"), ("S92000003", "Scotland")],
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


def test_default_table_carries_its_vintage(table: LaTable) -> None:
    assert DEFAULT_LA_TABLE_PATH.is_file()
    assert "LAD23CD" in table.vintage
    assert len(table) >= 28


def test_get_returns_the_row(table: LaTable) -> None:
    assert table.get("E06000016") == LocalAuthority("E06000016", "Leicester", Tier.UNITARY, "E06000016", "E12000004")
    cardiff = table.get("W06000015")
    assert cardiff is not None and cardiff.region_code == "W92000004"
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


def test_unknown_code_serves_nothing(table: LaTable) -> None:
    assert not table.is_known("E07000999")
    assert table.upper_tier_of("E07000999") is None
    assert table.areas_served("E07000999") == frozenset()
    assert table.districts_of("E10000999") == ()


def test_tiers_match_prefixes_in_shipped_table(table: LaTable) -> None:
    expected = {"E07": Tier.LTLA_ONLY, "E10": Tier.COUNTY}
    for authority in table:
        assert authority.tier is expected.get(authority.code[:3], Tier.UNITARY), authority.code
        assert table.is_known(table.upper_tier_of(authority.code) or ""), authority.code


def test_quoted_names_with_commas_load(tmp_path: Path) -> None:
    loaded = load_la_table(write_table(tmp_path, '"E06000023","Bristol, City of",unitary,E06000023,E12000009'))
    assert loaded.vintage == "TEST23"
    authority = loaded.get("E06000023")
    assert authority is not None and authority.name == "Bristol, City of"


@pytest.mark.parametrize(
    ("row", "message"),
    [
        ("E06000016,Leicester,single,E06000016,E12000004", r"la\.csv:3: tier 'single'"),
        ("E07000129,Blaby,unitary,E07000129,E12000004", r"la\.csv:3: code 'E07000129' is not a unitary"),
        ("E06000016,Leicester,unitary,E10000018,E12000004", r"la\.csv:3: .*set upper_tier_code to E06000016"),
        ("E07000129,Blaby,ltla-only,E06000016,E12000004", r"la\.csv:3: a district's upper_tier_code"),
        ("E07000129,Blaby,ltla-only,E10000018,E12000004", r"names county E10000018, which has no row"),
        ("E06000016,Leicester,unitary,E06000016,E92000001", r"la\.csv:3: region_code 'E92000001'"),
        ("E06000016,Leicester,unitary,E06000016", r"la\.csv:3: expected 5 columns"),
    ],
)
def test_bad_rows_name_file_line_and_fix(tmp_path: Path, row: str, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        load_la_table(write_table(tmp_path, row))


def test_duplicate_codes_are_refused(tmp_path: Path) -> None:
    row = "E06000016,Leicester,unitary,E06000016,E12000004"
    with pytest.raises(ConfigError, match="duplicate LA code E06000016"):
        load_la_table(write_table(tmp_path, row, row))


def test_missing_header_and_missing_file(tmp_path: Path) -> None:
    bad = tmp_path / "no-header.csv"
    bad.write_text("E06000016,Leicester,unitary,E06000016,E12000004\n", encoding="utf-8")
    with pytest.raises(ConfigError, match="must be the header"):
        load_la_table(bad)
    with pytest.raises(ConfigError, match="cannot read the LA table"):
        load_la_table(tmp_path / "absent.csv")
