"""Grants with transforms: a decision may grant a field masked, generalised or pseudonymised, as its kind allows."""

from __future__ import annotations

from typing import Any

import pytest

from broker.domain.adjudication import Decision
from broker.domain.grant_fields import FieldGrant, field_specs
from broker.errors import GovernanceError
from tests.unit.governance_catalog import T1, catalog
from tests.unit.governance_support import UKHSA_IG, World, board, granted, refusal
from tests.unit.test_adjudication import at_board

STREAM = catalog()["streams"][T1]
AGE = FieldGrant("generalise", "age-band", at="specimen_date")


def _specs(names: tuple[str, ...], **transforms: FieldGrant) -> dict[str, dict[str, Any]]:
    return field_specs(T1, STREAM, names, transforms)


def test_each_transform_becomes_the_contracts_field_spec() -> None:
    specs = _specs(("dob", "name", "nhs_number", "postcode", "lsoa", "sex"), dob=AGE,
                   name=FieldGrant("mask", keep_last=2), nhs_number=FieldGrant("pseudonymise"),
                   postcode=FieldGrant("generalise", "postcode-district"))
    assert specs == {
        "dob": {"transform": "generalise", "method": "age-band", "as": "age_band", "params": {"at": "specimen_date"}},
        "name": {"transform": "mask", "method": None, "as": None, "params": {"keep_last": "2"}},
        "nhs_number": {"transform": "pseudonymise", "method": None, "as": None, "params": {}},
        "postcode": {"transform": "generalise", "method": "postcode-district", "as": "postcode_district",
                     "params": {}},
        "lsoa": {"transform": "keep", "method": None, "as": None, "params": {}},
        "sex": {"transform": "keep", "method": None, "as": None, "params": {}},
    }


@pytest.mark.parametrize(("names", "transforms", "error"), [
    (("sex",), {"sex": FieldGrant("generalise", "age-band")}, "age band is made from a date, and sex is other"),
    (("dob",), {"dob": FieldGrant("generalise", "age-band", at="name")}, "`at` must name a date field"),
    (("dob",), {"dob": FieldGrant("generalise", "postcode-district")}, "postcode string, and dob is date"),
    (("dob",), {"dob": FieldGrant("generalise")}, "generalise needs a method"),
    (("dob",), {"dob": FieldGrant("mask", "age-band")}, "generalise needs a method"),
    (("dob",), {"dob": FieldGrant("drop")}, "transform 'drop' is not one of"),
    (("dob",), {"dob": FieldGrant("keep", keep_last=2)}, "keep_last only applies to mask"),
    (("dob",), {"name": FieldGrant("mask")}, "name field\\(s\\) name that are not granted"),
    (("postcode", "lsoa"), {"postcode": FieldGrant("generalise", "lsoa")}, "both be delivered as 'lsoa'"),
])
def test_a_transform_that_does_not_fit_the_field_is_refused(
        names: tuple[str, ...], transforms: dict[str, FieldGrant], error: str) -> None:
    with pytest.raises(GovernanceError, match=error):
        field_specs(T1, STREAM, names, transforms)


def test_a_field_grant_reads_its_json_and_refuses_unknown_keys() -> None:
    assert FieldGrant.from_json({"transform": "mask", "keep_last": 4}, "f") == FieldGrant("mask", keep_last=4)
    assert FieldGrant("mask", keep_last=4).to_json() == {"transform": "mask", "keep_last": 4}
    with pytest.raises(GovernanceError, match="unknown key\\(s\\) keepLast"):
        FieldGrant.from_json({"transform": "mask", "keepLast": 4}, "f")


def _decided(decision: Decision) -> dict[str, Any]:
    world = World()
    world.raise_(request=refusal(fields=("dob", "lsoa", "name")))
    world.decide(UKHSA_IG, decision)
    return dict(world.dispute().decision or {})


def test_a_decision_grants_dob_as_an_age_band_not_the_exact_date() -> None:
    decision = _decided(granted(outcome="granted-in-part", transforms={"dob": AGE}))
    fields = decision["grant"]["tiers"][0]["fields"]
    assert fields["dob"]["method"] == "age-band" and fields["dob"]["as"] == "age_band"
    assert fields["lsoa"]["transform"] == fields["name"]["transform"] == "keep"
    assert decision["transforms"] == {"dob": {"transform": "generalise", "method": "age-band", "at": "specimen_date"}}


def test_a_decision_whose_transform_does_not_fit_is_refused_before_anything_is_recorded() -> None:
    world = World()
    world.raise_(request=refusal(fields=("dob", "lsoa", "name")))
    with pytest.raises(GovernanceError, match="age band is made from a date"):
        world.decide(UKHSA_IG, granted(transforms={"name": FieldGrant("generalise", "age-band")}))
    assert world.dispute().state == "awaiting" and not world.dispute().approvals


def test_board_members_proposing_different_transforms_do_not_combine() -> None:
    world = at_board(World())
    world.decide(board("dhsc"), granted(transforms={"name": FieldGrant("mask", keep_last=2)}))
    world.decide(board("nhse"), granted(transforms={"name": FieldGrant("pseudonymise")}))
    assert world.dispute().state == "awaiting", "two different treatments of a field are not one decision"
    world.decide(board("nis"), granted(transforms={"name": FieldGrant("pseudonymise")}))
    assert (world.dispute().decision or {})["grant"]["tiers"][0]["fields"]["name"]["transform"] == "pseudonymise"


def test_transforms_belong_only_to_a_decision_that_grants() -> None:
    world = World()
    world.raise_(request=refusal(fields=("dob", "lsoa", "name")))
    with pytest.raises(GovernanceError, match="only a decision that grants"):
        world.decide(UKHSA_IG, Decision("refused", "no", transforms={"dob": AGE}))
