"""The dispute page's decision form read into the governance API's decision: the outcomes offered per kind of
dispute, granted in part (the fields or areas ticked), granted for a period (the GOV.UK date pattern, to the end
of that day in UTC), and the errors a decider is shown instead."""

from __future__ import annotations

import datetime as dt

import pytest

from broker.api.console.disputes import appealable, decision_of, outcomes_for

TODAY = dt.date(2026, 12, 7)


def form(**values: str | list[str]) -> dict[str, list[str]]:
    return {name.replace("_", "-"): value if isinstance(value, list) else [value] for name, value in values.items()}


def test_each_kind_of_dispute_offers_the_outcomes_its_decision_can_enforce() -> None:
    assert [o for o, _ in outcomes_for("refusal")] == ["granted", "granted-in-part", "granted-for-period", "refused"]
    assert [o for o, _ in outcomes_for("restriction")] == [o for o, _ in outcomes_for("refusal")]
    assert [o for o, _ in outcomes_for("grant-contested")] == ["granted", "refused"]
    assert [o for o, _ in outcomes_for("break-glass-review")] == ["granted", "granted-for-period", "refused"]
    assert outcomes_for("provisional-review") == outcomes_for("break-glass-review")


def test_a_whole_grant_or_refusal_is_the_outcome_and_the_reason() -> None:
    assert decision_of(form(outcome="refused", reason=" The county leads. "), "refusal", TODAY) == (
        {"outcome": "refused", "reason": "The county leads."}, [])


def test_granted_in_part_names_the_fields_and_areas_ticked() -> None:
    body, errors = decision_of(form(outcome="granted-in-part", reason="Enough to inspect.",
                                    fields=["specimen_date", "lsoa", "lsoa"]), "refusal", TODAY)
    assert errors == [] and body == {"outcome": "granted-in-part", "reason": "Enough to inspect.",
                                     "fields": ["lsoa", "specimen_date"]}
    body, _ = decision_of(form(outcome="granted-in-part", reason="r", areas=["E07000129"]), "refusal", TODAY)
    assert body["areas"] == ["E07000129"] and "fields" not in body


def test_granted_in_part_with_nothing_ticked_says_what_to_tick() -> None:
    _, errors = decision_of(form(outcome="granted-in-part", reason="r"), "refusal", TODAY)
    assert errors == [("part-fields", "Select the fields or the areas you grant")]


def test_a_period_ends_at_the_last_second_of_the_day_given() -> None:
    body, errors = decision_of(form(outcome="granted-for-period", reason="r", until_day="31", until_month="1",
                                    until_year="2027"), "break-glass-review", TODAY)
    assert errors == [] and body["until"] == "2027-01-31T23:59:59Z"


@pytest.mark.parametrize(("day", "month", "year", "message"), [
    ("", "1", "2027", "Enter the date the access ends, with a day, month and year"),
    ("30", "2", "2027", "The date the access ends must be a real date, for example 27 3 2027"),
    ("x", "1", "2027", "The date the access ends must be a real date, for example 27 3 2027"),
    ("7", "12", "2026", "The date the access ends must be in the future"),
])
def test_a_period_needs_a_real_future_date(day: str, month: str, year: str, message: str) -> None:
    _, errors = decision_of(form(outcome="granted-for-period", reason="r", until_day=day, until_month=month,
                                 until_year=year), "refusal", TODAY)
    assert errors == [("until-day", message)]


def test_an_outcome_the_kind_does_not_offer_and_a_missing_reason_are_both_named() -> None:
    _, errors = decision_of(form(outcome="granted-in-part"), "grant-contested", TODAY)
    assert errors[0] == ("outcome", "Select an outcome")
    assert errors[-1] == ("reason", "Enter the reason for your decision")
    _, errors = decision_of({}, "refusal", TODAY)
    assert [target for target, _ in errors] == ["outcome", "reason"]


def test_only_an_enforced_decision_below_the_last_tier_within_its_window_isappealable() -> None:
    later = (dt.datetime.now(dt.UTC) + dt.timedelta(days=1)).strftime("%Y-%m-%dT%H:%M:%SZ")
    earlier = (dt.datetime.now(dt.UTC) - dt.timedelta(days=1)).strftime("%Y-%m-%dT%H:%M:%SZ")
    assert appealable({"state": "enforced", "tier": 0, "closes_at": later}, 3)
    assert not appealable({"state": "enforced", "tier": 0, "closes_at": earlier}, 3)
    assert not appealable({"state": "enforced", "tier": 2, "closes_at": later}, 3)
    assert not appealable({"state": "awaiting", "tier": 0, "closes_at": later}, 3)
