"""The ONS lookups of catalog/geography: which vintage is in force (geography.yaml), reading the LA table in Accord's
columns or ONS's own headers (LAD23CD, CTYUA24CD, RGN23CD, CTRY23NM, ...), and the successors of retired codes.

Errors name the file and line and say what to fix; nothing here knows about Kafka, OPA or HTTP.
"""

from __future__ import annotations

import csv
import datetime as dt
import re
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from broker.domain.geography import (
    COUNTRY_CODES,
    LTLA_PREFIXES,
    LaTable,
    LocalAuthority,
    Retirement,
    Tier,
    is_well_formed,
    tier_of,
)
from broker.domain.residence import ResidenceTable, load_residence_table
from broker.errors import ConfigError

GEOGRAPHY_DIR = Path(__file__).resolve().parents[2] / "catalog/geography"
MANIFEST = "geography.yaml"
_MANIFEST_KEYS = ("vintage", "authorities", "lsoas", "successors")
AUTHORITY_COLUMNS = ("lad_code", "lad_name", "utla_code", "utla_name", "region_code", "region_name", "country")
# Accord's column, or ONS's header of any year (LAD23CD, CTYUA24NM, ...): the two digits are the vintage's year.
_HEADERS: Mapping[str, re.Pattern[str]] = {
    "lad_code": re.compile(r"lad_code|(?:LAD|LTLA)\d\dCD", re.IGNORECASE),
    "lad_name": re.compile(r"lad_name|(?:LAD|LTLA)\d\dNM", re.IGNORECASE),
    "utla_code": re.compile(r"utla_code|(?:UTLA|CTYUA|CTY)\d\dCD", re.IGNORECASE),
    "utla_name": re.compile(r"utla_name|(?:UTLA|CTYUA|CTY)\d\dNM", re.IGNORECASE),
    "region_code": re.compile(r"region_code|RGN\d\dCD", re.IGNORECASE),
    "region_name": re.compile(r"region_name|RGN\d\dNM", re.IGNORECASE),
    "country": re.compile(r"country|CTRY\d\dNM", re.IGNORECASE),
}
_SUCCESSOR_COLUMNS = ("retired_code", "retired_name", "retired_on", "successor_codes")


@dataclass(frozen=True)
class GeographyFiles:
    """The files of one vintage, as geography.yaml names them."""

    directory: Path
    vintage: str
    authorities: Path
    lsoas: Path
    successors: Path | None


@dataclass(frozen=True)
class AuthorityRow:
    """One LAD with its upper tier, region and country, as Accord writes it (AUTHORITY_COLUMNS)."""

    lad_code: str
    lad_name: str
    utla_code: str
    utla_name: str
    region_code: str
    region_name: str
    country: str

    def cells(self) -> tuple[str, ...]:
        return (self.lad_code, self.lad_name, self.utla_code, self.utla_name, self.region_code, self.region_name,
                self.country)


def geography_files(directory: Path = GEOGRAPHY_DIR) -> GeographyFiles:
    """Read `directory`/geography.yaml: the vintage in force and the files holding it."""
    path = directory / MANIFEST
    entries = _read_manifest(path)
    if missing := [key for key in ("vintage", "authorities", "lsoas") if not entries.get(key)]:
        raise ConfigError(f"{path}: needs {', '.join(missing)}; `accord geography load` writes it")
    for key in ("authorities", "lsoas", "successors"):
        if key in entries and Path(entries[key]).name != entries[key]:
            raise ConfigError(f"{path}: {key} {entries[key]!r} must name a file beside it, without a directory")
    successors = entries.get("successors")
    return GeographyFiles(directory, entries["vintage"], directory / entries["authorities"],
                          directory / entries["lsoas"], directory / successors if successors else None)


def _read_manifest(path: Path) -> dict[str, str]:
    # A few `key: value` lines (valid YAML, read strictly): nothing in it is expanded or constructed.
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"cannot read {path} ({exc}); `accord geography load` writes it") from exc
    entries: dict[str, str] = {}
    for lineno, line in enumerate(text.splitlines(), start=1):
        stripped = line.strip()
        if not stripped or stripped.startswith("#"):
            continue
        key, colon, value = stripped.partition(":")
        value = value.strip()
        if len(value) > 1 and value[0] == value[-1] and value[0] in "'\"":
            value = value[1:-1]
        if not colon or key not in _MANIFEST_KEYS or key in entries:
            raise ConfigError(f"{path}:{lineno}: expected one `key: value` line for each of "
                              f"{', '.join(_MANIFEST_KEYS)}; found {stripped[:60]!r}")
        entries[key] = value
    return entries


def load_la_table(directory: Path = GEOGRAPHY_DIR) -> LaTable:
    """The LA table of the vintage `directory`/geography.yaml names (default: the shipped ONS lookups)."""
    files = geography_files(directory)
    return read_la_table(files.authorities, files.vintage, files.successors)


def load_residence(setting: Path | Literal["off"] | None, directory: Path = GEOGRAPHY_DIR) -> ResidenceTable | None:
    """The residence lookup a process uses: the vintage's LSOA file by default, another CSV, or none ("off")."""
    if setting == "off":
        return None
    if setting is None:
        files = geography_files(directory)
        return load_residence_table(files.lsoas, files.vintage)
    return load_residence_table(setting)


def read_la_table(path: Path, vintage: str, successors: Path | None = None) -> LaTable:
    """An LA table from one authorities CSV (Accord's columns or ONS's) and, optionally, a successors CSV."""
    return build_la_table(path, read_authority_rows(path), vintage,
                          read_successors(successors) if successors is not None else ())


def read_authority_rows(path: Path) -> list[AuthorityRow]:
    """One row per LAD; a ward-level ONS lookup repeats each LAD, and every repetition must agree."""
    rows: dict[str, tuple[int, AuthorityRow]] = {}
    for lineno, row in _rows(path, _HEADERS, "the LA table"):
        parsed = _authority_row(f"{path}:{lineno}", row)
        first = rows.setdefault(parsed.lad_code, (lineno, parsed))
        if first[1] != parsed:
            raise ConfigError(f"{path}:{lineno}: {parsed.lad_code} differs from its row on line {first[0]} "
                              f"({_differences(first[1], parsed)}); a LAD has one upper tier, region and country")
    return [row for _, row in sorted(rows.values(), key=lambda pair: pair[1].lad_code)]


def build_la_table(path: Path, rows: list[AuthorityRow], vintage: str,
                   retired: tuple[Retirement, ...] | list[Retirement] = ()) -> LaTable:
    """The table of `rows` plus the counties their districts name; ConfigError when they contradict each other."""
    authorities = [_authority(row) for row in rows]
    counties: dict[str, LocalAuthority] = {}
    places: dict[str, str] = {}
    for row, authority in zip(rows, authorities, strict=True):
        for place, name in ((authority.region_code, row.region_name), (authority.country_code, row.country)):
            if places.setdefault(place, name) != name:
                raise ConfigError(f"{path}: {place} is named both {places[place]!r} and {name!r}; use one name")
        if authority.tier is Tier.LTLA_ONLY:
            county = LocalAuthority(row.utla_code, row.utla_name, Tier.COUNTY, row.utla_code, authority.region_code,
                                    authority.country_code)
            if counties.setdefault(county.code, county) != county:
                raise ConfigError(f"{path}: county {county.code} is named or placed differently by its districts "
                                  f"({counties[county.code].name}, {counties[county.code].region_code} and "
                                  f"{county.name}, {county.region_code} for {row.lad_code}); make them agree")
    table = LaTable([*authorities, *sorted(counties.values(), key=lambda c: c.code)], vintage, places, retired)
    _check_retired(path, table, retired)
    return table


def read_successors(path: Path) -> list[Retirement]:
    """The codes reorganisations retired, each with the codes of its successors (space-separated)."""
    columns = {name: re.compile(re.escape(name)) for name in _SUCCESSOR_COLUMNS}
    found: list[Retirement] = []
    for lineno, row in _rows(path, columns, "the successors table"):
        where = f"{path}:{lineno}"
        code, successors = row["retired_code"].strip(), tuple(row["successor_codes"].split())
        if not is_well_formed(code) or not successors or not all(is_well_formed(s) for s in successors):
            raise ConfigError(f"{where}: retired_code and successor_codes must be GSS codes (successors separated "
                              f"by spaces); found {code!r} and {row['successor_codes']!r}")
        try:
            retired_on = dt.date.fromisoformat(row["retired_on"].strip())
        except ValueError:
            raise ConfigError(f"{where}: retired_on {row['retired_on']!r} is not a date such as 2023-04-01") from None
        found.append(Retirement(code, row["retired_name"].strip(), retired_on, successors))
    return found


def _rows(path: Path, columns: Mapping[str, re.Pattern[str]], what: str) -> Iterator[tuple[int, dict[str, str]]]:
    """Each data row of a CSV as {column key: cell}, by the first header matching each key's pattern."""
    try:
        with path.open(encoding="utf-8-sig", newline="") as handle:
            reader = csv.reader(handle)
            header = [name.strip() for name in next(reader, [])]
            index = {key: next((i for i, name in enumerate(header) if pattern.fullmatch(name)), None)
                     for key, pattern in columns.items()}
            if missing := [key for key, i in index.items() if i is None]:
                raise ConfigError(f"{path}: {what} needs columns for {', '.join(missing)} (Accord's "
                                  f"{','.join(columns)} or ONS's headers such as LAD23CD); found "
                                  f"{', '.join(header) or 'none'}")
            for cells in reader:
                if not any(cell.strip() for cell in cells):
                    continue
                if len(cells) != len(header):
                    raise ConfigError(f"{path}:{reader.line_num}: expected {len(header)} columns, found {len(cells)}")
                yield reader.line_num, {key: cells[i] for key, i in index.items() if i is not None}
    except OSError as exc:
        raise ConfigError(f"cannot read {what} {path}: {exc.strerror}; check the path") from exc


def _authority_row(where: str, row: Mapping[str, str]) -> AuthorityRow:
    code, name, upper, upper_name, region, region_name, country = (row[k].strip() for k in AUTHORITY_COLUMNS)
    if not is_well_formed(code) or code[:3] not in LTLA_PREFIXES:
        raise ConfigError(f"{where}: {code!r} is not a LAD code ({', '.join(sorted(LTLA_PREFIXES))})")
    if not name:
        raise ConfigError(f"{where}: {code} has no name")
    if country not in COUNTRY_CODES:
        raise ConfigError(f"{where}: country {country!r} is not one of {', '.join(COUNTRY_CODES)}")
    if code[:3] == "E07":
        if not upper.startswith("E10") or not is_well_formed(upper) or not upper_name:
            raise ConfigError(f"{where}: district {code} needs its county (an E10 code and name), not {upper!r}")
    elif upper.startswith("E10") or (upper[:3] in LTLA_PREFIXES and upper != code):
        raise ConfigError(f"{where}: {code} is a {tier_of(code).value} authority, its own upper tier; "
                          f"set its upper tier to {code}, not {upper!r}")
    else:  # ONS's CTY columns hold a metropolitan county (E11), Inner/Outer London (E13) or nothing: no UTLA
        upper, upper_name = code, name
    region, region_name = _region(where, code, country, region, region_name)
    return AuthorityRow(code, name, upper, upper_name, region, region_name, country)


def _region(where: str, code: str, country: str, region: str, name: str) -> tuple[str, str]:
    # Outside England ONS leaves the region empty, gives a pseudo code (W99999999) or repeats the country.
    if country != "England":
        return COUNTRY_CODES[country], country
    if not (is_well_formed(region) and region.startswith("E12") and name):
        raise ConfigError(f"{where}: {code} is in England, so it needs an E12 region code and name, not {region!r}")
    return region, name


def _authority(row: AuthorityRow) -> LocalAuthority:
    return LocalAuthority(row.lad_code, row.lad_name, tier_of(row.lad_code), row.utla_code, row.region_code,
                          COUNTRY_CODES[row.country])


def _differences(first: AuthorityRow, second: AuthorityRow) -> str:
    pairs = zip(AUTHORITY_COLUMNS, first.cells(), second.cells(), strict=True)
    return ", ".join(f"{column} {a!r} then {b!r}" for column, a, b in pairs if a != b)


def _check_retired(path: Path, table: LaTable, retired: tuple[Retirement, ...] | list[Retirement]) -> None:
    codes = {r.code for r in retired}
    for retirement in retired:
        if table.is_known(retirement.code):
            raise ConfigError(f"{path}: {retirement.code} is in force in the LA table and listed as retired in the "
                              "successors table; remove it from one of them")
        seen = {retirement.code}
        pending = list(retirement.successors)
        while pending:  # every chain of successors must end at codes in force, without going round
            successor = pending.pop()
            if successor in seen:
                raise ConfigError(f"successors of {retirement.code} lead back to {successor}; fix the successors table")
            seen.add(successor)
            if successor in codes:
                pending.extend(next(r for r in retired if r.code == successor).successors)
            elif not table.is_known(successor):
                raise ConfigError(f"successor {successor} of {retirement.code} is neither in the LA table of "
                                  f"{table.vintage} nor retired; fix the successors table")


@dataclass(frozen=True)
class Lsoa:
    """One row of an LSOA-to-LAD lookup: the LSOA, its name, its authority."""

    code: str
    name: str
    lad_code: str


_LSOA_HEADERS: Mapping[str, re.Pattern[str]] = {
    "code": re.compile(r"lsoa\d\d_code|LSOA\d\dCD", re.IGNORECASE),
    "name": re.compile(r"lsoa\d\d_name|LSOA\d\dNM", re.IGNORECASE),
    "lad_code": re.compile(r"lad_code|LAD\d\dCD", re.IGNORECASE),
}


def read_lsoas(path: Path, table: LaTable) -> tuple[str, list[Lsoa]]:
    """The LSOA census year (e.g. "21") and the rows of an LSOA-to-LAD lookup whose authorities must all be lower tier
    in `table`, each holding an LSOA: lookups of different vintages never pass."""
    with path.open(encoding="utf-8-sig", newline="") as handle:
        header = next(csv.reader(handle), [])
    year = next((m.group(1) for name in header if (m := re.fullmatch(r"lsoa(\d\d)(?:_code|CD)", name.strip(),
                                                                      re.IGNORECASE))), "")
    rows: dict[str, Lsoa] = {}
    for lineno, row in _rows(path, _LSOA_HEADERS, "the LSOA lookup"):
        lsoa = Lsoa(row["code"].strip().upper(), row["name"].strip(), row["lad_code"].strip().upper())
        authority = table.get(lsoa.lad_code)
        if authority is None or not authority.is_lower_tier:
            raise ConfigError(f"{path}:{lineno}: LSOA {lsoa.code} lies in {lsoa.lad_code}, which is no LAD of "
                              f"{table.vintage}; load an LSOA lookup of the same vintage")
        if rows.setdefault(lsoa.code, lsoa) != lsoa:
            raise ConfigError(f"{path}:{lineno}: LSOA {lsoa.code} is listed twice, differently")
    covered = {lsoa.lad_code for lsoa in rows.values()}
    if missing := sorted(a.code for a in table if a.is_lower_tier and a.code[0] in "EW" and a.code not in covered):
        raise ConfigError(f"{path}: no LSOA lies in {', '.join(missing[:10])}{' ...' if len(missing) > 10 else ''} "
                          f"of {table.vintage}; load an LSOA lookup of the same vintage")
    return year, sorted(rows.values(), key=lambda lsoa: lsoa.code)


def write_vintage(directory: Path, vintage: str, rows: list[AuthorityRow], lsoa_year: str, lsoas: list[Lsoa],
                  table: LaTable, successors: str | None) -> GeographyFiles:
    """Write the vintage's two files in Accord's columns, then geography.yaml naming them (last, so a failure leaves
    the vintage in force as it was)."""
    year = _year(vintage)
    if "\n" in vintage or "#" in vintage:
        raise ConfigError(f"vintage {vintage!r}: one line of text without '#', e.g. 'ONS May 2024'")
    files = GeographyFiles(directory, vintage, directory / f"lad-utla-region-{year}.csv",
                           directory / f"lsoa{lsoa_year}-lad{year[2:]}-ew.csv",
                           directory / successors if successors else None)
    directory.mkdir(parents=True, exist_ok=True)
    _write_csv(files.authorities, AUTHORITY_COLUMNS, [row.cells() for row in rows])
    _write_csv(files.lsoas, (f"lsoa{lsoa_year}_code", f"lsoa{lsoa_year}_name", "lad_code", "lad_name"),
               [(lsoa.code, lsoa.name, lsoa.lad_code, table.name_of(lsoa.lad_code) or "") for lsoa in lsoas])
    manifest = {"vintage": vintage, "authorities": files.authorities.name, "lsoas": files.lsoas.name,
                **({"successors": successors} if successors else {})}
    (directory / MANIFEST).write_text(
        "# The ONS lookups Accord routes rows by (README.md here says where they come from).\n"
        "# `accord geography load` validates a newer vintage and rewrites this file and the files it names.\n"
        + "".join(f"{key}: {value}\n" for key, value in manifest.items()), encoding="utf-8")
    return files


def _year(vintage: str) -> str:
    found = re.findall(r"\b(20\d\d)\b", vintage)
    if not found:
        raise ConfigError(f"vintage {vintage!r} names no year; say which ONS release it is, e.g. 'ONS May 2024'")
    return str(found[-1])


def _write_csv(path: Path, header: tuple[str, ...], rows: list[tuple[str, ...]]) -> None:
    with path.open("w", encoding="utf-8", newline="") as handle:
        writer = csv.writer(handle, lineterminator="\n")
        writer.writerow(header)
        writer.writerows(rows)
