"""The trust-to-area lookup: which local authority districts each NHS trust serves (catalog/geography/README.md), so
that rows naming a trust (`geography:trust`) reach the councils of its footprint and no one else.

Errors name the file, line and column and say what to fix; nothing here knows about Kafka, OPA or HTTP.
"""

from __future__ import annotations

import csv
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path

from broker.domain.geography import LaTable
from broker.errors import ConfigError

TRUST_TAG = "geography:trust"
TRUST_FILE = "nhs-trust-lad.csv"   # in the geography directory, beside the LA table it names districts of
TRUST_COLUMNS = ("trust_code", "trust_name", "lad_code", "lad_name", "share_of_trust", "share_of_lad")
_ODS_TRUST = re.compile(r"[A-Z0-9]{3,5}")


@dataclass(frozen=True)
class TrustArea:
    """One district of a trust's footprint, with the shares that put it there."""

    trust_code: str
    trust_name: str
    lad_code: str
    share_of_trust: float   # of the trust's admissions, those from residents of the district
    share_of_lad: float     # of the district's residents admitted anywhere, those admitted by the trust


@dataclass(frozen=True)
class TrustTable:
    """Each trust's footprint (LAD codes); empty when a deployment has no lookup, so every trust row is unresolved."""

    rows: tuple[TrustArea, ...] = ()
    source: str = ""
    _areas: dict[str, frozenset[str]] = field(default_factory=dict, init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        footprints: dict[str, set[str]] = {}
        for row in self.rows:
            footprints.setdefault(row.trust_code, set()).add(row.lad_code)
        self._areas.update({code: frozenset(lads) for code, lads in footprints.items()})

    def __len__(self) -> int:
        return len(self._areas)

    def areas_of(self, trust_code: str) -> frozenset[str] | None:
        """The districts trust `trust_code` serves; None for a trust the lookup does not hold."""
        return self._areas.get(trust_code.strip().upper())

    def name_of(self, trust_code: str) -> str | None:
        return next((row.trust_name for row in self.rows if row.trust_code == trust_code), None)

    def principal_trust(self, lad_code: str, avoiding: Iterable[str] = ()) -> str | None:
        """The trust admitting the largest share of the district's residents whose footprint has none of the
        districts `avoiding`; None when no such trust serves it."""
        shunned = set(avoiding)
        serving = [row for row in self.rows if row.lad_code == lad_code
                   and not self._areas[row.trust_code] & shunned]
        return max(serving, key=lambda row: (row.share_of_lad, row.trust_code)).trust_code if serving else None


def read_trust_table(path: Path, la: LaTable) -> TrustTable:
    """The lookup in `path` (TRUST_COLUMNS); every district must be a lower-tier authority of the LA table in force."""
    try:
        with path.open(encoding="utf-8-sig", newline="") as handle:
            reader = csv.DictReader(handle)
            header = [name.strip() for name in reader.fieldnames or ()]
            if missing := [name for name in TRUST_COLUMNS if name not in header]:
                raise ConfigError(f"{path}: the trust-to-area lookup needs the columns {','.join(TRUST_COLUMNS)}; "
                                  f"{', '.join(missing)} missing (found {', '.join(header) or 'none'})")
            rows = [_trust_area(f"{path}:{reader.line_num}", cells, la) for cells in reader
                    if any((cell or "").strip() for cell in cells.values())]
    except OSError as exc:
        raise ConfigError(f"cannot read the trust-to-area lookup {path}: {exc.strerror}; check the path") from exc
    seen: dict[tuple[str, str], int] = {}
    for index, row in enumerate(rows):
        if (pair := (row.trust_code, row.lad_code)) in seen:
            raise ConfigError(f"{path}: trust {row.trust_code} names district {row.lad_code} twice (rows "
                              f"{seen[pair] + 1} and {index + 1} after the header); keep one")
        seen[pair] = index
    return TrustTable(tuple(rows), str(path.name))


def load_trust_table(directory: Path, la: LaTable) -> TrustTable:
    """The lookup shipped beside the LA table (TRUST_FILE), or an empty one when a deployment has none."""
    path = directory / TRUST_FILE
    return read_trust_table(path, la) if path.is_file() else TrustTable()


def _trust_area(where: str, cells: Mapping[str, str | None], la: LaTable) -> TrustArea:
    code, name, lad = ((cells.get(key) or "").strip() for key in ("trust_code", "trust_name", "lad_code"))
    if not _ODS_TRUST.fullmatch(code):
        raise ConfigError(f"{where}: trust_code {code!r} is not an ODS trust code (3 to 5 capitals or digits, "
                          "such as RWE)")
    if not name:
        raise ConfigError(f"{where}: trust_name is empty for trust {code}")
    authority = la.get(lad)
    if authority is None or not authority.is_lower_tier:
        why = la.why_unknown(lad) if la.retirement(lad) else f"{lad!r} is not a district of the LA table in force"
        raise ConfigError(f"{where}: lad_code of trust {code}: {why}; name a LAD code such as E06000016")
    shares = [_share(where, key, cells.get(key)) for key in ("share_of_trust", "share_of_lad")]
    return TrustArea(code, name, lad, shares[0], shares[1])


def _share(where: str, key: str, cell: str | None) -> float:
    try:
        value = float((cell or "").strip())
    except ValueError:
        raise ConfigError(f"{where}: {key} {cell!r} is not a number between 0 and 1") from None
    if not 0.0 <= value <= 1.0:
        raise ConfigError(f"{where}: {key} {value} is not between 0 and 1")
    return value
