"""Where a resident lives: the local authority of each LSOA, from ONS's LSOA-to-LAD lookup.

The record's own LA code fields may name the council of the testing site rather than the resident's; the LSOA of
the residence postcode, looked up here, is the residence and wins (domain scenario 4). The lookup is ONS open data
(e.g. "LSOA (2021) to LAD (2023) Lookup in England and Wales") and is not shipped: set ACCORD_RESIDENCE_LOOKUP to
its CSV. Without it, or for an LSOA it does not list, rows are routed by their LA code fields alone.
"""

from __future__ import annotations

import csv
import re
from collections.abc import Mapping
from pathlib import Path
from types import MappingProxyType

from broker.domain.geography import is_well_formed
from broker.errors import ConfigError

_LSOA_COLUMN = re.compile(r"LSOA[0-9]{2}CD", re.IGNORECASE)
_LAD_COLUMN = re.compile(r"LAD[0-9]{2}CD", re.IGNORECASE)


class ResidenceTable:
    """LSOA code → the code of the lower-tier authority it lies in; `vintage` names the lookup's columns."""

    def __init__(self, lad_of: Mapping[str, str], vintage: str) -> None:
        self._lad_of = MappingProxyType(dict(lad_of))
        self.vintage = vintage

    def __len__(self) -> int:
        return len(self._lad_of)

    def lad_of(self, lsoa: object) -> str | None:
        return self._lad_of.get(lsoa.strip().upper()) if isinstance(lsoa, str) else None


def load_residence_table(path: Path) -> ResidenceTable:
    """Read an ONS LSOA-to-LAD lookup CSV: any columns, two of them named like LSOA21CD and LAD23CD."""
    try:
        with path.open(encoding="utf-8-sig", newline="") as handle:
            reader = csv.DictReader(handle)
            header = reader.fieldnames or []
            lsoa = next((name for name in header if _LSOA_COLUMN.fullmatch(name.strip())), None)
            lad = next((name for name in header if _LAD_COLUMN.fullmatch(name.strip())), None)
            if lsoa is None or lad is None:
                raise ConfigError(f"{path}: the header needs an LSOA code column (e.g. LSOA21CD) and a LAD code "
                                  f"column (e.g. LAD23CD); found {', '.join(header) or 'none'}")
            found: dict[str, str] = {}
            for row in reader:
                code, authority = (row.get(lsoa) or "").strip().upper(), (row.get(lad) or "").strip().upper()
                if not (is_well_formed(code) and is_well_formed(authority)):
                    raise ConfigError(f"{path}:{reader.line_num}: {lsoa}={code!r}, {lad}={authority!r} are not both "
                                      "GSS codes; use ONS's lookup as published")
                if found.setdefault(code, authority) != authority:
                    raise ConfigError(f"{path}:{reader.line_num}: LSOA {code} is listed in {found[code]} and "
                                      f"{authority}; an LSOA lies in one authority")
    except OSError as exc:
        raise ConfigError(f"cannot read the residence lookup {path}: {exc.strerror}; check "
                          "ACCORD_RESIDENCE_LOOKUP") from exc
    return ResidenceTable(found, f"{lsoa.strip()}/{lad.strip()}")
