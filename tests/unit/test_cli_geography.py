"""`accord geography load`: a newer ONS vintage (ONS's own files) becomes the one in force in one command, checked
first; `accord geography show` says what the table holds."""

from __future__ import annotations

import csv
import shutil
from pathlib import Path

import pytest
from typer.testing import CliRunner

from broker.cli import app
from broker.domain.geography_files import GEOGRAPHY_DIR, geography_files, load_la_table, load_residence
from broker.errors import ConfigError
from tests.unit.geography_support import ons_lsoa_rows, ons_ward_rows

runner = CliRunner()
BARNSLEY, NEW_BARNSLEY = "E08000016", "E08000038"


@pytest.fixture
def geography(tmp_path: Path) -> Path:
    """A copy of the shipped geography directory to load into."""
    return Path(shutil.copytree(GEOGRAPHY_DIR, tmp_path / "geography"))


def _write(path: Path, header: list[str], rows: list[list[str]], recode: dict[str, str]) -> Path:
    with path.open("w", encoding="utf-8-sig", newline="") as handle:
        csv.writer(handle).writerows([header, *([recode.get(cell, cell) for cell in row] for row in rows)])
    return path


def _ons_files(tmp_path: Path, year: str, recode: dict[str, str]) -> tuple[Path, Path]:
    wards = _write(tmp_path / f"Ward_to_LAD_to_CTYUA_to_RGN_to_CTRY_20{year}.csv", *ons_ward_rows(year, False), recode)
    lsoas = _write(tmp_path / f"LSOA21_to_LAD{year}.csv", *ons_lsoa_rows(year), recode)
    return wards, lsoas


def test_a_newer_ons_vintage_is_loaded_in_one_command_and_names_codes_it_drops(tmp_path: Path,
                                                                              geography: Path) -> None:
    # A later release recodes Barnsley: rows must use the new code, and the old one has no successor yet.
    wards, lsoas = _ons_files(tmp_path, "25", {BARNSLEY: NEW_BARNSLEY})
    result = runner.invoke(app, ["geography", "load", str(wards), str(lsoas), "--vintage", "ONS May 2025",
                                 "--into", str(geography)])
    assert result.exit_code == 0, result.output
    assert "ONS May 2025: 361 authorities (296 in England), 21 counties, 35672 LSOAs" in result.output
    assert (f"warning: {BARNSLEY} (Barnsley) of ONS December 2023 is not in ONS May 2025 and has no successor"
            in result.output)
    files = geography_files(geography)
    assert (files.vintage, files.authorities.name, files.lsoas.name) == (
        "ONS May 2025", "lad-utla-region-2025.csv", "lsoa21-lad25-ew.csv")
    assert not (geography / "lad-utla-region-2023.csv").exists() and not (geography / "lsoa21-lad23-ew.csv").exists()
    table = load_la_table(geography)
    assert table.vintage == "ONS May 2025" and table.is_known(NEW_BARNSLEY) and not table.is_known(BARNSLEY)
    assert table.why_unknown("E07000026").startswith("E07000026 (Allerdale) was abolished")  # successors kept
    residence = load_residence(None, geography)
    assert residence is not None and residence.vintage == "ONS May 2025"
    assert residence.lad_of("E01007434") == NEW_BARNSLEY                                      # "Barnsley 001A"


def test_loading_the_shipped_files_again_writes_them_byte_for_byte(tmp_path: Path, geography: Path) -> None:
    before = {path.name: path.read_bytes() for path in geography.iterdir()}
    result = runner.invoke(app, ["geography", "load", str(GEOGRAPHY_DIR / "lad-utla-region-2023.csv"),
                                 str(GEOGRAPHY_DIR / "lsoa21-lad23-ew.csv"), "--vintage", "ONS December 2023",
                                 "--into", str(geography)])
    assert result.exit_code == 0, result.output
    assert {path.name: path.read_bytes() for path in geography.iterdir()} == before


@pytest.mark.parametrize(("recode_lsoas", "problem"), [
    ({BARNSLEY: "E08000099"}, "lies in E08000099, which is no LAD of ONS May 2025; load an LSOA lookup of the same "
                              "vintage"),
    ({BARNSLEY: "E08000019"}, "no LSOA lies in E08000016 of ONS May 2025"),
], ids=["unknown-authority", "authority-without-lsoas"])
def test_lookups_of_different_vintages_are_refused_and_nothing_is_written(
        tmp_path: Path, geography: Path, recode_lsoas: dict[str, str], problem: str) -> None:
    wards, _ = _ons_files(tmp_path, "25", {})
    lsoas = _write(tmp_path / "lsoas.csv", *ons_lsoa_rows("25"), recode_lsoas)
    before = {path.name: path.read_bytes() for path in geography.iterdir()}
    result = runner.invoke(app, ["geography", "load", str(wards), str(lsoas), "--vintage", "ONS May 2025",
                                 "--into", str(geography)])
    assert isinstance(result.exception, ConfigError) and problem in str(result.exception)
    assert {path.name: path.read_bytes() for path in geography.iterdir()} == before


def test_a_vintage_without_a_year_is_refused(tmp_path: Path, geography: Path) -> None:
    wards, lsoas = _ons_files(tmp_path, "25", {})
    result = runner.invoke(app, ["geography", "load", str(wards), str(lsoas), "--vintage", "latest",
                                 "--into", str(geography)])
    assert isinstance(result.exception, ConfigError) and "names no year" in str(result.exception)


def test_show_says_what_the_table_holds_and_why_a_code_is_not_in_it() -> None:
    assert runner.invoke(app, ["geography", "show"]).output == "ONS December 2023: 361 authorities, 21 counties\n"
    blaby = runner.invoke(app, ["geography", "show", "E07000129"]).output
    assert blaby.startswith("E07000129 Blaby: ltla-only, upper tier E10000018, region E12000004 East Midlands")
    assert runner.invoke(app, ["geography", "show", "E12000001"]).output == "E12000001 North East: 12 authorities\n"
    allerdale = runner.invoke(app, ["geography", "show", "E07000026"])
    assert "its successor is E06000063 (Cumberland)" in str(allerdale.exception)
