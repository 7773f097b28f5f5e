"""Sharing plans as OPA returns them, the Avro schema a plan delivers, and the projector that applies it to records."""

from __future__ import annotations

import datetime as dt
import operator
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from types import MappingProxyType
from typing import Any

import fastavro
from fastavro.schema import SchemaParseException

from broker.domain import transforms
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
METHODS = frozenset(method for _, method in _PARAMS if method)
# Ids become Kafka topic names and Avro namespace parts, so they are held to what both accept.
_ID = re.compile(r"[A-Za-z][A-Za-z0-9_-]*")
_STREAM = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]*")
_AVRO_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
_DIGITS = re.compile(r"[0-9]+")
_PRIMITIVES = frozenset({"null", "boolean", "int", "long", "float", "double", "bytes", "string"})
_NAMED_KINDS = frozenset({"record", "error", "enum", "fixed"})
_DATE_TYPES = frozenset({"date", "timestamp-millis", "timestamp-micros"})

Step = Callable[[Mapping[str, Any]], Any]


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
class Plan:
    """What one subscriber's role may receive of one stream: rows (areas, and the fields a row must have to be
    accepted: `required`) and fields (rules)."""

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
        fields = _mapping(_get(plan, "fields", "plan"), "fields")
        rules = tuple(FieldRule.from_opa(str(name), rule) for name, rule in fields.items())
        outputs = [rule.output for rule in rules]
        if clashes := sorted({output for output in outputs if outputs.count(output) > 1}):
            raise _malformed("fields", f"several fields are delivered as {', '.join(clashes)}; each `as` must differ")
        return cls(
            subscriber=_text(plan, "subscriber", "plan", _ID),
            role=_text(plan, "role", "plan", _ID),
            stream=_text(plan, "stream", "plan", _STREAM),
            purpose=_text(plan, "purpose", "plan"),
            allow=allow,
            reasons=_texts(plan, "reasons", "plan"),
            agreements=_texts(plan, "agreements", "plan"),
            fields=rules,
            jurisdiction=_texts(row_filter, "jurisdiction", "row_filter"),
            areas=frozenset(_texts(row_filter, "areas", "row_filter")),
            expiry=_expiry(_get(plan, "expiry", "plan")),
            revision=_text(plan, "revision", "plan"),
            required=tuple(_avro_name(name, "row_filter.required") for name in _texts(row_filter, "required",
                                                                                     "row_filter")),
        )


def projected_schema(stream_schema: Mapping[str, Any], plan: Plan) -> dict[str, Any]:
    """The Avro record schema of what `plan` delivers, fields in the stream schema's order.

    Kept fields keep their definition (without `accord.*` attributes); named types they use move into the
    delivery namespace and are defined where first used. Transformed fields become optional strings.
    """
    fitted = _fit(stream_schema, plan)
    copier = _TypeCopier(stream_schema)
    fields = [
        copier.field(field, rule.output, copier.namespace) if rule.transform == KEEP else _transformed(rule, ref)
        for field, rule, ref in fitted
    ]
    made_for = ", ".join(plan.agreements) or "no agreement in force"
    schema: dict[str, Any] = {
        "type": "record",
        "name": copier.record_name,
        "namespace": delivery_namespace(plan.subscriber, plan.role),
        "doc": f"{plan.stream} as delivered to {plan.subscriber} ({plan.role}) under {made_for}, "
        f"policy revision {plan.revision}.",
        "fields": fields,
    }
    try:
        fastavro.parse_schema(schema)
    except (SchemaParseException, ValueError) as exc:
        raise PolicyEngineError(f"the schema projected for {plan.topic} is not valid Avro: {exc}") from exc
    return schema


class Projector:
    """Applies one plan to decoded records of one stream; built once, then called for every record."""

    def __init__(
        self,
        plan: Plan,
        stream_schema: Mapping[str, Any],
        pseudonymise: Callable[[str, object], str | None],
        today: Callable[[], dt.date],
    ) -> None:
        self.plan = plan
        self.schema = projected_schema(stream_schema, plan)
        self._steps = tuple(
            (rule.output, _step(rule, ref, pseudonymise, today)) for _, rule, ref in _fit(stream_schema, plan)
        )

    def __call__(self, record: Mapping[str, Any]) -> dict[str, Any]:
        return {output: step(record) for output, step in self._steps}


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


def _fit(stream_schema: Mapping[str, Any], plan: Plan) -> list[tuple[Mapping[str, Any], FieldRule, str | None]]:
    """Each delivered field's definition, rule and referenced field (age-band `at`, lsoa `from`), schema order."""
    where = f"plan {plan.revision} for {plan.topic}"
    declared = stream_schema.get("accord.stream")
    if declared not in (None, plan.stream):
        raise PolicyEngineError(f"{where} cannot be applied to the schema of stream {declared}")
    fields = {field["name"]: field for field in stream_schema.get("fields", [])}
    if missing := [rule.name for rule in plan.fields if rule.name not in fields]:
        raise PolicyEngineError(
            f"{where} names {', '.join(missing)}, not in the stream schema (fields: {', '.join(fields)}); "
            "the catalog and the registered schema disagree"
        )
    rules = {rule.name: rule for rule in plan.fields}
    fitted: list[tuple[Mapping[str, Any], FieldRule, str | None]] = []
    for name, field in fields.items():
        rule = rules.get(name)
        if rule is None:
            continue
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


class _TypeCopier:
    """Copies field types into the delivery namespace, defining each named type where it is first used."""

    def __init__(self, stream_schema: Mapping[str, Any]) -> None:
        self._top = _fullname(stream_schema["name"], stream_schema.get("namespace", ""))
        self.namespace = _namespace_of(self._top)
        self.record_name = _short(self._top)
        self._named: dict[str, Mapping[str, Any]] = {}
        for field in stream_schema.get("fields", []):
            _index_named(field["type"], self.namespace, self._named)
        # Short name -> source full name: every named type lands in one namespace, so short names must not clash.
        self._emitted: dict[str, str] = {self.record_name: self._top}

    def field(self, field: Mapping[str, Any], name: str, namespace: str) -> dict[str, Any]:
        copied = _without_accord(field)
        copied["name"] = name
        copied["type"] = self._type(field["type"], namespace)
        return copied

    def _type(self, node: Any, namespace: str) -> Any:
        if isinstance(node, str):
            return node if node in _PRIMITIVES else self._named_type(_fullname(node, namespace))
        if isinstance(node, list):
            return [self._type(branch, namespace) for branch in node]
        kind = node.get("type")
        if kind in _NAMED_KINDS:
            return self._named_type(_fullname(node["name"], node.get("namespace", namespace)))
        copied = _without_accord(node)
        if kind == "array":
            copied["items"] = self._type(node["items"], namespace)
        elif kind == "map":
            copied["values"] = self._type(node["values"], namespace)
        elif not (isinstance(kind, str) and kind in _PRIMITIVES):
            copied["type"] = self._type(kind, namespace)
        return copied

    def _named_type(self, full: str) -> Any:
        short = _short(full)
        if full == self._top:
            raise PolicyEngineError(f"a field refers to the stream's own record {full}; it cannot be delivered")
        if self._emitted.get(short) == full:
            return short
        if short in self._emitted:
            raise PolicyEngineError(
                f"types {self._emitted[short]} and {full} would both be {short} in the delivery namespace; "
                "rename one in the stream schema"
            )
        node = self._named.get(full)
        if node is None:
            raise PolicyEngineError(f"the stream schema uses type {full} but never defines it")
        self._emitted[short] = full
        copied = {key: value for key, value in _without_accord(node).items() if key != "namespace"}
        copied["name"] = short
        if "fields" in node:
            copied["fields"] = [self.field(inner, inner["name"], _namespace_of(full)) for inner in node["fields"]]
        return copied


def _index_named(node: Any, namespace: str, found: dict[str, Mapping[str, Any]]) -> None:
    """Record every named type under `node` by its full name, resolving namespaces as Avro does."""
    if isinstance(node, list):
        for branch in node:
            _index_named(branch, namespace, found)
    elif isinstance(node, Mapping):
        if node.get("type") in _NAMED_KINDS:
            full = _fullname(node["name"], node.get("namespace", namespace))
            found.setdefault(full, node)
            for field in node.get("fields", []):
                _index_named(field["type"], _namespace_of(full), found)
            return
        for key in ("type", "items", "values"):
            if not isinstance(node.get(key, ""), str):
                _index_named(node[key], namespace, found)


def _fullname(name: str, namespace: str) -> str:
    return name if "." in name or not namespace else f"{namespace}.{name}"


def _namespace_of(full: str) -> str:
    return full.rpartition(".")[0]


def _short(full: str) -> str:
    return full.rpartition(".")[2]


def _without_accord(node: Mapping[str, Any]) -> dict[str, Any]:
    return {key: value for key, value in node.items() if not key.startswith("accord.")}


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
