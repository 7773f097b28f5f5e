"""The trust-to-area lookup (domain/trusts.py) and how a row naming a trust is given its areas (jurisdiction.py)."""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import pytest

from broker.demo.synthetic import for_area
from broker.domain.geography import LaTable
from broker.domain.geography_files import GEOGRAPHY_DIR, load_la_table
from broker.domain.jurisdiction import Unresolved, resolve_areas
from broker.domain.trusts import TRUST_COLUMNS, TrustTable, load_trust_table, read_trust_table
from broker.errors import ConfigError

HEADER = ",".join(TRUST_COLUMNS)
FIELD = frozenset({"trust_ods_code"})


@pytest.fixture(scope="module")
def la() -> LaTable:
    return load_la_table()


@pytest.fixture(scope="module")
def shipped(la: LaTable) -> TrustTable:
    return load_trust_table(GEOGRAPHY_DIR, la)


def _write(tmp_path: Path, *lines: str) -> Path:
    path = tmp_path / "trusts.csv"
    path.write_text("\n".join([HEADER, *lines]) + "\n", encoding="utf-8")
    return path


def test_the_shipped_lookup_puts_leicesters_hospitals_in_leicester_and_leicestershire(shipped: TrustTable) -> None:
    assert len(shipped) == 126
    assert shipped.areas_of("RWE") == frozenset({"E06000016", "E07000129", "E07000130", "E07000131", "E07000132",
                                                 "E07000133", "E07000134", "E07000135"})
    assert shipped.areas_of("rwe ") == shipped.areas_of("RWE")
    assert shipped.name_of("RWE") == "UNIVERSITY HOSPITALS OF LEICESTER NHS TRUST"
    assert "E06000016" not in (shipped.areas_of("RX1") or ())
    assert shipped.areas_of("ZZ9Q") is None


def test_a_districts_principal_trust_is_the_one_admitting_most_of_its_residents(shipped: TrustTable) -> None:
    assert shipped.principal_trust("E06000016") == "RWE"
    assert shipped.principal_trust("E06000001") == "RVW"    # Hartlepool: North Tees and Hartlepool
    # Melton's residents go to Leicester's and Nottingham's hospitals; avoiding Leicester leaves Nottingham's.
    assert shipped.principal_trust("E07000133", avoiding=["E06000016"]) == "RX1"
    assert shipped.principal_trust("E06000016", avoiding=["E06000016"]) is None
    assert shipped.principal_trust("E10000018") is None     # a county is no district of any footprint


def test_a_trust_row_lies_in_every_district_the_trust_serves_and_their_counties(
        la: LaTable, shipped: TrustTable) -> None:
    areas = resolve_areas({"trust_ods_code": "RWE"}, ["trust_ods_code"], la, None, FIELD, shipped)
    assert areas == frozenset({"E06000016", "E10000018", *(f"E07000{n}" for n in range(129, 136))})
    # Nottingham's hospitals serve Melton too: two upper tiers, no disagreement to quarantine.
    nottingham = resolve_areas({"trust_ods_code": "RX1"}, ["trust_ods_code"], la, None, FIELD, shipped)
    assert isinstance(nottingham, frozenset)
    assert {"E06000018", "E10000024", "E07000133", "E10000018"} <= nottingham and "E06000016" not in nottingham


def test_an_unknown_or_missing_trust_is_unresolved_never_everyone(la: LaTable, shipped: TrustTable) -> None:
    unknown = resolve_areas({"trust_ods_code": "ZZ9Q"}, ["trust_ods_code"], la, None, FIELD, shipped)
    assert isinstance(unknown, Unresolved) and unknown.field == "trust_ods_code"
    assert "'ZZ9Q' is no NHS trust of the trust-to-area lookup (nhs-trust-lad.csv, 126 trusts)" in unknown.reason
    missing = resolve_areas({"trust_ods_code": None}, ["trust_ods_code"], la, None, FIELD, shipped)
    assert isinstance(missing, Unresolved) and "no trust field holds a trust code" in missing.reason
    without = resolve_areas({"trust_ods_code": "RWE"}, ["trust_ods_code"], la, None, FIELD, None)
    assert isinstance(without, Unresolved) and "no trust-to-area lookup" in without.reason
    # Untagged, the field is read as an LA code as before, and a trust code is none.
    assert isinstance(resolve_areas({"trust_ods_code": "RWE"}, ["trust_ods_code"], la), Unresolved)


def test_a_deployment_without_a_lookup_has_an_empty_one(tmp_path: Path, la: LaTable) -> None:
    assert len(load_trust_table(tmp_path, la)) == 0


@pytest.mark.parametrize(("line", "says"), [
    ("rwe,UHL,E06000016,Leicester,0.5,1", "trust_code 'rwe' is not an ODS trust code"),
    ("RWE,,E06000016,Leicester,0.5,1", "trust_name is empty for trust RWE"),
    ("RWE,UHL,E10000018,Leicestershire,0.5,1", "'E10000018' is not a district of the LA table in force"),
    ("RWE,UHL,E07000163,Craven,0.5,1", "E07000163"),          # retired in 2023: its successor is named
    ("RWE,UHL,E06000016,Leicester,half,1", "share_of_trust 'half' is not a number"),
    ("RWE,UHL,E06000016,Leicester,0.5,1.5", "share_of_lad 1.5 is not between 0 and 1"),
])
def test_a_bad_row_is_refused_with_its_file_line_and_field(tmp_path: Path, la: LaTable, line: str, says: str
                                                          ) -> None:
    path = _write(tmp_path, "RX1,NUH,E06000018,Nottingham,0.4,1", line)
    with pytest.raises(ConfigError, match=r"trusts\.csv:3: ") as raised:
        read_trust_table(path, la)
    assert says in str(raised.value)


def test_a_retired_district_names_its_successor(tmp_path: Path, la: LaTable) -> None:
    with pytest.raises(ConfigError, match="E06000065"):
        read_trust_table(_write(tmp_path, "RCD,HDFT,E07000165,Harrogate,0.8,1"), la)


def test_missing_columns_and_repeated_districts_are_refused(tmp_path: Path, la: LaTable) -> None:
    bad = tmp_path / "bad.csv"
    bad.write_text("trust_code,lad_code\nRWE,E06000016\n", encoding="utf-8")
    with pytest.raises(ConfigError, match=r"needs the columns .*trust_name, lad_name, share_of_trust, share_of_lad"):
        read_trust_table(bad, la)
    twice = _write(tmp_path, "RWE,UHL,E06000016,Leicester,0.5,1", "RWE,UHL,E06000016,Leicester,0.2,1")
    with pytest.raises(ConfigError, match="trust RWE names district E06000016 twice"):
        read_trust_table(twice, la)


def test_the_drills_t5_rows_are_the_areas_principal_trusts(shipped: TrustTable) -> None:
    day = dt.date(2026, 3, 1)
    rows = for_area("nhse.hospital-sitrep", "E06000016", "E06000016", day, 3, "P", 7, shipped, ["E06000001"])
    assert rows is not None and len(rows) == 3
    assert {r["trust_ods_code"] for r in rows} == {"RWE"} and all(r["date"] == day for r in rows)
    assert for_area("nhse.hospital-sitrep", "E06000016", "E06000016", day, 3, "P", 7, shipped,
                    ["E06000016"]) is None
    assert for_area("nhse.hospital-sitrep", "E06000016", "E06000016", day, 3, "P", 7) is None
