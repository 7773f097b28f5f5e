"""A small compiled catalog, by hand, in the shape the catalog compiler emits: bodies with regions, T1 and its
template, one agreement, the escalation ladder and the emergency declarers. `catalog()` returns a fresh copy."""

from __future__ import annotations

import copy
from typing import Any

T1 = "ukhsa.positive-tests"
LEICESTER = "leicester-city-council"
LEICESTERSHIRE = "leicestershire-county-council"
MANCHESTER = "manchester-city-council"
BLABY = "blaby-district-council"
FOOD_BANK = "leicester-food-bank-network"
EAST_MIDLANDS = "E12000004"
NORTH_WEST = "E12000002"
BOARD = ("dhsc", "nhsd", "nhse", "nhstt", "nis", "ukhsa")
HOUR = 3600
DAY = 24 * HOUR

_T1_FIELDS = {
    "specimen_id": ["direct-identifier"], "nhs_number": ["direct-identifier"], "name": ["direct-identifier"],
    "dob": ["quasi-identifier"], "sex": ["quasi-identifier"], "ethnicity": ["special-category", "quasi-identifier"],
    "address": ["direct-identifier"], "postcode": ["quasi-identifier", "geography:postcode"],
    "occupation": ["quasi-identifier"], "specimen_date": [], "lab_report_date": [], "test_type": [], "pillar": [],
    "lsoa": ["geography:lsoa", "quasi-identifier"], "msoa": ["geography:msoa"], "ltla": ["geography:ltla"],
    "utla": ["geography:utla"],
}
_KINDS = {"dob": "date", "specimen_date": "date", "lab_report_date": "date", "sex": "other", "test_type": "other",
          "pillar": "other"}
LEICESTERSHIRE_AREAS = ["E07000129", "E07000130", "E07000131", "E07000132", "E07000133", "E07000134", "E07000135",
                        "E10000018"]


def _keep(name: str) -> dict[str, Any]:
    return {"transform": "keep", "method": None, "as": name, "params": {}}


ANALYST_FIELDS = {
    "lsoa": _keep("lsoa"),
    "dob": {"transform": "generalise", "method": "age-band", "as": "age_band", "params": {"at": "specimen_date"}},
    "sex": _keep("sex"),
}
T1_TIERS = [
    {"name": "dph", "roles": ["dph"], "other_fields": "keep",
     "fields": {name: _keep(name) for name in ("specimen_id", "nhs_number", "name", "address")}},
    {"name": "analyst", "roles": ["analyst"], "other_fields": "drop", "fields": ANALYST_FIELDS},
]


def _national(name: str, roles: list[str]) -> dict[str, Any]:
    every = sorted({"E06000016", "E08000003", *LEICESTERSHIRE_AREAS})
    return {"name": name, "kind": "national", "tier": "national", "areas": [], "served_areas": every,
            "regions": [], "roles": roles}


def _local(name: str, tier: str, areas: list[str], served: list[str], regions: list[str],
           roles: list[str], kind: str = "local") -> dict[str, Any]:
    return {"name": name, "kind": kind, "tier": tier, "areas": areas, "served_areas": served, "regions": regions,
            "roles": roles}


_BOARD_ROLES = ["governance-board", "ig-lead"]
_CATALOG: dict[str, Any] = {
    "revision": "c-test",
    "la_vintage": "2023",
    "bodies": {
        "ukhsa": _national("UK Health Security Agency", _BOARD_ROLES),
        "nhsd": _national("NHS Digital", _BOARD_ROLES),
        "dhsc": _national("Department of Health and Social Care", _BOARD_ROLES),
        "nhse": _national("NHS England", _BOARD_ROLES),
        "nhstt": _national("NHS Test and Trace", _BOARD_ROLES),
        "nis": _national("National Immunisation System", _BOARD_ROLES),
        "accord-arbiter": _national("Accord Emergency Arbiter", ["arbiter"]),
        LEICESTER: _local("Leicester City Council", "unitary", ["E06000016"], ["E06000016"], [EAST_MIDLANDS],
                          ["analyst", "dph", "ig-lead"]),
        LEICESTERSHIRE: _local("Leicestershire County Council", "county", ["E10000018"], LEICESTERSHIRE_AREAS,
                               [EAST_MIDLANDS], ["analyst", "dph"]),
        MANCHESTER: _local("Manchester City Council", "unitary", ["E08000003"], ["E08000003"], [NORTH_WEST],
                           ["analyst", "dph"]),
        BLABY: _local("Blaby District Council", "ltla-only", ["E07000129"], ["E07000129"], [EAST_MIDLANDS],
                      ["benefits", "environmental-health", "ig-lead"]),
        FOOD_BANK: _local("Leicester Food Bank Network", "processor", ["E06000016"], ["E06000016"], [EAST_MIDLANDS],
                          ["food-parcels"], kind="processor"),
    },
    "streams": {
        T1: {"owner": "ukhsa", "subject": f"ingest.{T1}-value", "classification": "special-category",
             "jurisdiction": ["utla", "ltla"], "fields": {name: {"tags": tags, "kind": _KINDS.get(name, "string")}
                                                    for name, tags in _T1_FIELDS.items()}},
    },
    "templates": {
        "t1-positive-tests": {
            "title": "T1: positive test results to the upper-tier DPH health-protection cell", "stream": T1,
            "publisher": "ukhsa", "purpose": "health-protection",
            "legal_basis": ["copi-reg-3-4", "uk-gdpr-6-1-e", "uk-gdpr-9-2-i"], "row_scope": "subscriber-areas",
            "tiers": T1_TIERS, "minimised_tier": "analyst",
        },
    },
    "agreements": {
        "t1-manchester": {
            "template": "t1-positive-tests", "publisher": "ukhsa", "subscriber": MANCHESTER, "stream": T1,
            "purpose": "health-protection", "legal_basis": ["copi-reg-3-4", "uk-gdpr-6-1-e", "uk-gdpr-9-2-i"],
            "tiers": T1_TIERS, "row_scope": {"areas": ["E08000003"]},
            "valid_from": "2026-01-01T00:00:00Z", "valid_until": "2027-12-31T23:59:59Z", "review_date": "2027-06-30",
            "emergency_level_required": "normal",
            "signatories": [{"body": "ukhsa", "name": "Exercise IG Lead (UKHSA)", "role": "ig-lead"},
                            {"body": MANCHESTER, "name": "Exercise Director of Public Health", "role": "dph"}],
        },
    },
    "ladder": {
        "tiers": [
            {"name": "publisher-ig", "title": "The publisher's information-governance lead reconsiders",
             "deciders": {"party": "publisher", "bodies": [], "roles": ["ig-lead"]}, "approvals": 1,
             "deadline_s": {"normal": 5 * DAY, "enhanced": DAY, "emergency": 2 * HOUR}},
            {"name": "governance-board", "title": "The national data governance board (2 of its members)",
             "deciders": {"party": None, "bodies": list(BOARD), "roles": ["governance-board"]}, "approvals": 2,
             "deadline_s": {"normal": 10 * DAY, "enhanced": 2 * DAY, "emergency": 4 * HOUR}},
            {"name": "emergency-arbiter", "title": "The emergency arbiter",
             "deciders": {"party": None, "bodies": ["accord-arbiter"], "roles": ["arbiter"]}, "approvals": 1,
             "deadline_s": {"normal": 5 * DAY, "enhanced": DAY, "emergency": HOUR}},
        ],
        "decisive_default": {"normal": {"outcome": "refusal-stands", "period_s": None},
                             "enhanced": {"outcome": "refusal-stands", "period_s": None},
                             "emergency": {"outcome": "provisional-grant", "period_s": 14 * DAY}},
        "grant_period_s": 90 * DAY,
        "appeal_window_s": {"normal": 14 * DAY, "enhanced": 3 * DAY, "emergency": DAY},
        "deletion_deadline_s": {"normal": 2 * DAY, "enhanced": DAY, "emergency": 4 * 3600},
        "break_glass": {"levels": ["emergency"], "roles": ["dph"], "period_s": 3 * DAY},
    },
    "emergency_declarers": [{"body": "accord-arbiter", "roles": ["arbiter"]},
                            {"body": "dhsc", "roles": ["governance-board"]},
                            {"body": "ukhsa", "roles": ["governance-board"]}],
}


def catalog() -> dict[str, Any]:
    """A fresh copy, so a test may change it."""
    return copy.deepcopy(_CATALOG)
