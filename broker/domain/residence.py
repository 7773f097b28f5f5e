"""Where a resident lives: the local authority of each LSOA, from ONS's LSOA-to-LAD lookup.

The record's own LA code fields may name the council of the testing site rather than the resident's; the LSOA of
the residence postcode, looked up here, is the residence and wins (domain scenario 4). The lookup ships in
catalog/geography (ONS "LSOA (2021) to Electoral Ward (2023) to LAD (2023) Best Fit Lookup in EW") and is used by
default; ACCORD_RESIDENCE_LOOKUP names another ONS lookup CSV, or `off`. For an LSOA it does not list, rows are routed
by their LA code fields alone.
"""

from __future__ import annotations

import _csv
import csv
import re
from collections.abc import Mapping
from pathlib import Path
from types import MappingProxyType

from broker.domain.geography import LSOA_PREFIXES, LTLA_PREFIXES
from broker.errors import ConfigError

# ONS's headers (LSOA21CD, LAD23CD) or Accord's (lsoa21_code, lad_code).
_LSOA_COLUMN = re.compile(r"LSOA[0-9]{2}CD|lsoa[0-9]{2}_code", re.IGNORECASE)
_LAD_COLUMN = re.compile(r"LAD[0-9]{2}CD|lad_code", re.IGNORECASE)
_CODE = re.compile(r"[A-Z][0-9]{8}")


class ResidenceTable:
    """LSOA code → the code of the lower-tier authority it lies in; `vintage` says which lookup it is."""

    def __init__(self, lad_of: Mapping[str, str], vintage: str) -> None:
        self._lad_of = MappingProxyType(dict(lad_of))
        self.vintage = vintage

    def __len__(self) -> int:
        return len(self._lad_of)

    def lad_of(self, lsoa: object) -> str | None:
        return self._lad_of.get(lsoa.strip().upper()) if isinstance(lsoa, str) else None

    def by_authority(self) -> dict[str, tuple[str, ...]]:
        """Each authority's LSOAs, sorted (built on each call: for checks and synthetic data, not the hot path)."""
        found: dict[str, list[str]] = {}
        for lsoa, lad in self._lad_of.items():
            found.setdefault(lad, []).append(lsoa)
        return {lad: tuple(sorted(lsoas)) for lad, lsoas in found.items()}


def load_residence_table(path: Path, vintage: str | None = None) -> ResidenceTable:
    """Read an LSOA-to-LAD lookup CSV: any columns, two of them named like LSOA21CD and LAD23CD (or Accord's
    lsoa21_code and lad_code). `vintage` defaults to those two column names."""
    try:
        with path.open(encoding="utf-8-sig", newline="") as handle:
            reader = csv.reader(handle)
            header = [name.strip() for name in next(reader, [])]
            lsoa = next((i for i, name in enumerate(header) if _LSOA_COLUMN.fullmatch(name)), None)
            lad = next((i for i, name in enumerate(header) if _LAD_COLUMN.fullmatch(name)), None)
            if lsoa is None or lad is None:
                raise ConfigError(f"{path}: the header needs an LSOA code column (e.g. LSOA21CD) and a LAD code "
                                  f"column (e.g. LAD23CD); found {', '.join(header) or 'none'}")
            found = _read(path, reader, header[lsoa], lsoa, header[lad], lad)
    except OSError as exc:
        raise ConfigError(f"cannot read the residence lookup {path}: {exc.strerror}; check "
                          "ACCORD_RESIDENCE_LOOKUP") from exc
    return ResidenceTable(found, vintage or f"{header[lsoa]}/{header[lad]}")


def _read(path: Path, reader: _csv.Reader, lsoa_name: str, lsoa: int, lad_name: str, lad: int) -> dict[str, str]:
    # One pass, no per-row dicts: this runs in every gate worker at start over ~36,000 rows.
    found: dict[str, str] = {}
    authorities: dict[str, str] = {}  # one string per authority code, shared by all its LSOAs
    width = max(lsoa, lad) + 1
    for cells in reader:
        if len(cells) < width:
            if not any(cell.strip() for cell in cells):
                continue
            raise ConfigError(f"{path}:{reader.line_num}: expected {lsoa_name} and {lad_name}, found {len(cells)} "
                              "columns")
        code, authority = cells[lsoa].strip().upper(), cells[lad].strip().upper()
        if not (_CODE.fullmatch(code) and code[:3] in LSOA_PREFIXES
                and _CODE.fullmatch(authority) and authority[:3] in LTLA_PREFIXES):
            raise ConfigError(f"{path}:{reader.line_num}: {lsoa_name}={code!r}, {lad_name}={authority!r} are not an "
                              "LSOA code and a LAD code; use ONS's lookup as published")
        authority = authorities.setdefault(authority, authority)
        if found.setdefault(code, authority) != authority:
            raise ConfigError(f"{path}:{reader.line_num}: LSOA {code} is listed in {found[code]} and "
                              f"{authority}; an LSOA lies in one authority")
    return found
