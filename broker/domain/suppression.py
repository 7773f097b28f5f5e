"""Small-number suppression of aggregate tables: counts under a threshold hidden, the others rounded, and enough
further cells hidden that no hidden count can be worked out from a row or column total.

Based on the Government Statistical Service's "Disclosure control guidance for tables produced from administrative
sources" (ONS, 2014: threshold suppression with secondary suppression, or rounding) and NHS Digital's small-number
rule for Hospital Episode Statistics (counts 1 to 7 suppressed, the others rounded to the nearest 5). Algorithm,
for each count of a table of cells (one row value and one column value per cell):

1. primary: a count of 1 .. threshold-1 is hidden (0 is shown: a true zero is not a small number of people);
2. a count whose cell's denominator is hidden is hidden too (3 of 3 eligible, vaccinated = 3, says "all of them");
3. secondary: while some row or column holds exactly one hidden count, hide the smallest shown count of that line
   (a positive one before a zero; the earlier cell on a tie), so that every line's total less its shown cells
   leaves the sum of two or more hidden cells, never one;
4. every shown count is rounded to the nearest multiple of `round_to` (halves up).

A line with a single cell cannot be protected within the table (its total is the cell): keep such tables
out of suppressed plans, or publish them at a coarser geography. docs/sharing-plans.md says what a table is.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class SuppressionRule:
    """How an agreement's aggregate rows are suppressed; every other field of a cell names its table."""

    threshold: int
    round_to: int
    counts: tuple[str, ...]
    rows: str
    columns: str
    denominator: str | None = None

    def __post_init__(self) -> None:
        if self.threshold < 1 or self.round_to < 1:
            raise ValueError(f"threshold and round_to must be 1 or more, not {self.threshold} and {self.round_to}")
        if not self.counts or self.rows == self.columns or {self.rows, self.columns} & set(self.counts):
            raise ValueError("a suppression rule names counts, and a rows and a columns field that are not counts")
        if self.denominator is not None and self.denominator not in self.counts:
            raise ValueError(f"the denominator {self.denominator!r} must be one of the counts {list(self.counts)}")

    @classmethod
    def from_json(cls, doc: Mapping[str, Any]) -> SuppressionRule:
        return cls(threshold=int(doc["threshold"]), round_to=int(doc["round_to"]),
                   counts=tuple(str(c) for c in doc["counts"]), rows=str(doc["rows"]), columns=str(doc["columns"]),
                   denominator=None if doc.get("denominator") is None else str(doc["denominator"]))

    def to_json(self) -> dict[str, Any]:
        return {"threshold": self.threshold, "round_to": self.round_to, "counts": list(self.counts),
                "rows": self.rows, "columns": self.columns, "denominator": self.denominator}

    def table_key(self, cell: Mapping[str, Any]) -> tuple[tuple[str, str], ...]:
        """What names the cell's table: every field but the counts, the row and the column (e.g. date, area, age
        band and dose for T6 cells laid out LSOA by ethnic group)."""
        skip = {*self.counts, self.rows, self.columns}
        return tuple(sorted((name, repr(value)) for name, value in cell.items() if name not in skip))


def round_to(value: int, base: int) -> int:
    """`value` to the nearest multiple of `base`, halves up (7 -> 5, 8 -> 10 for base 5)."""
    return (2 * value + base) // (2 * base) * base


def suppress_table(rule: SuppressionRule, cells: Sequence[Mapping[str, Any]]) -> list[dict[str, Any]]:
    """The cells of one table (one table key) with every count shown rounded or hidden (None), in input order."""
    hidden = {count: _primary(rule, cells, count) for count in rule.counts}
    if rule.denominator is not None:
        for count in rule.counts:
            hidden[count] |= hidden[rule.denominator]
    for count in rule.counts:
        _secondary(rule, cells, count, hidden[count])
    out = []
    for index, cell in enumerate(cells):
        shown = dict(cell)
        for count in rule.counts:
            value = cell.get(count)
            shown[count] = None if index in hidden[count] or value is None else round_to(int(value), rule.round_to)
        out.append(shown)
    return out


def _primary(rule: SuppressionRule, cells: Sequence[Mapping[str, Any]], count: str) -> set[int]:
    return {i for i, cell in enumerate(cells) if isinstance(v := cell.get(count), int) and 0 < v < rule.threshold}


def _secondary(rule: SuppressionRule, cells: Sequence[Mapping[str, Any]], count: str, hidden: set[int]) -> None:
    lines: dict[tuple[str, str], list[int]] = {}
    for index, cell in enumerate(cells):
        if cell.get(count) is None:
            continue  # no count, nothing to total
        for axis in (rule.rows, rule.columns):
            lines.setdefault((axis, repr(cell.get(axis))), []).append(index)
    changed = True
    while changed:
        changed = False
        for members in lines.values():
            if sum(1 for i in members if i in hidden) != 1:
                continue
            shown = [i for i in members if i not in hidden]
            if shown:
                # the smallest count gives away least; a positive one before a zero, which protects less
                hidden.add(min(shown, key=lambda i: (cells[i][count] == 0, cells[i][count], i)))
                changed = True
