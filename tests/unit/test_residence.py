"""The residence lookup (ONS LSOA → LAD) and its precedence over a record's own LA code fields."""

from __future__ import annotations

from pathlib import Path

import pytest

from broker.config import Settings
from broker.domain.geography_files import load_la_table, load_residence
from broker.domain.jurisdiction import resolve_areas
from broker.domain.residence import ResidenceTable, load_residence_table
from broker.domain.topics import delivery_topic
from broker.errors import ConfigError
from tests.unit.gate_fakes import INGEST, T1, make_gate

LOOKUP = Path(__file__).resolve().parents[1] / "data/lsoa-lad-test.csv"
BLABY, LEICESTER, COUNTY = "E07000129", "E06000016", "E10000018"


def test_an_ons_style_lookup_is_read_whatever_its_other_columns() -> None:
    table = load_residence_table(LOOKUP)
    assert (len(table), table.vintage) == (3, "LSOA21CD/LAD23CD")
    assert table.lad_of("E01025610") == BLABY and table.lad_of(" e01025610 ") == BLABY
    assert table.lad_of("E01000000") is None and table.lad_of(None) is None


@pytest.mark.parametrize(("text", "problem"), [
    ("code,lad\nE01025610,E07000129\n", "needs an LSOA code column"),
    ("LSOA21CD,LAD23CD\nE01025610,Blaby\n", ":2: LSOA21CD='E01025610', LAD23CD='BLABY' are not an LSOA code and a"),
    ("LSOA21CD,LAD23CD\nE01025610,E07000129\nE01025610,E06000016\n", ":3: LSOA E01025610 is listed in E07000129"),
], ids=["header", "not-a-code", "two-authorities"])
def test_a_malformed_lookup_is_refused_with_its_line(tmp_path: Path, text: str, problem: str) -> None:
    path = tmp_path / "lookup.csv"
    path.write_text(text)
    with pytest.raises(ConfigError, match=r"lookup\.csv") as raised:
        load_residence_table(path)
    assert problem in str(raised.value)
    with pytest.raises(ConfigError, match="ACCORD_RESIDENCE_LOOKUP"):
        load_residence_table(tmp_path / "missing.csv")


def test_the_residence_wins_over_fields_naming_the_testing_sites_council() -> None:
    la = load_la_table()
    record = {"utla": LEICESTER, "ltla": LEICESTER}
    assert resolve_areas(record, ("utla", "ltla"), la, BLABY) == frozenset({BLABY, COUNTY})
    # not in the LA table: the fields decide
    assert resolve_areas(record, ("utla", "ltla"), la, "E06000099") == frozenset({LEICESTER})


def test_the_gate_routes_a_row_by_its_residents_lsoa_when_the_lookup_knows_it() -> None:
    h = make_gate(residence=ResidenceTable({"E01025610": BLABY}, "test"))
    h.gate.start()
    tested_in_leicester = {"utla": LEICESTER, "ltla": LEICESTER}
    h.stage.queue(h.record(0, **tested_in_leicester, lsoa="E01025610"), h.record(1, **tested_in_leicester))

    h.gate.step()

    county = h.delivered(delivery_topic("leicestershire-county-council", "dph", T1))
    city = h.delivered(delivery_topic("leicester-city-council", "dph", T1))
    assert [s.headers["accord.source"] for s in county] == [f"{INGEST}/0/0".encode()]
    assert [s.headers["accord.source"] for s in city] == [f"{INGEST}/0/1".encode()]
    assert (h.decode(county[0]) or {})["lsoa"] == "E01025610"


def test_the_shipped_ons_lookup_places_every_lsoa_of_england_and_wales_in_an_authority_of_the_la_table() -> None:
    table = load_residence(None)
    assert table is not None and table.vintage == "ONS December 2023"
    la = load_la_table()
    by_authority = table.by_authority()
    assert len(table) == 35_672
    assert sum(len(lsoas) for lad, lsoas in by_authority.items() if lad[0] == "W") == 1_917
    assert all(la.is_known(lad) and la.get(lad).is_lower_tier for lad in by_authority)  # type: ignore[union-attr]
    # every district and unitary of England and Wales holds LSOAs; Scotland and Northern Ireland have none
    lower = {a.code for a in la if a.is_lower_tier and a.code[0] in "EW"}
    assert set(by_authority) == lower and len(lower) == 318
    assert table.lad_of("E01013627") == LEICESTER                    # "Leicester 007C"
    assert table.lad_of("W01001694") == "W06000015"                  # "Cardiff 036A"
    assert table.lad_of("E01019078") == "E06000063"                  # "Allerdale 007A": now Cumberland


def test_residence_is_on_by_default_and_a_setting_names_another_lookup_or_turns_it_off(
        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("ACCORD_RESIDENCE_LOOKUP", raising=False)
    assert Settings().residence_lookup is None
    default = load_residence(Settings().residence_lookup)
    assert default is not None and len(default) == 35_672
    monkeypatch.setenv("ACCORD_RESIDENCE_LOOKUP", str(LOOKUP))
    chosen = load_residence(Settings().residence_lookup)
    assert chosen is not None and len(chosen) == 3
    for off in ("off", "OFF", "", "none"):
        monkeypatch.setenv("ACCORD_RESIDENCE_LOOKUP", off)
        assert Settings().residence_lookup == "off"
        assert load_residence(Settings().residence_lookup) is None
