"""What the gate decides for one row under one plan (delivered in a shape, refused for missing fields, withheld by
the National Data Opt-out, or not in the plan's rows), why a row is quarantined, and the cells of a batch held for
small-number suppression."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from broker.domain.messages import Record
from broker.domain.optout import NHS_NUMBER_FIELD, OptOutList
from broker.domain.plans import Shape
from broker.domain.validation import is_blank
from broker.services.delivery_table import Delivery

Cell = tuple[Record, bytes, dict[str, Any], tuple[tuple[str, bytes], ...]]  # a row, its source, shaped, headers


class Cells:
    """A batch's cells for suppressed deliveries, grouped by delivery topic and table key, in arrival order."""

    def __init__(self) -> None:
        self._tables: dict[tuple[str, Any], tuple[Delivery, list[Cell]]] = {}

    def add(self, delivery: Delivery, record: Record, source: bytes, shaped: dict[str, Any],
            extra: Sequence[tuple[str, bytes]] = ()) -> None:
        assert delivery.suppression is not None
        key = (delivery.topic, delivery.suppression.table_key(shaped))
        self._tables.setdefault(key, (delivery, []))[1].append((record, source, shaped, tuple(extra)))

    def tables(self) -> list[tuple[Delivery, list[Cell]]]:
        return list(self._tables.values())

    def clear(self) -> None:
        self._tables.clear()


class OptOutCheck:
    """Whether the opt-out withholds one row, worked out (one HMAC) only if a plan it applies to asks, and once."""

    def __init__(self, opted_out: OptOutList, value: Mapping[str, Any]) -> None:
        self._opted_out, self._value = opted_out, value
        self._checked = False
        self._why: str | None = None

    def why(self) -> str | None:
        # A stream without an NHS number field names no patient: the catalog never applies the opt-out to it.
        if not self._checked and NHS_NUMBER_FIELD in self._value:
            self._why = self._opted_out.withholds(self._value.get(NHS_NUMBER_FIELD))
        self._checked = True
        return self._why


@dataclass(frozen=True)
class Refusal:
    """Why a row goes to quarantine rather than to any subscriber."""

    reasons: list[dict[str, str]]
    extra: Mapping[str, Any]

    @classmethod
    def one(cls, rule: str, field: str, message: str, extra: Mapping[str, Any] | None = None) -> Refusal:
        return cls([{"field": field, "rule": rule, "message": message}], extra or {})


@dataclass(frozen=True)
class Withheld:
    """The National Data Opt-out keeps the row from this plan's subscriber."""

    why: str


def evaluate(delivery: Delivery, value: Mapping[str, Any], areas: frozenset[str],
              opt_out: OptOutCheck) -> Shape | list[str] | Withheld | None:
    """A row under one plan: the shape it is delivered in, the required fields it misses, the opt-out withholding
    it, or None (not in the plan's rows)."""
    if areas.isdisjoint(delivery.areas):
        return None
    # Which fields, and how, depends on which of the plan's scopes (agreements' areas) the row lies in.
    shape = delivery.project.shape(areas)
    if shape is None:
        return None
    if delivery.plan.opt_out and (why := opt_out.why()) is not None:
        return Withheld(why)
    if missing := [name for name in delivery.plan.required if is_blank(value.get(name))]:
        return missing
    return shape
