"""A tier's named fields checked against the stream schema and compiled to the field specs of the contract."""

from __future__ import annotations

import difflib
import json
from collections.abc import Callable, Mapping
from functools import partial
from typing import Any

from broker.catalog.loader import Problems
from broker.catalog.models import FieldRule, Origin, TierSpec
from broker.domain.flows import Tier

DIRECT_IDENTIFIER = "direct-identifier"
LSOA_TAG = "geography:lsoa"
SMALL_COUNT_TAG = "small-count"


class SchemaView:
    """The parts of a stream's Avro schema that the catalog checks against: field names, types and tags."""

    def __init__(self, schema: Mapping[str, Any]) -> None:
        self.stream = str(schema.get("accord.stream", ""))
        self.fields: dict[str, Mapping[str, Any]] = {str(f["name"]): f for f in schema.get("fields", [])}
        self.jurisdiction = [str(name) for name in schema.get("accord.jurisdiction", [])]

    def has(self, name: str) -> bool:
        return name in self.fields

    def tags(self, name: str) -> list[str]:
        return [str(tag) for tag in self.fields.get(name, {}).get("accord.tags", [])]

    def tagged(self, tag: str) -> list[str]:
        return [name for name in self.fields if tag in self.tags(name)]

    def is_date(self, name: str) -> bool:
        kind = _non_null(self.fields.get(name, {}).get("type"))
        return isinstance(kind, dict) and kind.get("type") == "int" and kind.get("logicalType") == "date"

    def is_string(self, name: str) -> bool:
        kind = _non_null(self.fields.get(name, {}).get("type"))
        return kind == "string" or (isinstance(kind, dict) and kind.get("type") == "string")

    def is_count(self, name: str) -> bool:
        return _non_null(self.fields.get(name, {}).get("type")) in ("int", "long")

    def kind(self, name: str) -> str:
        """"date", "string" or "other": what a grant's transform of the field may assume (domain/grant_fields)."""
        return "date" if self.is_date(name) else "string" if self.is_string(name) else "other"

    def dates(self) -> list[str]:
        return [name for name in self.fields if self.is_date(name)]

    def type_text(self, name: str) -> str:
        return json.dumps(self.fields[name].get("type")) if name in self.fields else "not a field"

    def unknown(self, name: str) -> str:
        """Message for a field the schema lacks, with the nearest real name when there is one."""
        close = difflib.get_close_matches(name, list(self.fields), n=1)
        hint = f" (did you mean {close[0]!r}?)" if close else ""
        return f"unknown field {name!r}: stream {self.stream} has no such field{hint}; see its schema"


def _non_null(kind: Any) -> Any:
    # An optional field is ["null", T]; its value, when present, is a T.
    if isinstance(kind, list):
        rest = [member for member in kind if member != "null"]
        return rest[0] if len(rest) == 1 else None
    return kind


def output_name(name: str, rule: FieldRule) -> str | None:
    """The delivered field name: `as`, else the method's (age_band...) for generalise, else the source name."""
    if rule.transform == "drop":
        return None
    if rule.as_ is not None:
        return rule.as_
    return rule.method.replace("-", "_") if rule.method else name


def compile_tiers(tiers: Mapping[str, TierSpec], view: SchemaView, origin: Origin,
                  problems: Problems) -> list[Tier]:
    """Each tier as the contract's `{name, roles, other_fields, fields}`, in the order written."""
    return [_compile_tier(name, spec, view, origin, problems) for name, spec in tiers.items()]


def _compile_tier(tier: str, spec: TierSpec, view: SchemaView, origin: Origin,
                  problems: Problems) -> Tier:
    fields: dict[str, Any] = {}
    for name, rule in spec.fields.items():
        where = partial(origin.at, "tiers", tier, "fields", name)
        if not view.has(name):
            problems.add(where(), view.unknown(name))
            continue
        _check_method(name, rule, view, where, problems)
        fields[name] = field_spec(name, rule, view)
    _check_outputs(tier, spec, view, origin, problems)
    return {"name": tier, "roles": sorted(spec.roles), "other_fields": spec.other_fields, "fields": fields}


def field_spec(name: str, rule: FieldRule, view: SchemaView) -> dict[str, Any]:
    """`{transform, method, as, params}` with defaults filled in, so the policy and gate never guess."""
    params: dict[str, str] = {}
    if rule.transform == "mask":
        params["keep_last"] = str(rule.keep_last or 0)
    if rule.at is not None:
        params["at"] = rule.at
    if rule.method == "lsoa":
        source = rule.from_ or _only(view.tagged(LSOA_TAG))
        if source is not None:
            params["from"] = source
    return {"transform": rule.transform, "method": rule.method, "as": output_name(name, rule), "params": params}


def _only(names: list[str]) -> str | None:
    return names[0] if len(names) == 1 else None


def _check_method(name: str, rule: FieldRule, view: SchemaView, where: Callable[..., str],
                  problems: Problems) -> None:
    if rule.method == "age-band" and not view.is_date(name):
        problems.add(where("method"), f"age-band needs a date field (Avro int with logicalType date); "
                                      f"{name!r} is {view.type_text(name)}")
    if rule.method == "postcode-district" and not view.is_string(name):
        problems.add(where("method"), f"postcode-district needs a string field; {name!r} is {view.type_text(name)}")
    if rule.at is not None and not view.is_date(rule.at):
        problems.add(where("at"), f"`at` must name a date field of {view.stream} ({', '.join(view.dates())}); "
                                  f"{rule.at!r} is {view.type_text(rule.at)}")
    if rule.method == "lsoa":
        _check_lsoa_source(rule, view, where, problems)


def _check_lsoa_source(rule: FieldRule, view: SchemaView, where: Callable[..., str], problems: Problems) -> None:
    tagged = view.tagged(LSOA_TAG)
    listed = ", ".join(tagged) or "none"
    if rule.from_ is None and len(tagged) != 1:
        problems.add(where("method"), f"lsoa needs `from`, the field holding the record's LSOA: {view.stream} "
                                      f"has {len(tagged)} fields tagged {LSOA_TAG} ({listed})")
    elif rule.from_ is not None and LSOA_TAG not in view.tags(rule.from_):
        problems.add(where("from"), f"`from` must name a field tagged {LSOA_TAG} ({listed}); "
                                    f"{rule.from_!r} is not one")


def _check_outputs(tier: str, spec: TierSpec, view: SchemaView, origin: Origin, problems: Problems) -> None:
    # Two sources under one delivered name would make the projected schema ambiguous for the gate.
    delivered: dict[str, str] = {}
    for name, rule in spec.fields.items():
        out = output_name(name, rule)
        if out is None:
            continue
        if out in delivered:
            problems.add(origin.at("tiers", tier, "fields", name, "as"),
                         f"delivers {out!r}, as field {delivered[out]!r} already does; give one a different `as`")
        delivered.setdefault(out, name)
    if spec.other_fields != "keep":
        return
    for kept in view.fields:
        if kept in delivered and kept not in spec.fields and DIRECT_IDENTIFIER not in view.tags(kept):
            problems.add(origin.at("tiers", tier, "fields", delivered[kept], "as"),
                         f"delivers {kept!r}, which other_fields: keep also delivers from the unnamed field "
                         f"{kept!r}; choose another `as` or name {kept!r} with drop")
