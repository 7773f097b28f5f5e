"""ONS GSS codes and the local-authority table that decides which council a row belongs to."""

from __future__ import annotations

import csv
import re
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass
from enum import Enum
from pathlib import Path
from types import MappingProxyType

from broker.errors import ConfigError

DEFAULT_LA_TABLE_PATH = Path(__file__).resolve().parents[2] / "catalog/geography/la-codes-2023.csv"

# Only entities Accord routes or validates on; an unlisted prefix (e.g. E05 ward) is treated as malformed
# so that a code of the wrong kind is rejected rather than silently accepted.
GSS_ENTITIES: Mapping[str, str] = MappingProxyType({
    "E01": "LSOA",
    "E02": "MSOA",
    "E06": "English unitary authority",
    "E07": "non-metropolitan district",
    "E08": "metropolitan district",
    "E09": "London borough",
    "E10": "county",
    "E12": "region",
    "E54": "integrated care board",
    "E92": "England",
    "W06": "Welsh local authority",
    "S12": "Scottish council area",
    "N09": "Northern Ireland local government district",
    "W92": "Wales",
    "S92": "Scotland",
})

LTLA_PREFIXES = frozenset({"E06", "E07", "E08", "E09", "W06", "S12", "N09"})
UTLA_PREFIXES = frozenset({"E06", "E08", "E09", "E10", "W06", "S12", "N09"})
_UNITARY_PREFIXES = LTLA_PREFIXES & UTLA_PREFIXES
_REGION_PREFIXES = frozenset({"E12", "W92", "S92"})
_GSS_SHAPE = re.compile(r"[A-Z][0-9]{8}")
_COLUMNS = ("code", "name", "tier", "upper_tier_code", "region_code")


def is_well_formed(text: object) -> bool:
    """True if `text` is a 9-character GSS code (letter + 8 digits) with a known entity prefix."""
    return isinstance(text, str) and _GSS_SHAPE.fullmatch(text) is not None and text[:3] in GSS_ENTITIES


@dataclass(frozen=True)
class GssCode:
    """A well-formed GSS code; constructing one with a malformed value raises ValueError."""

    value: str

    def __post_init__(self) -> None:
        if not is_well_formed(self.value):
            raise ValueError(
                f"not a GSS code: {self.value!r}; expected a letter and 8 digits with a known prefix "
                f"({', '.join(sorted(GSS_ENTITIES))})"
            )

    @property
    def prefix(self) -> str:
        return self.value[:3]

    @property
    def entity(self) -> str:
        """What kind of area the code names, e.g. 'LSOA' or 'county'."""
        return GSS_ENTITIES[self.prefix]

    def __str__(self) -> str:
        return self.value


class Tier(Enum):
    """Where an authority sits in the two-tier system."""

    LTLA_ONLY = "ltla-only"
    UNITARY = "unitary"
    COUNTY = "county"


@dataclass(frozen=True)
class LocalAuthority:
    """One row of the LA table."""

    code: str
    name: str
    tier: Tier
    upper_tier_code: str
    region_code: str

    @property
    def is_lower_tier(self) -> bool:
        return self.tier is not Tier.COUNTY

    @property
    def is_upper_tier(self) -> bool:
        return self.tier is not Tier.LTLA_ONLY


class LaTable:
    """Local authorities of one vintage; unknown codes serve nothing and have no upper tier."""

    def __init__(self, authorities: Iterable[LocalAuthority], vintage: str = "") -> None:
        self.vintage = vintage
        self._by_code: dict[str, LocalAuthority] = {}
        self._districts: dict[str, list[str]] = {}
        for authority in authorities:
            if authority.code in self._by_code:
                raise ValueError(f"duplicate LA code {authority.code}")
            self._by_code[authority.code] = authority
            if authority.tier is Tier.LTLA_ONLY:
                self._districts.setdefault(authority.upper_tier_code, []).append(authority.code)

    def __len__(self) -> int:
        return len(self._by_code)

    def __iter__(self) -> Iterator[LocalAuthority]:
        return iter(self._by_code.values())

    def get(self, code: str) -> LocalAuthority | None:
        return self._by_code.get(code)

    def is_known(self, code: str) -> bool:
        return code in self._by_code

    def upper_tier_of(self, code: str) -> str | None:
        """The UTLA holding public-health duties for `code` (itself for unitaries and counties)."""
        authority = self._by_code.get(code)
        return authority.upper_tier_code if authority else None

    def districts_of(self, county_code: str) -> tuple[str, ...]:
        """The E07 districts under a county, sorted; empty for anything that is not a county."""
        return tuple(sorted(self._districts.get(county_code, ())))

    def areas_served(self, code: str) -> frozenset[str]:
        """The LA codes whose rows a subscriber at `code` may receive; empty for an unknown code."""
        authority = self._by_code.get(code)
        if authority is None:
            return frozenset()
        if authority.tier is Tier.COUNTY:
            return frozenset({code, *self.districts_of(code)})
        return frozenset({code})


def load_la_table(path: Path = DEFAULT_LA_TABLE_PATH) -> LaTable:
    """Read the LA table csv; `# vintage: ...` comment lines name the codes' vintage."""
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except OSError as exc:
        raise ConfigError(f"cannot read the LA table {path}: {exc.strerror}; check the path") from exc
    vintage = ""
    numbered: list[tuple[int, str]] = []
    for lineno, line in enumerate(lines, start=1):
        if line.startswith("#"):
            vintage = vintage or _vintage_from_comment(line)
        elif line.strip():
            numbered.append((lineno, line))
    if not numbered or tuple(next(csv.reader([numbered[0][1]]))) != _COLUMNS:
        raise ConfigError(f"{path}: the first non-comment line must be the header {','.join(_COLUMNS)}")
    rows = zip(numbered[1:], csv.reader(line for _, line in numbered[1:]), strict=True)
    authorities = [_parse_row(path, lineno, cells) for (lineno, _), cells in rows]
    _check_counties(path, authorities)
    try:
        return LaTable(authorities, vintage)
    except ValueError as exc:
        raise ConfigError(f"{path}: {exc}; keep one row per code") from exc


def _vintage_from_comment(line: str) -> str:
    key, _, value = line.lstrip("#").partition(":")
    return value.strip() if key.strip().lower() == "vintage" else ""


def _parse_row(path: Path, lineno: int, cells: list[str]) -> LocalAuthority:
    where = f"{path}:{lineno}"
    if len(cells) != len(_COLUMNS):
        raise ConfigError(f"{where}: expected {len(_COLUMNS)} columns ({','.join(_COLUMNS)}), found {len(cells)}")
    code, name, tier_text, upper, region = (cell.strip() for cell in cells)
    try:
        tier = Tier(tier_text)
    except ValueError:
        allowed = ", ".join(t.value for t in Tier)
        raise ConfigError(f"{where}: tier {tier_text!r} is not one of {allowed}") from None
    if not is_well_formed(code) or code[:3] not in _prefixes_for(tier):
        raise ConfigError(f"{where}: code {code!r} is not a {tier.value} GSS code ({', '.join(_prefixes_for(tier))})")
    if not is_well_formed(region) or region[:3] not in _REGION_PREFIXES:
        raise ConfigError(f"{where}: region_code {region!r} must be an E12, W92 or S92 code")
    if tier is Tier.LTLA_ONLY and not upper.startswith("E10"):
        raise ConfigError(f"{where}: a district's upper_tier_code must be its E10 county, not {upper!r}")
    if tier is not Tier.LTLA_ONLY and upper != code:
        raise ConfigError(f"{where}: a {tier.value} is its own upper tier; set upper_tier_code to {code}")
    if not name:
        raise ConfigError(f"{where}: name is empty")
    return LocalAuthority(code, name, tier, upper, region)


def _prefixes_for(tier: Tier) -> tuple[str, ...]:
    if tier is Tier.LTLA_ONLY:
        return ("E07",)
    if tier is Tier.COUNTY:
        return ("E10",)
    return tuple(sorted(_UNITARY_PREFIXES))


def _check_counties(path: Path, authorities: list[LocalAuthority]) -> None:
    # A district pointing at a county missing from the table would make upper_tier_of() name an
    # authority that get() cannot find, so routing to the DPH would fail later and less clearly.
    counties = {a.code for a in authorities if a.tier is Tier.COUNTY}
    for authority in authorities:
        if authority.tier is Tier.LTLA_ONLY and authority.upper_tier_code not in counties:
            raise ConfigError(
                f"{path}: district {authority.code} names county {authority.upper_tier_code}, "
                "which has no row; add the county row"
            )
