"""Every catalog problem is reported at once, each with file:line, the field's dotted path and what to do."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from broker.catalog import CatalogError, load_and_compile, load_catalog
from broker.errors import ConfigError
from tests.unit.catalog_support import SCHEMAS, copy_catalog, edit, line_of, problems


@pytest.fixture
def catalog(tmp_path: Path) -> Path:
    return copy_catalog(tmp_path)


def test_unknown_field_names_file_line_and_field(catalog: Path) -> None:
    template = catalog / "templates/t1-positive-tests.yaml"
    edit(template, "      sex: keep", "      sexx: keep")
    line = line_of(template, "sexx:")
    assert (f"catalog/templates/t1-positive-tests.yaml:{line}: tiers.analyst.fields.sexx: unknown field 'sexx': "
            "stream ukhsa.positive-tests has no such field (did you mean 'sex'?)") in problems(catalog)


def test_unknown_body_names_file_line_and_field(catalog: Path) -> None:
    agreement = catalog / "agreements/t1-leeds.yaml"
    edit(agreement, "subscriber: leeds-city-council", "subscriber: leeds-council")
    assert (f"catalog/agreements/t1-leeds.yaml:{line_of(agreement, 'subscriber:')}: subscriber: unknown body "
            "'leeds-council' (did you mean 'leeds-city-council'?)") in problems(catalog)


def test_bad_legal_basis_lists_the_allowed_values(catalog: Path) -> None:
    template = catalog / "templates/t6-vaccination-uptake.yaml"
    edit(template, "legal_basis: [copi-reg-3-4, uk-gdpr-9-2-i]", "legal_basis: [copi-reg-3-4, gdpr-9-2-i]")
    message = problems(catalog)
    assert (f"catalog/templates/t6-vaccination-uptake.yaml:{line_of(template, 'legal_basis')}: legal_basis.1: "
            "'gdpr-9-2-i' is not one of copi-reg-3-4, uk-gdpr-6-1-e, uk-gdpr-9-2-h") in message
    assert "not-personal-data" in message


def test_method_outside_the_enumeration_reads_like_the_contract(catalog: Path) -> None:
    template = catalog / "templates/t1-positive-tests.yaml"
    edit(template, "method: age-band", "method: age")
    assert (f"catalog/templates/t1-positive-tests.yaml:{line_of(template, 'dob:')}: tiers.analyst.fields.dob.method: "
            "'age' is not one of age-band, postcode-district, lsoa") in problems(catalog)


def test_template_role_the_subscriber_lacks_points_at_the_agreement(catalog: Path) -> None:
    agreement = catalog / "agreements/t1-blaby.yaml"
    leicester = (catalog / "agreements/t1-leicester.yaml").read_text()
    agreement.write_text(leicester.replace("t1-leicester", "t1-blaby").replace("leicester-city-council",
                                                                               "blaby-district-council"))
    edit(catalog / "bodies.yaml", "roles: [environmental-health, benefits, ig-lead]",
         "roles: [environmental-health, benefits, ig-lead, dph]")
    message = problems(catalog)
    assert (f"catalog/agreements/t1-blaby.yaml:{line_of(agreement, 'subscriber:')}: subscriber: subscriber "
            "'blaby-district-council' does not hold role 'analyst', which tier 'analyst' of template "
            "t1-positive-tests gives access to") in message
    assert "role 'dph'" not in message


def test_own_tier_role_the_subscriber_lacks_points_at_the_role(catalog: Path) -> None:
    agreement = catalog / "agreements/t1-nottingham.yaml"
    edit(agreement, "review_date:", "tiers:\n  eh: {roles: [environmental-health], other_fields: keep}\nreview_date:")
    assert (f"catalog/agreements/t1-nottingham.yaml:{line_of(agreement, 'eh:')}: tiers.eh.roles.0: subscriber "
            "'nottingham-city-council' does not hold role 'environmental-health'") in problems(catalog)


def test_valid_until_before_valid_from(catalog: Path) -> None:
    agreement = catalog / "agreements/t1-cornwall.yaml"
    edit(agreement, "valid_until: 2027-12-31T23:59:59Z", "valid_until: 2025-12-31T23:59:59Z")
    assert (f"catalog/agreements/t1-cornwall.yaml:{line_of(agreement, 'valid_until')}: valid_until: valid_until "
            "2025-12-31T23:59:59+00:00 is not after valid_from 2026-01-01T00:00:00+00:00") in problems(catalog)


def test_datetime_without_timezone_is_refused(catalog: Path) -> None:
    agreement = catalog / "agreements/t1-cornwall.yaml"
    edit(agreement, "valid_from: 2026-01-01T00:00:00Z", "valid_from: 2026-01-01T00:00:00")
    assert (f"catalog/agreements/t1-cornwall.yaml:{line_of(agreement, 'valid_from')}: valid_from: "
            "2026-01-01 00:00:00 has no timezone") in problems(catalog)


def test_yaml_syntax_error_names_the_line(catalog: Path) -> None:
    agreement = catalog / "agreements/t1-hackney.yaml"
    edit(agreement, "review_date: 2027-06-30", "review_date: [2027-06-30")
    message = problems(catalog)
    assert ("catalog/agreements/t1-hackney.yaml:7: YAML syntax error: expected ',' or ']', but got ':' "
            "(while parsing a flow sequence started at line 6); fix the YAML") in message


def test_widening_row_scope_is_refused(catalog: Path) -> None:
    agreement = catalog / "agreements/t1-nottingham.yaml"
    edit(agreement, "review_date:", "row_scope: [E06000018, E06000016]\nreview_date:")
    message = problems(catalog)
    assert (f"catalog/agreements/t1-nottingham.yaml:{line_of(agreement, 'row_scope')}: row_scope.1: E06000016 is "
            "outside the areas 'nottingham-city-council' serves (E06000018); a row scope can only narrow") in message
    assert "row_scope.0" not in message


def test_duplicate_ids_name_both_places(catalog: Path) -> None:
    shutil.copy(catalog / "agreements/t1-leeds.yaml", catalog / "agreements/t1-leeds-again.yaml")
    edit(catalog / "bodies.yaml", "  - id: blaby-district-council", "  - id: leicester-city-council")
    message = problems(catalog)
    assert ("catalog/agreements/t1-leeds.yaml:1: agreement: duplicate agreement id 't1-leeds', already defined at "
            "catalog/agreements/t1-leeds-again.yaml:1: agreement") in message
    line = line_of(catalog / "bodies.yaml", "  - id: leicester-city-council")
    assert f"duplicate body id 'leicester-city-council', already defined at catalog/bodies.yaml:{line}" in message


def test_duplicate_yaml_key_is_an_error(catalog: Path) -> None:
    agreement = catalog / "agreements/t1-leeds.yaml"
    edit(agreement, "review_date: 2027-06-30", "review_date: 2027-06-30\nsubscriber: hackney-council")
    assert (f"catalog/agreements/t1-leeds.yaml:{line_of(agreement, 'hackney-council')}: subscriber: duplicate key"
            ) in problems(catalog)


def test_generalise_without_method(catalog: Path) -> None:
    template = catalog / "templates/t1-positive-tests.yaml"
    edit(template, "      sex: keep", "      sex: generalise")
    assert (f"catalog/templates/t1-positive-tests.yaml:{line_of(template, 'sex:')}: tiers.analyst.fields.sex.method: "
            "generalise needs a method: one of age-band, postcode-district, lsoa") in problems(catalog)


@pytest.mark.parametrize(
    ("old", "new", "path", "message"),
    [
        ("sex: keep", "sex: {transform: generalise, method: age-band}", "tiers.analyst.fields.sex.method",
         "age-band needs a date field"),
        ("sex: keep", "postcode: {transform: generalise, method: age-band}", "tiers.analyst.fields.postcode.method",
         "age-band needs a date field"),
        ("at: specimen_date", "at: pillar", "tiers.analyst.fields.dob.at", "`at` must name a date field"),
        ("sex: keep", "sex: {transform: generalise, method: postcode-district}", "tiers.analyst.fields.sex.method",
         "postcode-district needs a string field"),
        ("sex: keep", "postcode: {transform: generalise, method: lsoa, from: msoa}",
         "tiers.analyst.fields.postcode.from", "`from` must name a field tagged geography:lsoa (lsoa)"),
        ("sex: keep", "sex: {transform: keep, as: lsoa}", "tiers.analyst.fields.sex.as",
         "delivers 'lsoa', as field 'lsoa' already does"),
        ("address: keep", "address: {transform: pseudonymise, as: postcode}", "tiers.dph.fields.address.as",
         "delivers 'postcode', which other_fields: keep also delivers from the unnamed field 'postcode'"),
        ("sex: keep", "sex: {transform: keep, at: dob}", "tiers.analyst.fields.sex", "`at` only applies to age-band"),
    ],
)
def test_field_rules_must_fit_the_schema(catalog: Path, old: str, new: str, path: str, message: str) -> None:
    template = catalog / "templates/t1-positive-tests.yaml"
    edit(template, old, new)
    where = f"catalog/templates/t1-positive-tests.yaml:{line_of(template, new)}: {path}: "
    assert where + message in problems(catalog)


def test_body_areas_must_be_known_and_of_the_bodys_tier(catalog: Path) -> None:
    bodies = catalog / "bodies.yaml"
    edit(bodies, "areas: [E10000024]", "areas: [E06000018]")
    edit(bodies, "areas: [E07000129]", "areas: [E07000999]")
    message = problems(catalog)
    assert (f"catalog/bodies.yaml:{line_of(bodies, 'E06000018]', nth=1)}: bodies.10.areas.0: E06000018 (Nottingham) is "
            "unitary in the LA table but the body's tier is county") in message
    assert f"catalog/bodies.yaml:{line_of(bodies, 'E07000999')}: bodies.17.areas.0: E07000999 is not in the LA table" \
        in message


def test_an_agreement_or_body_naming_a_code_retired_in_2023_is_told_its_successor(catalog: Path) -> None:
    agreement = catalog / "agreements/t1-leicestershire.yaml"
    edit(agreement, "review_date:", "row_scope: [E07000026]\nreview_date:")       # Allerdale, now in Cumberland
    bodies = catalog / "bodies.yaml"
    edit(bodies, "areas: [E07000129]", "areas: [E07000163]")                     # Craven, now in North Yorkshire
    message = problems(catalog)
    assert (f"catalog/agreements/t1-leicestershire.yaml:{line_of(agreement, 'row_scope')}: row_scope.0: E07000026 "
            "(Allerdale) was abolished on 2023-04-01; its successor is E06000063 (Cumberland) (ONS December 2023); "
            "use a known code") in message
    assert (f"catalog/bodies.yaml:{line_of(bodies, 'E07000163')}: bodies.17.areas.0: E07000163 (Craven) was "
            "abolished on 2023-04-01; its successor is E06000065 (North Yorkshire) (ONS December 2023)") in message


def test_every_problem_is_reported_at_once(catalog: Path) -> None:
    edit(catalog / "agreements/t1-leeds.yaml", "subscriber: leeds-city-council", "subscriber: nobody")
    edit(catalog / "agreements/t1-hackney.yaml", "template: t1-positive-tests", "template: t1-positive-test")
    edit(catalog / "streams.yaml", "owner: nhse", "owner: nhs-e")
    edit(catalog / "agreements/t6-leicester.yaml", "  - {body: nis,", "  - {body: ukhsa,")
    with pytest.raises(CatalogError) as caught:
        load_and_compile(catalog, SCHEMAS)
    found = "\n".join(caught.value.problems)
    assert "t1-leeds.yaml:3: subscriber: unknown body 'nobody'" in found
    assert "t1-hackney.yaml:2: template: unknown template 't1-positive-test' (did you mean 't1-positive-tests'?)" \
        in found
    line = line_of(catalog / "streams.yaml", "owner: nhs-e")
    assert f"streams.yaml:{line}: streams.4.owner: unknown body 'nhs-e' (did you mean 'nhse'?)" in found
    assert "t6-leicester.yaml:7: signatories: no signatory from the publisher 'nis'" in found
    assert len(caught.value.problems) == 4


def test_load_problems_are_reported_together_across_files(catalog: Path) -> None:
    edit(catalog / "agreements/t1-leeds.yaml", "valid_from: 2026-01-01T00:00:00Z\n", "")
    edit(catalog / "bodies.yaml", "kind: local, tier: unitary, areas: [E08000035]",
         "kind: locall, tier: unitary, areas: [E08000035]")
    with pytest.raises(CatalogError) as caught:
        load_catalog(catalog)
    assert caught.value.problems[0].startswith("catalog/bodies.yaml:")
    assert "bodies.13.kind: 'locall' is not one of national, local" in caught.value.problems[0]
    assert "catalog/agreements/t1-leeds.yaml:1: valid_from: missing; this key is required" in caught.value.problems


def test_agreement_without_template_must_state_the_flow(catalog: Path) -> None:
    edit(catalog / "agreements/t1-leeds.yaml", "template: t1-positive-tests\n", "stream: ukhsa.positive-tests\n")
    assert "catalog/agreements/t1-leeds.yaml:1: an agreement without a template must state purpose, legal_basis, " \
           "tiers" in problems(catalog)


def test_stream_needs_a_schema(catalog: Path) -> None:
    edit(catalog / "streams.yaml", "  - id: nis.vaccination-uptake", "  - id: nis.vaccination-uptakes")
    message = problems(catalog)
    line = line_of(catalog / "streams.yaml", "id: nis.vaccination-uptakes")
    assert f"catalog/streams.yaml:{line}: streams.5.id: no stream schema has accord.stream 'nis.vaccination-uptakes'" \
        in message
    assert "catalog/templates/t6-vaccination-uptake.yaml:3: stream: unknown stream 'nis.vaccination-uptake'" in message


def test_ids_with_dots_or_capitals_are_refused(catalog: Path) -> None:
    edit(catalog / "agreements/t1-leeds.yaml", "agreement: t1-leeds", "agreement: t1.Leeds")
    assert "catalog/agreements/t1-leeds.yaml:1: agreement: 't1.Leeds' is not a kebab-case id" in problems(catalog)


def test_a_body_may_not_take_an_id_kept_for_drill_bodies(catalog: Path) -> None:
    edit(catalog / "bodies.yaml", "  - id: leicester-city-council", "  - id: drill-leicester")
    assert "ids starting 'drill-' are kept for the bodies `accord drill` adds" in problems(catalog)


def test_missing_directory_and_files_are_config_errors(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="does not exist"):
        load_catalog(tmp_path / "nowhere")
    (tmp_path / "catalog").mkdir()
    with pytest.raises(CatalogError) as caught:
        load_catalog(tmp_path / "catalog")
    assert caught.value.problems == (
        "catalog/bodies.yaml: missing; create it with a top-level `bodies:` list",
        "catalog/streams.yaml: missing; create it with a top-level `streams:` list",
        "catalog/ladder.yaml: missing; create it with top-level `ladder:` and `emergency:` (catalog/README.md shows "
        "their keys)",
    )


def test_impossible_date_names_the_line(catalog: Path) -> None:
    agreement = catalog / "agreements/t1-leeds.yaml"
    edit(agreement, "review_date: 2027-06-30", "review_date: 2027-13-30")
    assert (f"catalog/agreements/t1-leeds.yaml:{line_of(agreement, 'review_date')}: YAML value error: '2027-13-30' "
            "is not a real date or time (month must be in 1..12)") in problems(catalog)


def test_files_that_would_be_skipped_are_reported(catalog: Path) -> None:
    (catalog / "agreements/t1-york.yml").write_text("agreement: t1-york\n")
    (catalog / "templates/empty.yaml").write_text("# to do\n")
    message = problems(catalog)
    assert "catalog/agreements/t1-york.yml: ignored: rename it to t1-york.yaml so it is read" in message
    assert "catalog/templates/empty.yaml:1: the file is empty" in message


def test_one_role_receives_a_stream_for_one_purpose_only(catalog: Path) -> None:
    second = catalog / "agreements/t1-leicester-research.yaml"
    second.write_text((catalog / "agreements/t1-leicester.yaml").read_text().replace(
        "agreement: t1-leicester", "agreement: t1-leicester-research\npurpose: research"))
    found = problems(catalog)
    assert ("catalog/agreements/t1-leicester-research.yaml:1: agreement: leicester-city-council role dph already "
            "receives ukhsa.positive-tests for purpose 'health-protection' under t1-leicester") in found


def test_required_fields_must_be_stream_fields_listed_once(catalog: Path) -> None:
    agreement = catalog / "agreements/t1-nottinghamshire.yaml"
    edit(agreement, "required_fields: [postcode, nhs_number]", "required_fields: [postcode, nhs_numbr]")
    line = line_of(agreement, "required_fields")
    assert (f"catalog/agreements/t1-nottinghamshire.yaml:{line}: required_fields.1: 'nhs_numbr' is not a field of "
            "ukhsa.positive-tests; required fields must be stream fields") in problems(catalog)
    edit(agreement, "required_fields: [postcode, nhs_numbr]", "required_fields: [postcode, postcode]")
    assert "'postcode' is listed twice; list it once" in problems(catalog)


def test_a_broken_geography_of_the_catalog_is_listed_like_its_other_files(catalog: Path) -> None:
    manifest = catalog / "geography/geography.yaml"
    edit(manifest, "lsoas:", "lsoas_file:")
    assert (f"catalog/geography: catalog/geography/geography.yaml:{line_of(manifest, 'lsoas_file')}: expected one "
            "`key: value` line") in problems(catalog)


def test_a_suppression_rule_names_fields_of_the_stream_and_counts_that_are_counts(catalog: Path) -> None:
    agreement = catalog / "agreements" / "t6-leicester-publication.yaml"
    line = line_of(agreement, "suppression:")
    edit(agreement, "rows: lsoa", "rows: lsao")
    assert f"t6-leicester-publication.yaml:{line}: suppression.rows: unknown field 'lsao'" in problems(catalog)
    edit(agreement, "rows: lsao, columns: ethnicity_group, denominator: eligible_n",
         "rows: lsoa, columns: ethnicity_group, counts: [vaccinated_n, dose]")
    assert f"{line}: suppression.counts: 'dose' is " in problems(catalog) and "not a count" in problems(catalog)
    edit(agreement, "counts: [vaccinated_n, dose]", "counts: [vaccinated_n], denominator: eligible_n")
    assert "must be one of the counts" in problems(catalog)
