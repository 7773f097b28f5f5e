"""Synthetic T1 positive tests, T2 cases to trace, T3 shielded patients, T4 care homes, T6 vaccination cells and
T7 isolation instructions over several councils (or, for drills, any authority), or a national day over every English
authority (made-up people; NHS numbers fail the check digit; LSOAs are real ones of each place's authority, from the
shipped ONS lookup, so residence routes them home)."""

from __future__ import annotations

import datetime as dt
import functools
import random
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from broker.domain.geography import COUNTRY_CODES, LaTable
from broker.domain.geography_files import load_residence
from broker.domain.optout import check_digit
from broker.domain.trusts import TrustTable


@dataclass(frozen=True)
class Place:
    """Where synthetic cases live: their LTLA, UTLA, postcode areas and a small MSOA range (LSOAs: the LTLA's own)."""

    name: str
    ltla: str
    utla: str
    outward: tuple[str, ...]
    msoa_base: int


PLACES: dict[str, Place] = {p.name: p for p in (
    Place("leicester", "E06000016", "E06000016", ("LE1", "LE2", "LE3", "LE4", "LE5"), 2750),
    Place("nottingham", "E06000018", "E06000018", ("NG1", "NG3", "NG5", "NG7", "NG8"), 2800),
    Place("blaby", "E07000129", "E10000018", ("LE8", "LE9", "LE19"), 5000),
    Place("charnwood", "E07000130", "E10000018", ("LE11", "LE12"), 5010),
    Place("manchester", "E08000003", "E08000003", ("M1", "M4", "M13", "M14", "M20"), 1000),
    Place("birmingham", "E08000025", "E08000025", ("B1", "B5", "B10", "B23"), 1700),
    Place("leeds", "E08000035", "E08000035", ("LS1", "LS6", "LS9", "LS11"), 2100),
    Place("hackney", "E09000012", "E09000012", ("E5", "E8", "E9", "N16"), 360),
    Place("cornwall", "E06000052", "E06000052", ("TR1", "TR7", "PL25", "PL31"), 3400),
    Place("blackburn", "E06000008", "E06000008", ("BB1", "BB2"), 2500),
    Place("ashfield", "E07000170", "E10000024", ("NG15", "NG17"), 5500),
)}
FIRST = ("Alex", "Sam", "Jo", "Priya", "Mo", "Chris", "Aisha", "Tom", "Ewa", "Kai", "Nia", "Ravi")
LAST = ("Example", "Sample", "Testcase", "Placeholder", "Fictional", "Madeup", "Dummy", "Synthetic")
STREETS = ("High Street", "Station Road", "Church Lane", "Mill Road", "Park Avenue", "Victoria Street")
INWARD_LETTERS = "ABDEFGHJLNPQRSTUWXYZ"
ETHNICITY = ("A", "B", "C", "D", "H", "J", "K", "M", "N", "R", "S", "Z", None)


def nhs_number(base: int) -> str:
    """A valid NHS number (modulus 11 check digit) in the 999 range NHS England keeps for testing; distinct for
    distinct `base` below 100,000."""
    for last in "01":  # at most one of two neighbouring first-nine digits has no check digit
        first_nine = f"999{base % 100_000:05d}{last}"
        digit = check_digit(first_nine)
        if digit is not None:
            return f"{first_nine}{digit}"
    raise AssertionError("unreachable: one of two neighbours always has a check digit")


def positive_tests(day: dt.date, per_place: dict[str, int], prefix: str = "SYN", seed: int = 2020,
                   places: Mapping[str, Place] = PLACES) -> list[dict[str, Any]]:
    """`per_place[name]` cases per place, specimens taken on `day` (at least a day ago), in a fixed shuffled order."""
    rng = random.Random(seed)
    cases = [case for name, count in per_place.items() for case in _cases(rng, places[name], day, count, prefix)]
    rng.shuffle(cases)
    return cases


def spread(day: dt.date, total: int, places: Sequence[str], prefix: str = "SYN", seed: int = 2020
           ) -> list[dict[str, Any]]:
    """`total` cases spread evenly over `places`."""
    counts = {p: total // len(places) + (1 if i < total % len(places) else 0) for i, p in enumerate(places)}
    return positive_tests(day, counts, prefix, seed)


def _cases(rng: random.Random, place: Place, day: dt.date, count: int, prefix: str) -> Iterator[dict[str, Any]]:
    for n in range(count):
        born = day - dt.timedelta(days=rng.randint(2 * 365, 95 * 365))
        outward = rng.choice(place.outward)
        yield {
            "specimen_id": f"{prefix}-{place.name.upper()}-{day:%Y%m%d}-{n:06d}",
            "nhs_number": nhs_number(rng.randint(0, 9_999_999)) if rng.random() < 0.9 else None,
            "name": f"{rng.choice(FIRST)} {rng.choice(LAST)}",
            "dob": born,
            "sex": rng.choice(("FEMALE", "MALE", "FEMALE", "MALE", "UNKNOWN")),
            "ethnicity": rng.choice(ETHNICITY),
            "address": f"{rng.randint(1, 200)} {rng.choice(STREETS)}, {place.name.title()}",
            "postcode": f"{outward} {rng.randint(1, 9)}{rng.choice(INWARD_LETTERS)}{rng.choice(INWARD_LETTERS)}",
            "occupation": rng.choice((None, "teacher", "care worker", "driver", "nurse", "retail")),
            "specimen_date": day,
            "lab_report_date": day + dt.timedelta(days=rng.choice((0, 1, 1))),
            "test_type": rng.choice(("PCR", "PCR", "LFD")),
            "pillar": rng.choice(("PILLAR_1", "PILLAR_2", "PILLAR_2")),
            "lsoa": _lsoa(rng, place),
            "msoa": f"E02{place.msoa_base + rng.randint(0, 19):06d}",
            "ltla": place.ltla,
            "utla": place.utla,
        }


AGE_BANDS = ("AGE_18_24", "AGE_25_29", "AGE_40_44", "AGE_50_54", "AGE_65_69", "AGE_80_PLUS")
ETHNIC_GROUPS = ("ASIAN", "BLACK", "MIXED", "WHITE", "OTHER", "NOT_STATED")


def vaccination_cells(day: dt.date, per_place: dict[str, int], seed: int = 2021,
                      places: Mapping[str, Place] = PLACES) -> list[dict[str, Any]]:
    """T6 cells (LSOA x age band x ethnic group x dose) as at `day`; each place's first three cells count 0, 1
    and 2 vaccinated people, the small cells that publication suppresses and the restricted channel does not."""
    rng = random.Random(seed)
    cells = []
    for name, count in per_place.items():
        place = places[name]
        for n in range(count):
            vaccinated = n if n < 3 else rng.randint(3, 60)
            cells.append({
                "as_at_date": day, "lsoa": _lsoa(rng, place), "utla": place.utla,
                "age_band": rng.choice(AGE_BANDS), "ethnicity_group": rng.choice(ETHNIC_GROUPS),
                "dose": rng.choice(("FIRST", "SECOND", "BOOSTER")),
                "vaccinated_n": vaccinated, "eligible_n": vaccinated + rng.randint(0, 20)})
    return cells


def shielded_patients(day: dt.date, per_place: dict[str, int], seed: int = 2020,
                      places: Mapping[str, Place] = PLACES) -> list[dict[str, Any]]:
    """T3 entries of the Shielded Patient List, added on `day` (at least a day ago); some have no phone."""
    rng = random.Random(seed)
    return [{
        "nhs_number": nhs_number(rng.randint(0, 9_999_999)),
        "name": f"{rng.choice(FIRST)} {rng.choice(LAST)}",
        "dob": day - dt.timedelta(days=rng.randint(18 * 365, 95 * 365)),
        "address": f"{rng.randint(1, 200)} {rng.choice(STREETS)}, {place.name.title()}",
        "postcode": _postcode(rng, place),
        "phone": f"07700 900{rng.randint(0, 999):03d}" if rng.random() < 0.8 else None,
        "email": None,
        "gp_practice_code": f"C{rng.randint(80, 89)}{rng.randint(0, 999):03d}",
        "added_date": day, "removed_flag": False, "ltla": place.ltla, "utla": place.utla,
    } for place in _each(per_place, places)]


def isolation_notifications(day: dt.date, per_place: dict[str, int], seed: int = 2020,
                            places: Mapping[str, Place] = PLACES) -> list[dict[str, Any]]:
    """T7 instructions to self-isolate for ten days ending on `day` (at least a day ago), mostly notified."""
    rng = random.Random(seed)
    return [{
        "ctas_id": "".join(rng.choice("ABCDEFGHJKLMNPQRSTUVWXYZ0123456789") for _ in range(8)),
        "postcode": _postcode(rng, place), "ltla": place.ltla,
        "isolation_start": day - dt.timedelta(days=9), "isolation_end": day, "notified": rng.random() < 0.9,
    } for place in _each(per_place, places)]


def cases_to_trace(day: dt.date, per_place: dict[str, int], seed: int = 2020,
                   places: Mapping[str, Place] = PLACES) -> list[dict[str, Any]]:
    """T2 cases national tracing has not reached within a day: created on `day` (at least a day ago), tried a few
    times since."""
    rng = random.Random(seed)
    created = dt.datetime.combine(day, dt.time(9), tzinfo=dt.UTC)
    return [{
        "ctas_id": "".join(rng.choice("ABCDEFGHJKLMNPQRSTUVWXYZ0123456789") for _ in range(8)),
        "name": f"{rng.choice(FIRST)} {rng.choice(LAST)}",
        "phone": f"07700 900{rng.randint(0, 999):03d}" if rng.random() < 0.8 else None, "email": None,
        "address": f"{rng.randint(1, 200)} {rng.choice(STREETS)}, {place.name.title()}",
        "postcode": _postcode(rng, place), "ltla": place.ltla, "utla": place.utla,
        "specimen_date": day - dt.timedelta(days=1), "onset_date": None,
        "case_created_ts": created.isoformat(), "attempts": rng.randint(2, 6),
        "last_attempt_ts": (created + dt.timedelta(hours=rng.randint(25, 30))).isoformat(),
        "status": "UNREACHABLE",
    } for place in _each(per_place, places)]


def care_homes(day: dt.date, per_place: dict[str, int], seed: int = 2020,
               places: Mapping[str, Place] = PLACES) -> list[dict[str, Any]]:
    """T4 capacity tracker returns of care homes on `day`; CQC location ids in the 1-1 form, made up."""
    rng = random.Random(seed)
    return [{
        "cqc_location_id": f"1-{rng.randint(100_000_000, 999_999_999)}",
        "home_name": f"{rng.choice(STREETS).split()[0]} House", "ltla": place.ltla, "utla": place.utla,
        "date": day, "beds_vacant": rng.randint(0, 12), "staff_newly_suspected": rng.randint(0, 4),
        "staff_newly_confirmed": rng.randint(0, 3), "residents_newly_suspected": rng.randint(0, 4),
        "residents_newly_confirmed": rng.randint(0, 3), "ppe_rag": rng.choice(("RED", "AMBER", "GREEN")),
        "visiting_status": rng.choice(("OPEN", "RESTRICTED", "END_OF_LIFE_ONLY", "CLOSED")),
        "staff_absent": rng.randint(0, 9),
    } for place in _each(per_place, places)]


def hospital_sitreps(day: dt.date, trust: str, count: int, seed: int = 2020) -> list[dict[str, Any]]:
    """T5 situation reports of NHS trust `trust` (its ODS code) for `day`: made-up counts."""
    rng = random.Random(seed)
    return [{
        "trust_ods_code": trust, "icb": None, "date": day, "covid_inpatients": rng.randint(5, 120),
        "mv_beds": rng.randint(0, 12), "admissions": rng.randint(0, 25), "diagnoses": rng.randint(0, 8),
        "discharges": rng.randint(0, 20), "staff_absences": rng.randint(10, 300),
    } for _ in range(count)]


def for_area(stream: str, code: str, upper_tier: str, day: dt.date, count: int, prefix: str, seed: int,
             trusts: TrustTable | None = None, avoiding: Sequence[str] = ()) -> list[dict[str, Any]] | None:
    """`count` records of template stream `stream` resident in authority `code` (upper tier `upper_tier`), dated
    `day` (at least a day ago); None when there is no generator for that stream. For drills, in any area.

    A T5 report is a trust's: the trust of `trusts` admitting most of the area's residents whose footprint has none
    of the areas `avoiding`; None when no such trust serves it."""
    place = Place(code.lower(), code, upper_tier, ("YA1",), 0)  # "YA" is no real postcode area
    if stream == "nhse.hospital-sitrep":
        trust = None if trusts is None else trusts.principal_trust(code, avoiding)
        return None if trust is None else hospital_sitreps(day, trust, count, seed)
    one = {place.name: place}
    makers = {
        "ukhsa.positive-tests": lambda: positive_tests(day, {place.name: count}, prefix, seed, one),
        "nhsd.shielded-patients": lambda: shielded_patients(day, {place.name: count}, seed, one),
        "nis.vaccination-uptake": lambda: vaccination_cells(day, {place.name: count}, seed, one),
        "ukhsa.isolation-notifications": lambda: isolation_notifications(day, {place.name: count}, seed, one),
        "nhstt.cases-to-trace": lambda: cases_to_trace(day, {place.name: count}, seed, one),
        "dhsc.care-home-capacity": lambda: care_homes(day, {place.name: count}, seed, one),
    }
    make = makers.get(stream)
    return None if make is None else make()


def _each(per_place: dict[str, int], places: Mapping[str, Place]) -> Iterator[Place]:
    for name, count in per_place.items():
        yield from [places[name]] * count


def _postcode(rng: random.Random, place: Place) -> str:
    return f"{rng.choice(place.outward)} {rng.randint(1, 9)}{rng.choice(INWARD_LETTERS)}{rng.choice(INWARD_LETTERS)}"


def _lsoa(rng: random.Random, place: Place) -> str:
    lsoas = _lsoas_by_authority()[place.ltla]
    return lsoas[rng.randrange(min(100, len(lsoas)))]  # one neighbourhood of up to 100 LSOAs per place


@functools.cache
def _lsoas_by_authority() -> dict[str, tuple[str, ...]]:
    table = load_residence(None)
    assert table is not None
    return table.by_authority()


def national_day(day: dt.date, la: LaTable, prefix: str = "NAT", seed: int = 2020) -> list[dict[str, Any]]:
    """One T1 case in every lower-tier authority of England (296 in the ONS December 2023 table), in code order."""
    rng = random.Random(seed)
    england = [a for a in la if a.is_lower_tier and a.country_code == COUNTRY_CODES["England"]]
    # Postcode areas are not in the LA table; "YA" is no real one, so a synthetic postcode cannot be mistaken.
    places = [Place(a.code.lower(), a.code, a.upper_tier_code, (f"YA{n % 99 + 1}",), 0) for n, a in enumerate(england)]
    return [case for place in places for case in _cases(rng, place, day, 1, prefix)]
