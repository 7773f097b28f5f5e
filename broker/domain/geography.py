"""ONS GSS codes and the local-authority table of one ONS vintage that decides which council a row belongs to.

The table holds every lower-tier authority (LAD) with its upper tier, region and country, the counties (E10) made
from their districts, and the codes that a reorganisation retired with their successors, so that an old code is
refused with the code to use instead. Reading and writing the files is broker/domain/geography_files.py.
"""

from __future__ import annotations

import datetime as dt
import re
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass
from enum import Enum
from types import MappingProxyType

# Only entities Accord routes or validates on; an unlisted prefix (e.g. E05 ward) is treated as malformed
# so that a code of the wrong kind is rejected rather than silently accepted.
GSS_ENTITIES: Mapping[str, str] = MappingProxyType({
    "E01": "LSOA",
    "W01": "Welsh LSOA",
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
    "N92": "Northern Ireland",
})

LTLA_PREFIXES = frozenset({"E06", "E07", "E08", "E09", "W06", "S12", "N09"})
UTLA_PREFIXES = frozenset({"E06", "E08", "E09", "E10", "W06", "S12", "N09"})
LSOA_PREFIXES = frozenset({"E01", "W01"})
# ONS codes of the four countries; outside England a country also stands for its region, as in ONS's lookups.
COUNTRY_CODES: Mapping[str, str] = MappingProxyType({
    "England": "E92000001", "Wales": "W92000004", "Scotland": "S92000003", "Northern Ireland": "N92000002"})
_GSS_SHAPE = re.compile(r"[A-Z][0-9]{8}")


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


def tier_of(code: str) -> Tier:
    """The tier an authority's code prefix gives it: E07 districts, E10 counties, every other LA unitary."""
    return {"E07": Tier.LTLA_ONLY, "E10": Tier.COUNTY}.get(code[:3], Tier.UNITARY)


@dataclass(frozen=True)
class LocalAuthority:
    """One authority of the table: a LAD, or a county made from its districts."""

    code: str
    name: str
    tier: Tier
    upper_tier_code: str
    region_code: str     # E12 in England; the country's code elsewhere
    country_code: str

    @property
    def is_lower_tier(self) -> bool:
        return self.tier is not Tier.COUNTY

    @property
    def is_upper_tier(self) -> bool:
        return self.tier is not Tier.LTLA_ONLY


@dataclass(frozen=True)
class Retirement:
    """A code a reorganisation abolished, and the authorities that took over its area."""

    code: str
    name: str
    retired_on: dt.date
    successors: tuple[str, ...]


class LaTable:
    """Local authorities of one vintage; unknown codes serve nothing and have no upper tier.

    `places` names the regions and countries (code → name); `retired` lists abolished codes with their successors.
    """

    def __init__(self, authorities: Iterable[LocalAuthority], vintage: str = "",
                 places: Mapping[str, str] | None = None, retired: Iterable[Retirement] = ()) -> None:
        self.vintage = vintage
        self._by_code: dict[str, LocalAuthority] = {}
        self._districts: dict[str, list[str]] = {}
        self._within: dict[str, set[str]] = {}  # region or country code → every authority in it
        for authority in authorities:
            if authority.code in self._by_code:
                raise ValueError(f"duplicate LA code {authority.code}")
            self._by_code[authority.code] = authority
            if authority.tier is Tier.LTLA_ONLY:
                self._districts.setdefault(authority.upper_tier_code, []).append(authority.code)
            for place in {authority.region_code, authority.country_code}:
                self._within.setdefault(place, set()).add(authority.code)
        self._places = dict(places or {})
        self._retired = {r.code: r for r in retired}

    def __len__(self) -> int:
        return len(self._by_code)

    def __iter__(self) -> Iterator[LocalAuthority]:
        return iter(self._by_code.values())

    def get(self, code: str) -> LocalAuthority | None:
        return self._by_code.get(code)

    def is_known(self, code: str) -> bool:
        """True for an authority of this vintage (a LAD or a county); regions and countries are areas, not LAs."""
        return code in self._by_code

    def is_area(self, code: str) -> bool:
        """True for any code a row scope may name: an authority, a region or a country."""
        return code in self._by_code or code in self._within

    def upper_tier_of(self, code: str) -> str | None:
        """The UTLA holding public-health duties for `code` (itself for unitaries and counties)."""
        authority = self._by_code.get(code)
        return authority.upper_tier_code if authority else None

    def districts_of(self, county_code: str) -> tuple[str, ...]:
        """The E07 districts under a county, sorted; empty for anything that is not a county."""
        return tuple(sorted(self._districts.get(county_code, ())))

    def areas_served(self, code: str) -> frozenset[str]:
        """The LA codes whose rows a subscriber at `code` may receive: a county brings its districts, a region or
        country every authority in it; empty for an unknown code."""
        if code in self._within:
            return frozenset(self._within[code])
        authority = self._by_code.get(code)
        if authority is None:
            return frozenset()
        if authority.tier is Tier.COUNTY:
            return frozenset({code, *self.districts_of(code)})
        return frozenset({code})

    def name_of(self, code: str) -> str | None:
        """The name of an authority, region, country or retired code of this table."""
        if (authority := self._by_code.get(code)) is not None:
            return authority.name
        if (retired := self._retired.get(code)) is not None:
            return retired.name
        return self._places.get(code)

    def retirement(self, code: str) -> Retirement | None:
        return self._retired.get(code)

    def why_unknown(self, code: str) -> str:
        """Why `code` is not an authority of this table, naming the successor when a reorganisation retired it."""
        retired = self._retired.get(code)
        if retired is None:
            return f"{code} is not in the LA table ({self.vintage or 'no vintage'}): check the code and its vintage"
        successors = [f"{s} ({self.name_of(s) or 'unknown'})" for s in self._current(code)]
        which = "its successor is" if len(successors) == 1 else "its successors are"
        return (f"{code} ({retired.name}) was abolished on {retired.retired_on.isoformat()}; {which} "
                f"{' and '.join(successors)} ({self.vintage or 'no vintage'})")

    def _current(self, code: str) -> list[str]:
        # A successor may itself have been retired by a later reorganisation: follow it to codes in force.
        found: list[str] = []
        for successor in self._retired[code].successors:
            later = self._current(successor) if successor in self._retired else [successor]
            found.extend(s for s in later if s not in found)
        return found
