"""Sharing plans as OPA returns them, the Avro schema a plan delivers, and the projector that applies it to records:
each row gets the fields of the plan's scopes (agreements' areas) that it lies in, and no others."""

from __future__ import annotations

import datetime as dt
import json
import operator
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, replace
from types import MappingProxyType
from typing import Any

import fastavro
from fastavro.schema import SchemaParseException

from broker.domain import transforms
from broker.domain.avro_copy import TypeCopier
from broker.domain.topics import delivery_topic
from broker.domain.validation import field_tags
from broker.errors import PolicyEngineError

KEEP, MASK, PSEUDONYMISE, GENERALISE = "keep", "mask", "pseudonymise", "generalise"
AGE_BAND, POSTCODE_DISTRICT, LSOA = "age-band", "postcode-district", "lsoa"
LSOA_TAG = "geography:lsoa"
# The params each (transform, method) takes; a pair missing here is not a transform the gate can apply.
_PARAMS: Mapping[tuple[str, str | None], frozenset[str]] = MappingProxyType({
    (KEEP, None): frozenset(),
    (MASK, None): frozenset({"keep_last"}),
    (PSEUDONYMISE, None): frozenset(),
    (GENERALISE, AGE_BAND): frozenset({"at"}),
    (GENERALISE, POSTCODE_DISTRICT): frozenset(),
    (GENERALISE, LSOA): frozenset({"from"}),
})
TRANSFORMS = frozenset(transform for transform, _ in _PARAMS)
# Which treatment reveals more, as policies/plans ranks them: a row in several scopes gets each field's highest.
REVEALING: Mapping[str, int] = MappingProxyType({KEEP: 4, GENERALISE: 3, PSEUDONYMISE: 2, MASK: 1})
METHODS = frozenset(method for _, method in _PARAMS if method)
# Ids become Kafka topic names and Avro namespace parts, so they are held to what both accept.
_ID = re.compile(r"[A-Za-z][A-Za-z0-9_-]*")
_STREAM = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]*")
_AVRO_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
_DIGITS = re.compile(r"[0-9]+")
_DATE_TYPES = frozenset({"date", "timestamp-millis", "timestamp-micros"})

Step = Callable[[Mapping[str, Any]], Any]
_Fitted = tuple[Mapping[str, Any], "FieldRule", str | None]  # a rule, its field's definition, the field it reads


def delivery_namespace(subscriber: str, role: str) -> str:
    """The Avro namespace of every schema delivered to one subscriber's role."""
    return f"uk.accord.deliver.{subscriber.replace('-', '_')}.{role.replace('-', '_')}"


@dataclass(frozen=True)
class FieldRule:
    """How one stream field is delivered; `output` is the delivered name (the plan's `as`)."""

    name: str
    transform: str
    method: str | None
    output: str
    params: Mapping[str, str]

    def __hash__(self) -> int:
        # Callers key caches on a plan's fields; a mapping is not hashable, its sorted items are.
        return hash((self.name, self.transform, self.method, self.output, tuple(sorted(self.params.items()))))

    @classmethod
    def from_opa(cls, name: str, doc: object) -> FieldRule:
        where = f"fields.{name}"
        rule = _mapping(doc, where)
        transform, method = _get(rule, "transform", where), _get(rule, "method", where)
        if (transform, method) not in _PARAMS:
            raise _malformed(where, _transform_problem(transform, method))
        params = _params(_get(rule, "params", where), _PARAMS[transform, method], where)
        return cls(_avro_name(name, where), transform, method, _text(rule, "as", where, _AVRO_NAME), params)


@dataclass(frozen=True)
class Scope:
    """Rows of some areas and how they are delivered: the fields granted there by `agreements`, no more."""

    agreements: tuple[str, ...]
    areas: frozenset[str]
    fields: tuple[FieldRule, ...]

    @classmethod
    def from_opa(cls, doc: object, where: str) -> Scope:
        scope = _mapping(doc, where)
        return cls(agreements=_texts(scope, "agreements", where), areas=frozenset(_texts(scope, "areas", where)),
                   fields=_rules(_get(scope, "fields", where), f"{where}.fields"))


@dataclass(frozen=True)
class Plan:
    """What one subscriber's role may receive of one stream: rows (areas, and the fields a row must have to be
    accepted: `required`) and, per scope, fields (rules). `fields` sums the scopes up (each field's most revealing
    rule in any of them) for decisions and audit; a row is always delivered as the scopes it lies in say."""

    subscriber: str
    role: str
    stream: str
    purpose: str
    allow: bool
    reasons: tuple[str, ...]
    agreements: tuple[str, ...]
    fields: tuple[FieldRule, ...]
    jurisdiction: tuple[str, ...]
    areas: frozenset[str]
    expiry: dt.datetime | None
    revision: str
    required: tuple[str, ...] = ()
    scopes: tuple[Scope, ...] = ()
    # The National Data Opt-out: whether it applies to this plan's rows, and each granting agreement's reason.
    opt_out: bool = False
    opt_out_reasons: tuple[str, ...] = ()

    @property
    def topic(self) -> str:
        return delivery_topic(self.subscriber, self.role, self.stream)

    def expired(self, now: dt.datetime) -> bool:
        """True once `now` (timezone-aware) reaches the plan's expiry."""
        return self.expiry is not None and now >= self.expiry

    @classmethod
    def from_opa(cls, doc: Mapping[str, Any]) -> Plan:
        """The plan in OPA's answer (docs/sharing-plans.md); raises PolicyEngineError when it is malformed."""
        plan = _mapping(doc, "plan")
        allow = _get(plan, "allow", "plan")
        if not isinstance(allow, bool):
            raise _malformed("allow", f"must be true or false, not {allow!r}")
        row_filter = _mapping(_get(plan, "row_filter", "plan"), "row_filter")
        read = cls(
            subscriber=_text(plan, "subscriber", "plan", _ID),
            role=_text(plan, "role", "plan", _ID),
            stream=_text(plan, "stream", "plan", _STREAM),
            purpose=_text(plan, "purpose", "plan"),
            allow=allow,
            reasons=_texts(plan, "reasons", "plan"),
            agreements=_texts(plan, "agreements", "plan"),
            fields=_rules(_get(plan, "fields", "plan"), "fields"),
            jurisdiction=_texts(row_filter, "jurisdiction", "row_filter"),
            areas=frozenset(_texts(row_filter, "areas", "row_filter")),
            expiry=_expiry(_get(plan, "expiry", "plan")),
            revision=_text(plan, "revision", "plan"),
            required=tuple(_avro_name(name, "row_filter.required") for name in _texts(row_filter, "required",
                                                                                     "row_filter")),
        )
        opt_out = _mapping(plan.get("opt_out", {"applies": False, "reasons": []}), "opt_out")
        applies = opt_out.get("applies")
        if not isinstance(applies, bool):
            raise _malformed("opt_out.applies", f"must be true or false, not {applies!r}")
        return replace(read, scopes=_scopes(_get(plan, "scopes", "plan"), read), opt_out=applies and allow,
                       opt_out_reasons=_texts(opt_out, "reasons", "opt_out"))


def _rules(doc: object, where: str) -> tuple[FieldRule, ...]:
    fields = _mapping(doc, where)
    rules = tuple(FieldRule.from_opa(str(name), rule) for name, rule in fields.items())
    outputs = [rule.output for rule in rules]
    if clashes := sorted({output for output in outputs if outputs.count(output) > 1}):
        raise _malformed(where, f"several fields are delivered as {', '.join(clashes)}; each `as` must differ")
    return rules


def _scopes(doc: object, plan: Plan) -> tuple[Scope, ...]:
    """An allowed plan's scopes, held to what the gate relies on: together they are the plan's rows and agreements,
    and a delivered name is always filled from one stream field (in whichever scope a row lies)."""
    if not isinstance(doc, list):
        raise _malformed("scopes", f"expected a list, got {type(doc).__name__}")
    scopes = tuple(Scope.from_opa(scope, f"scopes.{i}") for i, scope in enumerate(doc))
    if not plan.allow:
        return ()  # a refused plan delivers nothing, whatever it says
    if (united := frozenset().union(*(scope.areas for scope in scopes))) != plan.areas:
        raise _malformed("scopes", f"their areas ({', '.join(sorted(united)) or 'none'}) are not row_filter.areas "
                         f"({', '.join(sorted(plan.areas)) or 'none'})")
    if (named := sorted({a for scope in scopes for a in scope.agreements})) != sorted(set(plan.agreements)):
        raise _malformed("scopes", f"they name agreements {named}, the plan {sorted(plan.agreements)}")
    sources: dict[str, set[str]] = {}
    for rule in (rule for scope in scopes for rule in scope.fields):
        sources.setdefault(rule.output, set()).add(rule.name)
    if clashes := sorted(output for output, names in sources.items() if len(names) > 1):
        raise _malformed("scopes", f"{', '.join(clashes)} would be filled from different fields in different scopes; "
                         "each `as` must name one field")
    return scopes


def projected_schema(stream_schema: Mapping[str, Any], plan: Plan) -> dict[str, Any]:
    """The Avro record schema of what `plan` delivers, fields in the stream schema's order.

    Kept fields keep their definition (without `accord.*` attributes); named types they use move into the
    delivery namespace and are defined where first used. Transformed fields become optional strings. A field that
    not every scope delivers alike becomes optional: null for rows whose scopes do not deliver it.
    """
    copier = TypeCopier(stream_schema)
    outputs: dict[str, list[_Fitted]] = {}
    for fitted in _fit(stream_schema, plan):
        outputs.setdefault(fitted[1].output, []).append(fitted)
    made_for = ", ".join(plan.agreements) or "no agreement in force"
    schema: dict[str, Any] = {
        "type": "record",
        "name": copier.record_name,
        "namespace": delivery_namespace(plan.subscriber, plan.role),
        "doc": f"{plan.stream} as delivered to {plan.subscriber} ({plan.role}) under {made_for}, "
        f"policy revision {plan.revision}.",
        "fields": [_output_field(entries, plan, copier) for entries in outputs.values()],
    }
    try:
        fastavro.parse_schema(schema)
    except (SchemaParseException, ValueError) as exc:
        raise PolicyEngineError(f"the schema projected for {plan.topic} is not valid Avro: {exc}") from exc
    return schema


def _output_field(entries: list[_Fitted], plan: Plan, copier: TypeCopier) -> dict[str, Any]:
    (field, rule, ref), *others = entries
    if not others and all(rule in scope.fields for scope in plan.scopes):  # every row gets it, the same way
        return copier.field(field, rule.output, copier.namespace) if rule.transform == KEEP else _transformed(rule, ref)
    kept = [(f, r) for f, r, _ in entries if r.transform == KEEP]  # at most one: a kept field has one name
    transformed = [(r, ref) for _, r, ref in entries if r.transform != KEEP]
    optional = copier.field(kept[0][0], rule.output, copier.namespace) if kept else _transformed(*transformed[0])
    # Transformed values are strings; the string branch comes first, as an encoder tries the branches in order and
    # would read "35-39" as an ISO date for a kept date.
    types = [*(["string"] if kept and transformed else []), optional["type"]]
    ways = [str(kept[0][0].get("doc") or f"{kept[0][0]['name']} as published")] if kept else []
    ways += [_transform_doc(r, ref) for r, ref in transformed]
    return {**optional, "type": _nullable(types), "default": None,
            "doc": f"Delivered only where a scope of the plan grants it (null elsewhere): {' Or: '.join(ways)}"}


def _nullable(types: list[Any]) -> list[Any]:
    """One union of "null" (first, so null is the default) and the branches of `types`."""
    branches: list[Any] = ["null"]
    for branch in (b for t in types for b in (t if isinstance(t, list) else [t])):
        if branch not in branches:
            branches.append(branch)
    return branches


class Shape:
    """A record as delivered to rows of one combination of a plan's scopes: call it with the decoded record.

    `key` is the same text for two shapes (of any plans of the stream) that make equal records of every row, so one
    encoding of a row can serve both; None when a step pseudonymises (pseudonyms differ per subscriber).
    """

    __slots__ = ("_steps", "key")

    def __init__(self, steps: tuple[tuple[str, Step], ...], key: str | None) -> None:
        self._steps = steps
        self.key = key

    def __call__(self, record: Mapping[str, Any]) -> dict[str, Any]:
        return {output: step(record) for output, step in self._steps}


class Projector:
    """Applies one plan to decoded records of one stream; built once, then called for every record with the record's
    areas. A row gets each field's most revealing rule among the scopes it lies in; the rules for each combination
    of scopes are worked out once, on first use."""

    def __init__(
        self,
        plan: Plan,
        stream_schema: Mapping[str, Any],
        pseudonymise: Callable[[str, object], str | None],
        today: Callable[[], dt.date],
    ) -> None:
        self.plan = plan
        self.schema = projected_schema(stream_schema, plan)
        fitted = _fit(stream_schema, plan)
        self._steps = {rule: _step(rule, ref, pseudonymise, today) for _, rule, ref in fitted}
        self._sources = tuple(dict.fromkeys(rule.name for _, rule, _ in fitted))  # stream fields, schema order
        self._outputs = tuple(field["name"] for field in self.schema["fields"])
        self._scopes = tuple((scope.areas, {rule.name: rule for rule in scope.fields}) for scope in plan.scopes)
        self._shapes: dict[int, Shape] = {}
        self._only = self._shape(1) if len(self._scopes) == 1 else None  # the usual plan: one scope, one shape

    def shape(self, areas: frozenset[str]) -> Shape | None:
        """How a row in `areas` is delivered; None when it lies in none of the plan's scopes."""
        if self._only is not None:
            return None if areas.isdisjoint(self._scopes[0][0]) else self._only
        covering = 0
        for bit, (scope_areas, _) in enumerate(self._scopes):
            if not areas.isdisjoint(scope_areas):
                covering |= 1 << bit
        if not covering:
            return None
        found = self._shapes.get(covering)
        if found is None:
            found = self._shapes[covering] = self._shape(covering)
        return found

    def __call__(self, record: Mapping[str, Any], areas: frozenset[str]) -> dict[str, Any] | None:
        """The record as delivered, or None when its areas lie in none of the plan's scopes."""
        shape = self.shape(areas)
        return None if shape is None else shape(record)

    def _shape(self, covering: int) -> Shape:
        rulesets = [rules for bit, (_, rules) in enumerate(self._scopes) if covering >> bit & 1]
        chosen: dict[str, FieldRule] = {}
        for name in self._sources:
            if offers := [rules[name] for rules in rulesets if name in rules]:
                # max keeps the first of equals: ties go to the earlier scope, as policies/plans orders them
                best = max(offers, key=lambda rule: REVEALING[rule.transform])
                chosen[best.output] = best
        steps = tuple((output, _none if (rule := chosen.get(output)) is None else self._steps[rule])
                      for output in self._outputs)
        return Shape(steps, _shape_key(self.plan.stream, [(output, chosen.get(output)) for output in self._outputs]))


def _none(_: Mapping[str, Any]) -> None:
    return None


def _shape_key(stream: str, outputs: list[tuple[str, FieldRule | None]]) -> str | None:
    """What decides a shape's records: each output's source field and rule (a rule's step depends on nothing else
    but the stream, the clock, and for pseudonyms the subscriber's key: those are never shared)."""
    if any(rule is not None and rule.transform == PSEUDONYMISE for _, rule in outputs):
        return None
    return json.dumps([stream, [[output, None if rule is None else [rule.name, rule.transform, rule.method,
                                                                     sorted(rule.params.items())]]
                                for output, rule in outputs]])


def _step(
    rule: FieldRule, ref: str | None, pseudonymise: Callable[[str, object], str | None], today: Callable[[], dt.date]
) -> Step:
    source = rule.name
    if rule.transform == KEEP:
        return operator.methodcaller("get", source)
    if rule.transform == MASK:
        keep_last = int(rule.params.get("keep_last", "0"))
        return lambda record: transforms.mask(record.get(source), keep_last)
    if rule.transform == PSEUDONYMISE:
        return lambda record: pseudonymise(source, record.get(source))
    if rule.method == POSTCODE_DISTRICT:
        return lambda record: transforms.postcode_district(record.get(source))
    if rule.method == AGE_BAND:
        at: Step = operator.methodcaller("get", ref) if ref else lambda _: today()
        return lambda record: transforms.age_band(record.get(source), at(record))
    return operator.methodcaller("get", ref)  # lsoa: the record's LSOA, read from the `from` field


def _fit(stream_schema: Mapping[str, Any], plan: Plan) -> list[_Fitted]:
    """Each distinct rule of the plan's scopes with its field's definition and referenced field (age-band `at`,
    lsoa `from`), in the stream schema's order."""
    where = f"plan {plan.revision} for {plan.topic}"
    declared = stream_schema.get("accord.stream")
    if declared not in (None, plan.stream):
        raise PolicyEngineError(f"{where} cannot be applied to the schema of stream {declared}")
    fields = {field["name"]: field for field in stream_schema.get("fields", [])}
    rules = list(dict.fromkeys(rule for scope in plan.scopes for rule in scope.fields))
    if missing := list(dict.fromkeys(rule.name for rule in rules if rule.name not in fields)):
        raise PolicyEngineError(
            f"{where} names {', '.join(missing)}, not in the stream schema (fields: {', '.join(fields)}); "
            "the catalog and the registered schema disagree"
        )
    fitted: list[_Fitted] = []
    for name, field in fields.items():
        for rule in (rule for rule in rules if rule.name == name):
            ref = _reference(rule, stream_schema)
            if ref is not None and ref not in fields:
                raise PolicyEngineError(f"{where}: {name} reads {ref}, which is not a field of the stream")
            dates = [name, ref] if ref else [name]
            if rule.method == AGE_BAND and (undated := [d for d in dates if not _is_date(fields[d]["type"])]):
                raise PolicyEngineError(f"{where}: age bands need dates; {', '.join(undated)} is not a date field")
            fitted.append((field, rule, ref))
    return fitted


def _reference(rule: FieldRule, stream_schema: Mapping[str, Any]) -> str | None:
    if rule.method == AGE_BAND:
        return rule.params.get("at")
    if rule.method != LSOA:
        return None
    # Without `from`, the stream's own LSOA field is the only reading of "the record's LSOA" that is not a guess.
    tagged = next((name for name, tags in field_tags(stream_schema).items() if LSOA_TAG in tags), None)
    found = rule.params.get("from", tagged)
    if found is None:
        raise PolicyEngineError(f"{rule.name}: generalise to lsoa needs params.from; the stream tags no LSOA field")
    return found


def _transformed(rule: FieldRule, ref: str | None) -> dict[str, Any]:
    return {"name": rule.output, "type": ["null", "string"], "default": None, "doc": _transform_doc(rule, ref)}


def _transform_doc(rule: FieldRule, ref: str | None) -> str:
    if rule.transform == MASK:
        shown = rule.params.get("keep_last", "0")
        return f"{rule.name}, masked: '****' then at most its last {shown} characters (never more than half)."
    if rule.transform == PSEUDONYMISE:
        return f"Pseudonym of {rule.name}: keyed HMAC-SHA256, stable within this subscriber, unlinkable across."
    if rule.method == AGE_BAND:
        at = ref or "the processing day"
        return f"5-year age band of {rule.name} at {at} ('0-4' ... '90+'; 'unknown' if the dates contradict)."
    if rule.method == POSTCODE_DISTRICT:
        return f"Postcode district (outward code) of {rule.name}."
    return f"LSOA from {ref}, in place of {rule.name}."


def _is_date(avro_type: Any) -> bool:
    if isinstance(avro_type, list):
        return any(_is_date(branch) for branch in avro_type if branch != "null")
    return isinstance(avro_type, Mapping) and avro_type.get("logicalType") in _DATE_TYPES


def _malformed(where: str, problem: str) -> PolicyEngineError:
    return PolicyEngineError(f"malformed sharing plan at {where}: {problem} (see docs/sharing-plans.md)")


def _mapping(value: object, where: str) -> Mapping[str, Any]:
    if not isinstance(value, Mapping):
        raise _malformed(where, f"expected an object, got {type(value).__name__}")
    return value


def _get(doc: Mapping[str, Any], key: str, where: str) -> Any:
    if key not in doc:
        raise _malformed(where, f"missing key {key!r}")
    return doc[key]


def _text(doc: Mapping[str, Any], key: str, where: str, shape: re.Pattern[str] | None = None) -> str:
    value = _get(doc, key, where)
    if not isinstance(value, str) or (shape is not None and not shape.fullmatch(value)):
        expected = f"text matching {shape.pattern}" if shape else "text"
        raise _malformed(where, f"{key} must be {expected}, not {value!r}")
    return value


def _texts(doc: Mapping[str, Any], key: str, where: str) -> tuple[str, ...]:
    value = _get(doc, key, where)
    if not isinstance(value, list) or not all(isinstance(item, str) for item in value):
        raise _malformed(where, f"{key} must be a list of text, not {value!r}")
    return tuple(value)


def _avro_name(name: str, where: str) -> str:
    if not _AVRO_NAME.fullmatch(name):
        raise _malformed(where, f"{name!r} is not an Avro field name")
    return name


def _transform_problem(transform: object, method: object) -> str:
    if transform not in TRANSFORMS:
        return f"unknown transform {transform!r}; plans deliver with {', '.join(sorted(TRANSFORMS))} (never drop)"
    if transform == GENERALISE:
        return f"unknown generalise method {method!r}; use one of {', '.join(sorted(METHODS))}"
    return f"method must be null for {transform}, not {method!r}"


def _params(value: object, allowed: frozenset[str], where: str) -> Mapping[str, str]:
    params = _mapping(value, f"{where}.params")
    if unknown := sorted(set(params) - allowed):
        raise _malformed(where, f"unknown params {', '.join(unknown)}; this transform takes {sorted(allowed)}")
    # OPA may render a catalog's numeric keep_last as a JSON number; the contract's value is its text.
    texts = {key: str(v) if isinstance(v, int) and not isinstance(v, bool) else v for key, v in params.items()}
    if bad := sorted(key for key, text in texts.items() if not isinstance(text, str) or not text):
        raise _malformed(where, f"params {', '.join(bad)} must be non-empty text")
    if "keep_last" in texts and not _DIGITS.fullmatch(texts["keep_last"]):
        raise _malformed(where, f"keep_last must be a whole number of characters, not {texts['keep_last']!r}")
    return MappingProxyType(texts)


def _expiry(value: object) -> dt.datetime | None:
    if value is None:
        return None
    try:
        parsed = dt.datetime.fromisoformat(value) if isinstance(value, str) else None
    except ValueError:
        parsed = None
    if parsed is None or parsed.tzinfo is None:
        raise _malformed("expiry", f"must be null or a time with a zone such as 2022-06-30T00:00:00Z, not {value!r}")
    return parsed
