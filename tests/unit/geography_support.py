"""The shipped ONS lookups rewritten as ONS publishes them (ward-level, ONS headers), to test reading ONS's files."""

from __future__ import annotations

import csv

from broker.domain.geography_files import GEOGRAPHY_DIR


def ons_ward_rows(year: str, metro: bool) -> tuple[list[str], list[list[str]]]:
    """The shipped table as an ONS ward-level lookup of `year`: two wards per LAD; `metro` writes CTY like the May
    2023 file (E11 metropolitan county, E13 Inner/Outer London, blank for unitaries), else CTYUA like May 2024 (the
    UTLA, with no region outside England)."""
    kind = "CTY" if metro else "CTYUA"
    header = [f"WD{year}CD", f"LAD{year}CD", f"LAD{year}NM", f"LAD{year}NMW", f"{kind}{year}CD", f"{kind}{year}NM",
              f"RGN{year}CD", f"RGN{year}NM", f"CTRY{year}CD", f"CTRY{year}NM", "ObjectId"]
    rows = []
    with (GEOGRAPHY_DIR / "lad-utla-region-2023.csv").open(encoding="utf-8") as handle:
        for n, row in enumerate(csv.DictReader(handle)):
            code, upper = row["lad_code"], (row["utla_code"], row["utla_name"])
            if metro and code[:3] != "E07":
                upper = {"E08": ("E11000001", "Greater Manchester"), "E09": ("E13000001", "Inner London")}.get(
                    code[:3], ("", ""))
            region = (row["region_code"], row["region_name"]) if metro or row["country"] == "England" else ("", "")
            for ward in (2 * n, 2 * n + 1):
                rows.append([f"E05{ward:06d}", code, row["lad_name"], "", *upper, *region, "", row["country"],
                             str(ward)])
    return header, rows


def ons_lsoa_rows(year: str) -> tuple[list[str], list[list[str]]]:
    """The shipped LSOA lookup with ONS's headers (LSOA21CD, LAD<year>CD, ...) and an ObjectId column."""
    header = ["LSOA21CD", "LSOA21NM", f"LAD{year}CD", f"LAD{year}NM", "ObjectId"]
    with (GEOGRAPHY_DIR / "lsoa21-lad23-ew.csv").open(encoding="utf-8") as handle:
        rows = [[*row, str(n)] for n, row in enumerate(csv.reader(handle)) if n]
    return header, rows
