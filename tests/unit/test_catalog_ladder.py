"""The escalation ladder, templates and regions in the compiled catalog; ladder faults reported with file:line."""

from __future__ import annotations

import datetime as dt
import json
from pathlib import Path
from typing import Any

import fastavro
import pytest

from broker.catalog import load_and_compile, revision_of
from broker.domain.geography_files import load_la_table
from broker.domain.jurisdiction import resolve_areas
from broker.domain.validation import validate_record
from tests.unit.catalog_support import CATALOG, SCHEMAS, copy_catalog, edit, line_of, problems

T7 = "ukhsa.isolation-notifications"
DAY = 86400


@pytest.fixture(scope="module")
def document() -> dict[str, Any]:
    return load_and_compile(CATALOG, SCHEMAS)


@pytest.fixture
def catalog(tmp_path: Path) -> Path:
    return copy_catalog(tmp_path)


def test_shipped_ladder_compiles_to_the_documented_json(document: dict[str, Any]) -> None:
    assert document["ladder"] == {
        "tiers": [
            {"name": "publisher-ig", "title": "The publisher's information-governance lead reconsiders",
             "deciders": {"party": "publisher", "bodies": [], "roles": ["ig-lead"]},
             "approvals": 1, "deadline_s": {"normal": 5 * DAY, "enhanced": DAY, "emergency": 2 * 3600}},
            {"name": "governance-board", "title": "The national data governance board (2 of its members)",
             "deciders": {"party": None, "bodies": ["dhsc", "nhsd", "nhse", "nhstt", "nis", "ukhsa"],
                          "roles": ["governance-board"]},
             "approvals": 2, "deadline_s": {"normal": 10 * DAY, "enhanced": 2 * DAY, "emergency": 4 * 3600}},
            {"name": "emergency-arbiter", "title": "The emergency arbiter",
             "deciders": {"party": None, "bodies": ["accord-arbiter"], "roles": ["arbiter"]},
             "approvals": 1, "deadline_s": {"normal": 5 * DAY, "enhanced": DAY, "emergency": 3600}},
        ],
        "decisive_default": {"normal": {"outcome": "refusal-stands", "period_s": None},
                             "enhanced": {"outcome": "refusal-stands", "period_s": None},
                             "emergency": {"outcome": "provisional-grant", "period_s": 14 * DAY}},
        "grant_period_s": 90 * DAY,
        "appeal_window_s": {"normal": 14 * DAY, "enhanced": 3 * DAY, "emergency": DAY},
        "deletion_deadline_s": {"normal": 2 * DAY, "enhanced": DAY, "emergency": 4 * 3600},
        "break_glass": {"levels": ["emergency"], "roles": ["dph"], "period_s": 3 * DAY},
    }
    assert document["emergency_declarers"] == [{"body": "accord-arbiter", "roles": ["arbiter"]},
                                               {"body": "dhsc", "roles": ["governance-board"]},
                                               {"body": "ukhsa", "roles": ["governance-board"]}]
    json.dumps(document, allow_nan=False)  # OPA data: plain JSON, no timedelta left in it


def test_listing_order_of_sets_does_not_change_the_revision(catalog: Path, document: dict[str, Any]) -> None:
    ladder = catalog / "ladder.yaml"
    edit(ladder, "bodies: [ukhsa, nhstt, nhsd, dhsc, nhse, nis]", "bodies: [nis, nhse, dhsc, nhsd, nhstt, ukhsa]")
    edit(ladder, "    - {body: dhsc, roles: [governance-board]}\n    - {body: ukhsa, roles: [governance-board]}\n",
         "    - {body: ukhsa, roles: [governance-board]}\n    - {body: dhsc, roles: [governance-board]}\n")
    assert load_and_compile(catalog, SCHEMAS)["revision"] == document["revision"]
    edit(ladder, "grant_period: P90D", "grant_period: P91D")
    changed = load_and_compile(catalog, SCHEMAS)
    assert changed["ladder"]["grant_period_s"] == 91 * DAY
    assert changed["revision"] != document["revision"] and changed["revision"] == revision_of(changed)


def test_publisher_deciders_accept_any_role_name(catalog: Path) -> None:
    edit(catalog / "ladder.yaml", "{party: publisher, roles: [ig-lead]}", "{party: publisher, roles: [caldicott]}")
    tier = load_and_compile(catalog, SCHEMAS)["ladder"]["tiers"][0]
    assert tier["deciders"] == {"party": "publisher", "bodies": [], "roles": ["caldicott"]}


LADDER_FAULTS = [
    ("name: emergency-arbiter", "name: publisher-ig", "ladder.tiers.2.name",
     "tier name 'publisher-ig' is already used by ladder.tiers.0; tier names must be unique, rename one"),
    ("{party: publisher, roles: [ig-lead]}", "{party: publisher, bodies: [ukhsa], roles: [ig-lead]}",
     "ladder.tiers.0.deciders", "give exactly one of `party: publisher` (the disputed stream's owner decides) or "
     "`bodies: [<body ids>]`"),
    ("{bodies: [accord-arbiter], roles: [arbiter]}", "{roles: [arbiter]}", "ladder.tiers.2.deciders",
     "give exactly one of `party: publisher`"),
    ("party: publisher", "party: subscriber", "ladder.tiers.0.deciders.party", "'subscriber' is not one of publisher"),
    ("dhsc, nhse, nis]", "dhsc, nhse, nis-uk]", "ladder.tiers.1.deciders.bodies.5",
     "unknown body 'nis-uk' (did you mean 'nis'?); define it in bodies.yaml or fix the id"),
    ("dhsc, nhse, nis]", "dhsc, nhse, nis, accord-arbiter]", "ladder.tiers.1.deciders.bodies.6",
     "accord-arbiter does not hold role 'governance-board', so it could never approve; add the role to "
     "accord-arbiter in bodies.yaml or remove it from the deciders"),
    ("roles: [arbiter]}\n      approvals", "roles: [arbitrator]}\n      approvals", "ladder.tiers.2.deciders.roles.0",
     "none of the named bodies holds role 'arbitrator' (did you mean 'arbiter'?); fix the role"),
    ("approvals: 2", "approvals: 0", "ladder.tiers.1.approvals", "0 is too small; it must be at least 1"),
    ("approvals: 2", "approvals: 7", "ladder.tiers.1.approvals",
     "7 approvals can never be reached: 6 bodies decide; lower approvals or name more bodies"),
    ("enhanced: PT24H, emergency: PT1H}", "enhanced: PT24H}", "ladder.tiers.2.deadlines.emergency",
     "missing; this key is required"),
    ("emergency: PT2H}", "emergency: PT36H}", "ladder.tiers.0.deadlines.emergency",
     "36 hours is longer than the enhanced deadline (1 day); a higher level may only shorten a deadline"),
    ("normal: P10D, enhanced: PT48H", "normal: P1D, enhanced: PT48H", "ladder.tiers.1.deadlines.enhanced",
     "2 days is longer than the normal deadline (1 day)"),
    ("normal: {outcome: refusal-stands}", "normal: {outcome: refused}", "ladder.decisive_default.normal.outcome",
     "'refused' is not one of refusal-stands, provisional-grant"),
    ("emergency: {outcome: provisional-grant, period: P14D}", "emergency: {outcome: provisional-grant}",
     "ladder.decisive_default.emergency.period", "a provisional-grant needs a period, how long it lasts undecided; "
     "add e.g. period: P14D"),
    ("enhanced: {outcome: refusal-stands}", "enhanced: {outcome: refusal-stands, period: P1D}",
     "ladder.decisive_default.enhanced.period", "refusal-stands grants nothing, so it takes no period; remove it"),
    ("{normal: P14D, enhanced: PT72H, emergency: PT24H}", "{normal: P14D, enhanced: PT72H, urgent: PT24H}",
     "ladder.appeal_window.urgent", "unknown key; remove it or fix its spelling"),
    ("{normal: P14D, enhanced: PT72H, emergency: PT24H}", "{normal: P14D, enhanced: PT72H}",
     "ladder.appeal_window.emergency", "missing; this key is required"),
    ("grant_period: P90D", "grant_period: P3M", "ladder.grant_period",
     "'P3M' is not an ISO 8601 duration in weeks, days, hours, minutes or seconds; write e.g. P5D, PT24H or PT30M "
     "(no years or months, whose length varies)"),
    ("grant_period: P90D", "grant_period: 90", "ladder.grant_period", "90 is not an ISO 8601 duration"),
    ("grant_period: P90D", "grant_period: PT0S", "ladder.grant_period", "must be longer than zero"),
    ("levels: [emergency]", "levels: [emergency, critical]", "ladder.break_glass.levels.1",
     "'critical' is not one of normal, enhanced, emergency"),
    ("roles: [dph]", "roles: [dhp]", "ladder.break_glass.roles.0",
     "no body holds role 'dhp' (did you mean 'dph'?); fix the role or add it in bodies.yaml"),
    ("{body: dhsc, roles: [governance-board]}", "{body: dhsx, roles: [governance-board]}",
     "emergency.declarers.0.body", "unknown body 'dhsx' (did you mean 'dhsc'?); define it in bodies.yaml"),
    ("{body: ukhsa, roles: [governance-board]}", "{body: ukhsa, roles: [arbiter]}", "emergency.declarers.1.roles.0",
     "ukhsa does not hold role 'arbiter'; add the role to ukhsa in bodies.yaml or fix it"),
    ("{body: ukhsa, roles: [governance-board]}", "{body: dhsc, roles: [governance-board]}",
     "emergency.declarers.1.body",
     "dhsc is already listed at emergency.declarers.0; list each body once with all its roles"),
]


@pytest.mark.parametrize(("old", "new", "path", "message"), LADDER_FAULTS)
def test_ladder_faults_name_file_line_field_and_fix(catalog: Path, old: str, new: str, path: str,
                                                    message: str) -> None:
    ladder = catalog / "ladder.yaml"
    edit(ladder, old, new)
    first_line = new.splitlines()[0]
    # The edited line is the last one holding `new`: earlier entries may read the same (a duplicate).
    where = f"catalog/ladder.yaml:{line_of(ladder, first_line, nth=ladder.read_text().count(first_line) - 1)}: {path}: "
    assert where + message in problems(catalog)


def test_missing_level_of_decisive_default_points_at_its_parent(catalog: Path) -> None:
    ladder = catalog / "ladder.yaml"
    edit(ladder, "    enhanced: {outcome: refusal-stands}\n", "")
    assert (f"catalog/ladder.yaml:{line_of(ladder, 'decisive_default:')}: ladder.decisive_default.enhanced: missing; "
            "this key is required") in problems(catalog)


def test_every_ladder_fault_is_reported_at_once(catalog: Path) -> None:
    ladder = catalog / "ladder.yaml"
    edit(ladder, "approvals: 2", "approvals: 0")
    edit(ladder, "emergency: PT2H}", "emergency: PT36H}")
    edit(ladder, "grant_period: P90D", "grant_period: P3M")
    edit(ladder, "  declarers:", "  declarer:")
    message = problems(catalog)
    assert "5 problems" in message
    assert "emergency.declarer: unknown key" in message and "emergency.declarers: missing" in message


def test_a_ladder_needs_a_tier(catalog: Path) -> None:
    ladder = catalog / "ladder.yaml"
    text = ladder.read_text()
    ladder.write_text(text[:text.index("    - name: publisher-ig")].replace("  tiers:", "  tiers: []")
                      + text[text.index("  decisive_default:"):])
    assert f"catalog/ladder.yaml:{line_of(ladder, 'tiers: []')}: ladder.tiers: needs at least 1 entry" \
        in problems(catalog)


def test_templates_are_compiled_with_their_publisher_tiers_and_minimised_tier(document: dict[str, Any]) -> None:
    t1 = document["templates"]["t1-positive-tests"]
    assert {key: value for key, value in t1.items() if key != "tiers"} == {
        "title": "T1: positive test results to the upper-tier DPH health-protection cell",
        "stream": "ukhsa.positive-tests", "publisher": "ukhsa", "purpose": "health-protection",
        "legal_basis": ["copi-reg-3-4", "uk-gdpr-6-1-e", "uk-gdpr-9-2-i"], "row_scope": "subscriber-areas",
        "minimised_tier": "analyst", "emergency_level_required": "normal", "retention_s": 28 * 86400,
        "approval": {"approvals": 2, "roles": ["caldicott-guardian", "ig-lead"],
                     "one_of_each": ["caldicott-guardian", "ig-lead"]}}
    assert document["templates"]["t2-cases-to-trace"]["approval"] == {"approvals": 1, "roles": ["ig-lead"],
                                                                     "one_of_each": []}
    assert t1["tiers"] == document["agreements"]["t1-leicester"]["tiers"]
    assert {ident: template["minimised_tier"] for ident, template in document["templates"].items()} == {
        "t1-positive-tests": "analyst", "t2-cases-to-trace": None, "t3-shielded-patients": "analyst",
        "t4-care-home-capacity": None, "t5-hospital-sitrep": None, "t6-vaccination-uptake": None,
        "t7-isolation-payments": None}
    assert document["templates"]["t4-care-home-capacity"]["publisher"] == "dhsc"


def test_template_row_scope_is_compiled_as_written(catalog: Path) -> None:
    edit(catalog / "templates/t7-isolation-payments.yaml", "row_scope: subscriber-areas", "row_scope: [E07000129]")
    assert load_and_compile(catalog, SCHEMAS)["templates"]["t7-isolation-payments"]["row_scope"] == ["E07000129"]


def test_minimised_tier_must_name_a_tier_of_the_template(catalog: Path) -> None:
    template = catalog / "templates/t1-positive-tests.yaml"
    edit(template, "minimised_tier: analyst", "minimised_tier: analysts")
    assert (f"catalog/templates/t1-positive-tests.yaml:{line_of(template, 'minimised_tier')}: minimised_tier: "
            "'analysts' is not a tier of this template (dph, analyst); name the tier that delivers least, or remove "
            "minimised_tier") in problems(catalog)


def test_bodies_carry_the_regions_of_the_areas_they_serve(document: dict[str, Any]) -> None:
    bodies = document["bodies"]
    assert bodies["leicester-city-council"]["regions"] == ["E12000004"]
    assert bodies["leicestershire-county-council"]["regions"] == ["E12000004"]
    assert bodies["manchester-city-council"]["regions"] == ["E12000002"]
    assert bodies["ukhsa"]["regions"] == []


def test_police_and_food_bank_are_bodies_without_agreements(document: dict[str, Any]) -> None:
    police = document["bodies"]["leicestershire-police"]
    assert (police["kind"], police["tier"], police["roles"]) == ("responder", "responder", ["investigations"])
    assert {"E06000016", "E10000018", "E07000129"} <= set(police["served_areas"])
    assert police["regions"] == ["E12000004"]
    food = document["bodies"]["leicester-food-bank-network"]
    assert (food["kind"], food["served_areas"], food["roles"]) == ("processor", ["E06000016"], ["food-parcels"])
    parties = {a["subscriber"] for a in document["agreements"].values()}
    assert not parties & {"leicestershire-police", "leicester-food-bank-network"}


def test_responder_and_processor_bodies_are_checked(catalog: Path) -> None:
    bodies = catalog / "bodies.yaml"
    edit(bodies, "    tier: responder", "    tier: county")
    edit(bodies, "    tier: processor\n    areas: [E06000016]\n", "    tier: processor\n")
    message = problems(catalog)
    assert (f"catalog/bodies.yaml:{line_of(bodies, 'id: leicestershire-police') + 3}: bodies.18.tier: a responder "
            "body has tier responder, not 'county'") in message
    assert "bodies.19.areas: a processor body needs at least one LA code in areas" in message


def test_t7_delivers_a_blaby_isolation_row_to_blabys_benefits_team(document: dict[str, Any]) -> None:
    agreement = document["agreements"]["t7-blaby"]
    assert (agreement["publisher"], agreement["subscriber"], agreement["purpose"]) == (
        "ukhsa", "blaby-district-council", "self-isolation-support-payments")
    assert agreement["row_scope"] == {"areas": ["E07000129"]}
    assert [(tier["name"], tier["roles"], sorted(tier["fields"])) for tier in agreement["tiers"]] == [
        ("benefits", ["benefits"], ["ctas_id", "isolation_end", "isolation_start", "ltla", "notified", "postcode"])]
    schema = json.loads((SCHEMAS / f"{T7}.avsc").read_text())
    fastavro.parse_schema(schema)
    row = {"ctas_id": "A1B2C3D4", "postcode": "LE19 2AA", "ltla": "E07000129", "isolation_start": dt.date(2020, 10, 1),
           "isolation_end": dt.date(2020, 10, 10), "notified": True}
    table = load_la_table()
    # Processed after isolation_end: ingest's date-not-future rule applies to every date field, this one too.
    assert validate_record(schema, row, dt.date(2020, 10, 11), table) == []
    areas = resolve_areas(row, document["streams"][T7]["jurisdiction"], table)
    assert isinstance(areas, frozenset) and areas & set(agreement["row_scope"]["areas"])
    assert document["streams"][T7]["fields"]["ctas_id"] == {"tags": ["direct-identifier"], "kind": "string"}


def test_a_templates_approvers_must_be_roles_its_publisher_holds(catalog: Path) -> None:
    template = catalog / "templates" / "t1-positive-tests.yaml"
    edit(template, "roles: [ig-lead, caldicott-guardian], one_of_each: [ig-lead, caldicott-guardian]",
         "roles: [ig-lead, caldicot-guardian], one_of_each: [ig-lead]")
    assert (f"catalog/templates/t1-positive-tests.yaml:{line_of(template, 'approval:')}: approval.roles.1: the "
            "publisher 'ukhsa' holds no role 'caldicot-guardian'") in problems(catalog)


def test_a_template_cannot_require_more_roles_than_approvals(catalog: Path) -> None:
    template = catalog / "templates" / "t1-positive-tests.yaml"
    edit(template, "approvals: 2,", "approvals: 1,")
    assert "raise approvals" in problems(catalog)


def test_a_publishers_approval_rule_applies_to_its_templates_without_their_own(catalog: Path) -> None:
    edit(catalog / "bodies.yaml", "{id: nhse, name: NHS England, kind: national, tier: national, roles: [ig-lead, "
         "governance-board]}", "{id: nhse, name: NHS England, kind: national, tier: national, roles: [ig-lead, "
         "governance-board], approval: {approvals: 2, roles: [ig-lead]}}")
    compiled = load_and_compile(catalog, SCHEMAS)
    assert compiled["templates"]["t5-hospital-sitrep"]["approval"] == {"approvals": 2, "roles": ["ig-lead"],
                                                                      "one_of_each": []}
    assert compiled["templates"]["t1-positive-tests"]["approval"]["one_of_each"] == ["caldicott-guardian",
                                                                                      "ig-lead"]
    edit(catalog / "bodies.yaml", "approval: {approvals: 2, roles: [ig-lead]}",
         "approval: {approvals: 1, roles: [caldicott-guardian]}")
    assert "bodies.yaml" in problems(catalog) and "holds no role 'caldicott-guardian'" in problems(catalog)
