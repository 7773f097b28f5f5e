"""Small-number suppression on tables worked out by hand (threshold 3, rounding to 5, as T6's publication channel)."""

from __future__ import annotations

from types import MappingProxyType
from typing import Any

import pytest

from broker.domain.control import PolicyState
from broker.domain.suppression import SuppressionRule, round_to, suppress_table
from broker.services.delivery_table import suppression_of, with_suppressed_counts

RULE = SuppressionRule(threshold=3, round_to=5, counts=("n",), rows="lsoa", columns="group")


def _table(grid: dict[str, dict[str, int | None]]) -> list[dict[str, Any]]:
    return [{"day": "2021-03-01", "lsoa": lsoa, "group": group, "n": n}
            for lsoa, row in grid.items() for group, n in row.items()]


def _grid(cells: list[dict[str, Any]], count: str = "n") -> dict[str, dict[str, int | None]]:
    grid: dict[str, dict[str, int | None]] = {}
    for cell in cells:
        grid.setdefault(cell["lsoa"], {})[cell["group"]] = cell[count]
    return grid


def test_small_cells_are_hidden_with_a_partner_in_their_row_and_column_and_the_rest_rounded() -> None:
    # A's 2 and C's 1 are small. Row A then has one hidden cell: its smallest other (BLACK 12) goes too; row C the
    # same (ASIAN 8). Columns ASIAN and BLACK now hide two cells each, so no line gives a hidden count away.
    table = _table({"A": {"WHITE": 40, "ASIAN": 2, "BLACK": 12},
                    "B": {"WHITE": 33, "ASIAN": 17, "BLACK": 9},
                    "C": {"WHITE": 25, "ASIAN": 8, "BLACK": 1}})
    assert _grid(suppress_table(RULE, table)) == {"A": {"WHITE": 40, "ASIAN": None, "BLACK": None},
                                                  "B": {"WHITE": 35, "ASIAN": 15, "BLACK": 10},
                                                  "C": {"WHITE": 25, "ASIAN": None, "BLACK": None}}


def test_secondary_suppression_cascades_until_no_line_holds_a_single_hidden_cell() -> None:
    # R1/X is small; R1/Y hides it from row R1, R2/X from column X; then column Y holds one hidden cell (R1/Y), so
    # R2/Y goes as well: in a 2 x 2 table one small cell hides the table.
    table = _table({"R1": {"X": 1, "Y": 10}, "R2": {"X": 20, "Y": 30}})
    assert _grid(suppress_table(RULE, table)) == {"R1": {"X": None, "Y": None}, "R2": {"X": None, "Y": None}}


def test_no_small_cell_means_nothing_hidden_and_zeros_are_shown() -> None:
    table = _table({"A": {"X": 0, "Y": 7}, "B": {"X": 13, "Y": 8}})
    assert _grid(suppress_table(RULE, table)) == {"A": {"X": 0, "Y": 5}, "B": {"X": 15, "Y": 10}}


def test_a_positive_partner_is_preferred_to_a_zero_and_a_zero_serves_when_none_is_left() -> None:
    table = _table({"A": {"X": 2, "Y": 0, "Z": 6}, "B": {"X": 0, "Y": 0, "Z": 0}})
    # row A: the 6, not the 0; column X: only B's 0 is left; column Z: B's 0; row B then hides two cells.
    assert _grid(suppress_table(RULE, table)) == {"A": {"X": None, "Y": 0, "Z": None},
                                                  "B": {"X": None, "Y": 0, "Z": None}}


def test_each_table_of_the_rule_is_named_by_its_other_fields() -> None:
    cell = {"day": "2021-03-01", "dose": "FIRST", "lsoa": "E01", "group": "ASIAN", "n": 4}
    assert RULE.table_key(cell) == (("day", "'2021-03-01'"), ("dose", "'FIRST'"))
    assert RULE.table_key({**cell, "lsoa": "E02", "group": "WHITE", "n": 9}) == RULE.table_key(cell)
    assert RULE.table_key({**cell, "dose": "SECOND"}) != RULE.table_key(cell)


def test_a_count_whose_denominator_is_hidden_is_hidden_too() -> None:
    rule = SuppressionRule(threshold=3, round_to=5, counts=("vaccinated", "eligible"), rows="lsoa",
                           columns="group", denominator="eligible")
    cells = [{"lsoa": "A", "group": "X", "vaccinated": 2, "eligible": 2},
             {"lsoa": "A", "group": "Y", "vaccinated": 0, "eligible": 2},
             {"lsoa": "B", "group": "X", "vaccinated": 30, "eligible": 41},
             {"lsoa": "B", "group": "Y", "vaccinated": 22, "eligible": 24}]
    out = suppress_table(rule, cells)
    # A/Y's 0 vaccinated of 2 eligible would say "none of these two": hidden with its denominator. Columns X and Y
    # then hold one hidden cell each, so B's cells go too, for both counts.
    assert [(c["vaccinated"], c["eligible"]) for c in out] == [(None, None)] * 4


@pytest.mark.parametrize(("value", "base", "rounded"), [(7, 5, 5), (8, 5, 10), (12, 5, 10), (13, 5, 15),
                                                        (3, 5, 5), (0, 5, 0), (17, 10, 20), (4, 1, 4)])
def test_rounding_goes_to_the_nearest_multiple_halves_up(value: int, base: int, rounded: int) -> None:
    assert round_to(value, base) == rounded


@pytest.mark.parametrize(("change", "error"), [
    ({"threshold": 0}, "1 or more"), ({"rows": "group"}, "not counts"), ({"counts": ()}, "not counts"),
    ({"denominator": "m"}, "must be one of the counts")])
def test_a_malformed_rule_is_refused(change: dict[str, Any], error: str) -> None:
    with pytest.raises(ValueError, match=error):
        SuppressionRule(**{**RULE.to_json(), "counts": ("n",), **change})


def test_a_rule_reads_back_what_it_writes() -> None:
    assert SuppressionRule.from_json(RULE.to_json()) == RULE


def test_a_plan_is_suppressed_only_when_every_agreement_granting_it_suppresses() -> None:
    rule = RULE.to_json()
    state = PolicyState(catalog={"agreements": {"restricted": {"suppression": None}, "publication": {
        "suppression": rule}}}, grants=MappingProxyType({"dispute-d-1": {"suppression": rule}}))
    assert suppression_of(state, ("publication",)) == RULE
    assert suppression_of(state, ("publication", "dispute-d-1")) == RULE
    assert suppression_of(state, ("publication", "restricted")) is None, "the restricted channel makes it moot"
    assert suppression_of(state, ()) is None


def test_suppressed_counts_become_optional_in_the_delivered_schema() -> None:
    schema = {"type": "record", "name": "R", "fields": [{"name": "lsoa", "type": "string"},
                                                        {"name": "n", "type": "int"}]}
    fields = with_suppressed_counts(schema, RULE)["fields"]
    assert fields[0] == {"name": "lsoa", "type": "string"}
    assert (fields[1]["type"], fields[1]["default"]) == (["null", "int"], None) and "under 3" in fields[1]["doc"]
    assert with_suppressed_counts(schema, None) is schema
