"""The shipped catalog compiles to the contract of docs/sharing-plans.md; short files switch flows on."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest

from broker.catalog import load_and_compile, revision_of
from tests.unit.catalog_support import CATALOG, SCHEMAS, copy_catalog, edit, problems

UPPER_TIER_T1 = ("leicester", "nottingham", "leicestershire", "nottinghamshire", "manchester", "birmingham", "leeds",
                 "hackney", "cornwall", "blackburn-with-darwen")
LEICESTERSHIRE = "E10000018"
LEICESTERSHIRE_DISTRICTS = [f"E07000{n}" for n in range(129, 136)]


@pytest.fixture(scope="module")
def document() -> dict[str, Any]:
    return load_and_compile(CATALOG, SCHEMAS)


@pytest.fixture
def catalog(tmp_path: Path) -> Path:
    return copy_catalog(tmp_path)


def keep(name: str) -> dict[str, Any]:
    return {"transform": "keep", "method": None, "as": name, "params": {}}


def test_shipped_catalog_compiles_to_the_contract_shape(document: dict[str, Any]) -> None:
    assert set(document) == {"revision", "la_vintage", "bodies", "streams", "templates", "agreements", "ladder",
                             "emergency_declarers"}
    assert re.fullmatch(r"c-[0-9a-f]{12}", document["revision"])
    assert document["revision"] == revision_of(document)
    assert document["la_vintage"] == "ONS December 2023"
    assert set(document["streams"]) == {"ukhsa.positive-tests", "nhstt.cases-to-trace", "nhsd.shielded-patients",
                                        "dhsc.care-home-capacity", "nhse.hospital-sitrep", "nis.vaccination-uptake",
                                        "ukhsa.isolation-notifications"}
    assert set(document["agreements"]) == {f"t1-{place}" for place in UPPER_TIER_T1} | {
        "t3-leicester", "t6-leicester", "t6-leicester-publication", "t7-blaby"}


def test_t1_analyst_tier_is_lsoa_age_band_and_sex_only(document: dict[str, Any]) -> None:
    for place in UPPER_TIER_T1:
        tiers = {tier["name"]: tier for tier in document["agreements"][f"t1-{place}"]["tiers"]}
        analyst = tiers["analyst"]
        assert analyst["roles"] == ["analyst"]
        assert analyst["other_fields"] == "drop"
        assert analyst["fields"] == {
            "lsoa": keep("lsoa"),
            "dob": {"transform": "generalise", "method": "age-band", "as": "age_band",
                    "params": {"at": "specimen_date"}},
            "sex": keep("sex"),
        }


def test_t1_dph_tier_keeps_all_fields_naming_the_direct_identifiers(document: dict[str, Any]) -> None:
    dph = document["agreements"]["t1-leicester"]["tiers"][0]
    fields = document["streams"]["ukhsa.positive-tests"]["fields"]
    direct = {name for name, field in fields.items() if "direct-identifier" in field["tags"]}
    assert (dph["name"], dph["roles"], dph["other_fields"]) == ("dph", ["dph"], "keep")
    assert set(dph["fields"]) == direct == {"specimen_id", "nhs_number", "name", "address"}


def test_agreement_carries_parties_dates_and_legal_basis(document: dict[str, Any]) -> None:
    agreement = document["agreements"]["t1-leicester"]
    assert agreement["template"] == "t1-positive-tests"
    assert (agreement["publisher"], agreement["subscriber"]) == ("ukhsa", "leicester-city-council")
    assert agreement["legal_basis"] == ["copi-reg-3-4", "uk-gdpr-6-1-e", "uk-gdpr-9-2-i"]
    assert (agreement["valid_from"], agreement["valid_until"]) == ("2026-01-01T00:00:00Z", "2027-12-31T23:59:59Z")
    assert agreement["review_date"] == "2027-06-30"
    assert agreement["emergency_level_required"] == "normal"
    assert {s["body"] for s in agreement["signatories"]} == {"ukhsa", "leicester-city-council"}


def test_county_row_scope_includes_its_seven_districts(document: dict[str, Any]) -> None:
    assert document["agreements"]["t1-leicestershire"]["row_scope"] == {
        "areas": sorted([LEICESTERSHIRE, *LEICESTERSHIRE_DISTRICTS])}
    assert document["bodies"]["leicestershire-county-council"]["served_areas"] == sorted(
        [LEICESTERSHIRE, *LEICESTERSHIRE_DISTRICTS])
    assert document["agreements"]["t1-leicester"]["row_scope"] == {"areas": ["E06000016"]}


def test_streams_carry_every_schema_field_with_its_tags(document: dict[str, Any]) -> None:
    stream = document["streams"]["ukhsa.positive-tests"]
    assert stream["subject"] == "ingest.ukhsa.positive-tests-value"
    assert stream["jurisdiction"] == ["utla", "ltla"]
    assert stream["fields"]["specimen_id"] == {"tags": ["direct-identifier"], "kind": "string"}
    assert stream["fields"]["specimen_date"] == {"tags": [], "kind": "date"}
    assert len(stream["fields"]) == 17


def test_lsoa_and_postcode_methods_fill_in_their_defaults(catalog: Path) -> None:
    template = catalog / "templates/t3-shielded-patients.yaml"
    edit(template, "      ltla: keep", "      utla: keep")
    document = load_and_compile(catalog, SCHEMAS)
    analyst = document["agreements"]["t3-leicester"]["tiers"][1]["fields"]
    assert analyst["postcode"] == {"transform": "generalise", "method": "postcode-district",
                                   "as": "postcode_district", "params": {}}
    t1 = catalog / "templates/t1-positive-tests.yaml"
    edit(t1, "      lsoa: keep", "      postcode: {transform: generalise, method: lsoa}")
    edit(t1, "      sex: keep", "      name: {transform: mask, keep_last: 2}")
    fields = load_and_compile(catalog, SCHEMAS)["agreements"]["t1-leicester"]["tiers"][1]["fields"]
    assert fields["postcode"] == {"transform": "generalise", "method": "lsoa", "as": "lsoa",
                                  "params": {"from": "lsoa"}}
    assert fields["name"] == {"transform": "mask", "method": None, "as": "name", "params": {"keep_last": "2"}}


def test_short_file_switches_on_t1_for_a_new_council(catalog: Path) -> None:
    with (catalog / "bodies.yaml").open("a") as bodies:
        bodies.write("  - {id: isles-of-scilly-council, name: Council of the Isles of Scilly, kind: local,\n"
                     "     tier: unitary, areas: [E06000053], roles: [dph, analyst]}\n")
    agreement = catalog / "agreements/t1-isles-of-scilly.yaml"
    agreement.write_text(
        "agreement: t1-isles-of-scilly\n"
        "template: t1-positive-tests\n"
        "subscriber: isles-of-scilly-council\n"
        "valid_from: 2026-01-01T00:00:00Z\n"
        "valid_until: 2027-12-31T23:59:59Z\n"
        "review_date: 2027-06-30\n"
        "signatories:\n"
        "  - {body: ukhsa, name: Exercise IG Lead, role: ig-lead}\n"
        "  - {body: isles-of-scilly-council, name: Exercise DPH, role: dph}\n")
    assert len(agreement.read_text().splitlines()) <= 12
    document = load_and_compile(catalog, SCHEMAS)
    compiled = document["agreements"]["t1-isles-of-scilly"]
    assert compiled["row_scope"] == {"areas": ["E06000053"]}
    assert compiled["tiers"] == document["agreements"]["t1-leicester"]["tiers"]
    assert compiled["publisher"] == "ukhsa"


def test_agreement_without_template_and_narrowed_row_scope(catalog: Path) -> None:
    (catalog / "agreements/ad-hoc-blaby.yaml").write_text(
        "agreement: ad-hoc-blaby\n"
        "subscriber: leicestershire-county-council\n"
        "stream: ukhsa.positive-tests\n"
        "purpose: health-protection\n"
        "legal_basis: [uk-gdpr-9-2-i, copi-reg-3-4]\n"
        "emergency_level_required: emergency\n"
        "row_scope: [E07000129]\n"
        "tiers:\n"
        "  dph: {roles: [dph], fields: {postcode: keep, specimen_date: keep}}\n"
        "valid_from: 2026-01-01T00:00:00+01:00\n"
        "valid_until: 2026-02-01T00:00:00Z\n"
        "review_date: 2026-01-15\n"
        "signatories:\n"
        "  - {body: ukhsa, name: A, role: ig-lead}\n"
        "  - {body: leicestershire-county-council, name: B, role: dph}\n")
    compiled = load_and_compile(catalog, SCHEMAS)["agreements"]["ad-hoc-blaby"]
    assert compiled["template"] is None
    assert compiled["row_scope"] == {"areas": ["E07000129"]}
    assert compiled["legal_basis"] == ["copi-reg-3-4", "uk-gdpr-9-2-i"]
    assert compiled["valid_from"] == "2025-12-31T23:00:00Z"
    assert compiled["emergency_level_required"] == "emergency"
    assert compiled["tiers"] == [{"name": "dph", "roles": ["dph"], "other_fields": "drop",
                                  "fields": {"postcode": keep("postcode"), "specimen_date": keep("specimen_date")}}]


def test_revision_is_stable_under_formatting_and_changes_with_content(catalog: Path,
                                                                      document: dict[str, Any]) -> None:
    agreement = catalog / "agreements/t1-leeds.yaml"
    agreement.write_text("# reviewed 2026-01-02\n" + "\n".join(reversed(agreement.read_text().splitlines()[:6]))
                         + "\n" + "\n".join(agreement.read_text().splitlines()[6:]) + "\n")
    (catalog / "agreements/t1-leeds.yaml").rename(catalog / "agreements/t1-leeds-renamed.yaml")
    reformatted = load_and_compile(catalog, SCHEMAS)
    assert reformatted == document
    edit(catalog / "agreements/t1-leeds-renamed.yaml", "review_date: 2027-06-30", "review_date: 2027-06-29")
    changed = load_and_compile(catalog, SCHEMAS)
    assert changed["revision"] != document["revision"]
    assert changed["revision"] == revision_of(changed)


def test_retention_comes_from_the_template_and_an_agreement_may_shorten_it(catalog: Path) -> None:
    document = load_and_compile(catalog, SCHEMAS)
    assert document["agreements"]["t1-leicester"]["retention_s"] == 28 * 86400
    edit(catalog / "agreements/t1-leicester.yaml", "review_date:", "retention: P7D\nreview_date:")
    assert load_and_compile(catalog, SCHEMAS)["agreements"]["t1-leicester"]["retention_s"] == 7 * 86400


@pytest.mark.parametrize("span", ["PT5M", "P1M", "28 days", "0"])
def test_a_retention_that_is_not_an_iso_duration_of_an_hour_or_more_is_refused(catalog: Path, span: str) -> None:
    edit(catalog / "agreements/t1-leicester.yaml", "review_date:", f"retention: {span}\nreview_date:")
    assert "retention" in problems(catalog)


def test_an_agreement_ends_when_its_legal_basis_lapses(catalog: Path) -> None:
    edit(catalog / "agreements/t1-leicester.yaml", "review_date:", "legal_basis_until: 2027-06-30\nreview_date:")
    compiled = load_and_compile(catalog, SCHEMAS)["agreements"]["t1-leicester"]
    assert (compiled["valid_until"], compiled["signed_valid_until"], compiled["legal_basis_until"]) == (
        "2027-07-01T00:00:00Z", "2027-12-31T23:59:59Z", "2027-06-30")


def test_a_national_bodys_row_scope_may_name_a_region(catalog: Path) -> None:
    (catalog / "agreements/t1-ukhsa-east-midlands.yaml").write_text(
        "agreement: t1-ukhsa-east-midlands\ntemplate: t1-positive-tests\nsubscriber: nhse\nrow_scope: [E12000004]\n"
        "tiers:\n  cell: {roles: [ig-lead], fields: {lsoa: keep}}\n"
        "valid_from: 2026-01-01T00:00:00Z\nvalid_until: 2027-12-31T23:59:59Z\nreview_date: 2027-06-30\n"
        "signatories:\n  - {body: ukhsa, name: Test, role: ig-lead}\n  - {body: nhse, name: Test, role: ig-lead}\n")
    areas = load_and_compile(catalog, SCHEMAS)["agreements"]["t1-ukhsa-east-midlands"]["row_scope"]["areas"]
    assert {"E06000016", "E06000018", "E10000018", "E07000129", "E10000024", "E07000170"} <= set(areas)
    assert len(areas) == 35 + 4  # its 35 authorities and 4 counties (Derbyshire, Leicestershire, Lincolnshire, Notts)
    assert "E08000003" not in areas
