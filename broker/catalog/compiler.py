"""Checks the catalog's cross-references and compiles it to the OPA data document `data.accord.catalog`."""

from __future__ import annotations

import datetime as dt
import difflib
import hashlib
import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from broker.catalog.ladder import compile_ladder
from broker.catalog.loader import CatalogError, Problems, load_catalog
from broker.catalog.models import (
    OVERRIDABLE,
    SUBSCRIBER_AREAS,
    Agreement,
    Approval,
    Body,
    Catalog,
    Origin,
    Stream,
    Template,
)
from broker.catalog.schemas import catalog_schemas
from broker.catalog.tiers import SMALL_COUNT_TAG, SchemaView, compile_tiers
from broker.domain.flows import Flow
from broker.domain.geography import LaTable
from broker.domain.geography_files import GEOGRAPHY_DIR, MANIFEST, load_la_table
from broker.domain.optout import NHS_NUMBER_FIELD
from broker.domain.optout import rule_for as opt_out_rule
from broker.domain.suppression import SuppressionRule
from broker.errors import ConfigError

_DEFAULTS: Mapping[str, Any] = {"row_scope": SUBSCRIBER_AREAS, "emergency_level_required": "normal"}


def load_and_compile(directory: Path, schemas_dir: Path, geography: Path | None = None) -> dict[str, Any]:
    """Load `directory`, then compile it against its streams' schemas (catalog/schemas.py: a stream's own `schema:`
    file, the catalog's schemas/ folder, the shipped templates in `schemas_dir`) and the LA table of `geography`
    (default: the catalog's own geography/, as the gate and ingest read it, or the shipped ONS lookups if it has
    none)."""
    return load_catalog_dir(directory, schemas_dir, geography).document


@dataclass(frozen=True)
class LoadedCatalog:
    """A catalog directory compiled, with the schema each of its streams uses (what `catalog apply` registers)."""

    document: dict[str, Any]
    schemas: Mapping[str, dict[str, Any]]

    def stream_schemas(self) -> dict[str, dict[str, Any]]:
        """The schema of each stream the document names."""
        return {ident: self.schemas[ident] for ident in self.document["streams"] if ident in self.schemas}


def load_catalog_dir(directory: Path, schemas_dir: Path, geography: Path | None = None) -> LoadedCatalog:
    """As load_and_compile, keeping the streams' schemas."""
    own = directory / "geography"
    if geography is None:
        geography = own if (own / MANIFEST).is_file() else GEOGRAPHY_DIR
    catalog = load_catalog(directory)
    schemas = catalog_schemas(catalog, directory, schemas_dir)
    try:
        la_table = load_la_table(geography)
    except ConfigError as exc:
        if geography != own:
            raise
        # The catalog's own geography/ is one of its files: its fault is listed like theirs, by catalog-relative path.
        where = own.relative_to(directory.parent)
        raise CatalogError("the catalog's geography does not load: 1 problem; fix the line below",
                           [f"{where}: {str(exc).replace(f'{directory.parent}/', '')}"]) from exc
    return LoadedCatalog(compile_catalog(catalog, schemas, la_table), schemas)


def compile_catalog(catalog: Catalog, schemas: Mapping[str, dict[str, Any]], la_table: LaTable) -> dict[str, Any]:
    """The document of docs/sharing-plans.md; ConfigError lists every cross-reference problem with file:line."""
    ctx = _Context(catalog, {sid: SchemaView(schema) for sid, schema in schemas.items()}, la_table)
    bodies = {ident: _body(ctx, ident, body) for ident, body in catalog.bodies.items()}
    streams = {ident: _stream(ctx, ident, stream) for ident, stream in catalog.streams.items()}
    templates = {ident: _template(ctx, ident, template) for ident, template in catalog.templates.items()}
    agreements = {ident: _agreement(ctx, ident, agreement) for ident, agreement in catalog.agreements.items()}
    _check_one_purpose_per_topic(ctx, agreements)
    ladder = compile_ladder(catalog, ctx.body, ctx.problems)
    ctx.problems.raise_if_any("the catalog does not compile")
    document = {"la_vintage": la_table.vintage, "bodies": bodies, "streams": streams, "templates": templates,
                "agreements": agreements, **ladder}
    return {"revision": revision_of(document), **document}


def _check_one_purpose_per_topic(ctx: _Context, agreements: Mapping[str, Flow]) -> None:
    """A subscriber's role receives a stream on one delivery topic, so only for one purpose: two agreements for the
    same role under different purposes would deliver every row twice with different fields."""
    seen: dict[tuple[str, str, str], tuple[str, str]] = {}
    for ident, agreement in sorted(agreements.items()):
        for tier in agreement.get("tiers", []):
            for role in tier.get("roles", []):
                key = (agreement.get("subscriber", ""), role, agreement.get("stream", ""))
                first = seen.setdefault(key, (agreement.get("purpose", ""), ident))
                if first[0] != agreement.get("purpose", ""):
                    ctx.problems.add(ctx.catalog.origin("agreement", ident).at("agreement"),
                                     f"{key[0]} role {role} already receives {key[2]} for purpose {first[0]!r} "
                                     f"under {first[1]}; one role gets a stream for one purpose: merge the "
                                     "agreements or use another role")


def revision_of(document: Mapping[str, Any]) -> str:
    """"c-" + 12 hex of sha256 over the canonical JSON of the document without its revision."""
    content = {key: value for key, value in document.items() if key != "revision"}
    canonical = json.dumps(content, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    return "c-" + hashlib.sha256(canonical.encode("utf-8")).hexdigest()[:12]


@dataclass
class _Context:
    catalog: Catalog
    views: Mapping[str, SchemaView]
    la: LaTable
    problems: Problems = field(default_factory=Problems)

    def body(self, ident: str, where: str) -> Body | None:
        found = self.catalog.bodies.get(ident)
        if found is None:
            self.problems.add(where, f"unknown body {ident!r}{_hint(ident, self.catalog.bodies)}; "
                                     "define it in bodies.yaml or fix the id")
        return found

    def view(self, stream: str, where: str) -> SchemaView | None:
        """The schema of a catalog stream; None (reported) when the stream is unknown."""
        if stream not in self.catalog.streams:
            self.problems.add(where, f"unknown stream {stream!r}{_hint(stream, self.catalog.streams)}; "
                                     "define it in streams.yaml or fix the id")
            return None
        return self.views.get(stream)  # a stream without a schema is reported once, at the stream

    def served(self, body: Body) -> frozenset[str]:
        # A national body's remit is the whole table; a local one's is its areas with a county's districts.
        if body.kind == "national":
            return frozenset(authority.code for authority in self.la)
        return frozenset().union(*(self.la.areas_served(code) for code in body.areas))


def _hint(ident: str, known: Mapping[str, Any]) -> str:
    close = difflib.get_close_matches(ident, list(known), n=1)
    return f" (did you mean {close[0]!r}?)" if close else ""


def _body(ctx: _Context, ident: str, body: Body) -> dict[str, Any]:
    origin = ctx.catalog.origin("body", ident)
    for index, code in enumerate(body.areas):
        authority = ctx.la.get(code)
        if authority is None:
            ctx.problems.add(origin.at("areas", index), f"{ctx.la.why_unknown(code)}; use a code of "
                                                        "catalog/geography")
        elif body.kind == "local" and authority.tier.value != body.tier:
            ctx.problems.add(origin.at("areas", index), f"{code} ({authority.name}) is {authority.tier.value} "
                                                        f"in the LA table but the body's tier is {body.tier}; "
                                                        "make them agree")
    served = ctx.served(body)
    # A national body answers to the national emergency level only, so it lists no regions.
    regions = set() if body.kind == "national" else {a.region_code for code in served if (a := ctx.la.get(code))}
    return {"name": body.name, "kind": body.kind, "tier": body.tier, "areas": list(body.areas),
            "served_areas": sorted(served), "regions": sorted(regions), "roles": sorted(body.roles)}


def _stream(ctx: _Context, ident: str, stream: Stream) -> dict[str, Any]:
    origin = ctx.catalog.origin("stream", ident)
    ctx.body(stream.owner, origin.at("owner"))
    view = ctx.views.get(ident)
    if view is None:
        ctx.problems.add(origin.at("id"), f"no stream schema has accord.stream {ident!r}; "
                                          f"add schemas/{ident}.avsc, name its file with `schema:` or fix the id")
        view = SchemaView({})
    jurisdiction = list(stream.jurisdiction) if stream.jurisdiction is not None else view.jurisdiction
    for index, name in enumerate(jurisdiction):
        if not view.has(name) and view.fields:
            ctx.problems.add(origin.at("jurisdiction", index), view.unknown(name))
    if not jurisdiction:
        ctx.problems.add(origin.at("jurisdiction"), "no jurisdiction fields, so no row could be routed; "
                                                    "name the fields holding LA codes")
    # A field's kind lets a decision that grants it transformed be checked against its type (domain/grant_fields).
    fields = {name: {"tags": view.tags(name), "kind": view.kind(name)} for name in view.fields}
    return {"owner": stream.owner, "subject": stream.ingest_subject, "classification": stream.classification,
            "jurisdiction": jurisdiction, "fields": fields, "partitions": stream.partitions,
            "delivery_partitions": stream.delivery_partitions}


def _template(ctx: _Context, ident: str, template: Template) -> dict[str, Any]:
    origin = ctx.catalog.origin("template", ident)
    view = ctx.view(template.stream, origin.at("stream"))
    tiers = compile_tiers(template.tiers, view, origin, ctx.problems) if view is not None else []
    if template.row_scope != SUBSCRIBER_AREAS:
        for index, code in enumerate(template.row_scope):
            if not ctx.la.is_area(code):
                ctx.problems.add(origin.at("row_scope", index), f"{ctx.la.why_unknown(code)}; use a known code")
    stream = ctx.catalog.streams.get(template.stream)
    row_scope = template.row_scope if isinstance(template.row_scope, str) else list(template.row_scope)
    publisher = ctx.catalog.bodies.get(stream.owner) if stream else None
    approval = template.approval or (publisher.approval if publisher is not None else None) or Approval()
    if publisher is not None:
        where = origin if template.approval is not None else ctx.catalog.origin("body", publisher.id)
        for index, role in enumerate(approval.roles):
            if role not in publisher.roles:
                ctx.problems.add(where.at("approval", "roles", index),
                                 f"the publisher {publisher.id!r} holds no role {role!r}, so nobody could approve "
                                 "requests in it; add the role to the body in bodies.yaml or fix it")
    return {"title": template.title, "stream": template.stream, "publisher": stream.owner if stream else None,
            "purpose": template.purpose, "legal_basis": sorted(template.legal_basis), "row_scope": row_scope,
            "tiers": tiers, "minimised_tier": template.minimised_tier,
            "emergency_level_required": template.emergency_level_required,
            "retention_s": None if template.retention is None else int(template.retention.total_seconds()),
            "approval": {"approvals": approval.approvals, "roles": sorted(approval.roles),
                         "one_of_each": sorted(approval.one_of_each)}}


@dataclass(frozen=True)
class _Terms:
    """An agreement's flow with its template filled in, and which file each key came from."""

    values: Mapping[str, Any]
    origins: Mapping[str, Origin]
    own: Origin

    def __getitem__(self, key: str) -> Any:
        return self.values[key]

    def inherited(self, key: str) -> bool:
        return self.origins[key] is not self.own


def _terms(agreement: Agreement, template: Template | None, own: Origin, inherited: Origin) -> _Terms:
    values: dict[str, Any] = {}
    origins: dict[str, Origin] = {}
    for key in OVERRIDABLE:
        value = getattr(agreement, key)
        if value is None and template is not None:
            values[key], origins[key] = getattr(template, key), inherited
        else:
            values[key], origins[key] = (_DEFAULTS.get(key) if value is None else value), own
    return _Terms(values, origins, own)


def _agreement(ctx: _Context, ident: str, agreement: Agreement) -> Flow:
    own = ctx.catalog.origin("agreement", ident)
    template = None
    if agreement.template is not None:
        template = ctx.catalog.templates.get(agreement.template)
        if template is None:
            ctx.problems.add(own.at("template"), f"unknown template {agreement.template!r}"
                                                 f"{_hint(agreement.template, ctx.catalog.templates)}; "
                                                 "add it under templates/ or fix the id")
            return {}
    terms = _terms(agreement, template, own, ctx.catalog.origin("template", agreement.template or ""))
    view = ctx.view(terms["stream"], terms.origins["stream"].at("stream"))
    tiers = compile_tiers(terms["tiers"], view, terms.origins["tiers"], ctx.problems) if view else []
    stream = ctx.catalog.streams.get(terms["stream"])
    publisher = agreement.publisher or (stream.owner if stream else None)
    subscriber = ctx.body(agreement.subscriber, own.at("subscriber"))
    if agreement.publisher is not None:
        ctx.body(agreement.publisher, own.at("publisher"))
    _check_signatories(ctx, agreement, own, publisher)
    areas: list[str] = []
    if subscriber is not None:
        _check_roles(ctx, agreement, terms, subscriber)
        areas = _row_scope(ctx, terms, agreement.subscriber, subscriber)
    return {
        "template": agreement.template, "publisher": publisher, "subscriber": agreement.subscriber,
        "stream": terms["stream"], "purpose": terms["purpose"], "legal_basis": sorted(terms["legal_basis"]),
        "tiers": tiers, "row_scope": {"areas": areas},
        # Whether the National Data Opt-out applies to what this agreement delivers, and why (domain/optout.py).
        "national_data_opt_out": opt_out_rule(terms["legal_basis"],
                                              view is not None and view.has(NHS_NUMBER_FIELD)).to_json(),
        "required_fields": _required_fields(ctx, agreement, own, view),
        "suppression": _suppression(ctx, agreement, own, view),
        # valid_until is when the agreement stops being in force: the signed end, or the end of the day its legal
        # basis lapses if that comes first (plans, grants and fences all read this one field).
        "valid_from": _rfc3339(agreement.valid_from), "valid_until": _rfc3339(_in_force_until(agreement)),
        "signed_valid_until": _rfc3339(agreement.valid_until),
        "legal_basis_until": None if agreement.legal_basis_until is None else agreement.legal_basis_until.isoformat(),
        "retention_s": None if terms["retention"] is None else int(terms["retention"].total_seconds()),
        "review_date": agreement.review_date.isoformat(),
        # Only when asked for, so that catalogs without history keep their revision.
        **({"backfill": agreement.backfill} if agreement.backfill is not None else {}),
        "emergency_level_required": terms["emergency_level_required"],
        "signatories": [signatory.model_dump() for signatory in agreement.signatories],
    }


def _suppression(ctx: _Context, agreement: Agreement, own: Origin, view: SchemaView | None) -> dict[str, Any] | None:
    spec = agreement.suppression
    if spec is None or view is None:
        return None
    counts = spec.counts if spec.counts is not None else tuple(view.tagged(SMALL_COUNT_TAG))
    for key, names in (("rows", [spec.rows]), ("columns", [spec.columns]), ("counts", list(counts)),
                       ("denominator", [spec.denominator] if spec.denominator else [])):
        for name in names:
            if not view.has(name):
                ctx.problems.add(own.at("suppression", key), view.unknown(name))
            elif key == "counts" and not view.is_count(name):
                ctx.problems.add(own.at("suppression", key), f"{name!r} is {view.type_text(name)}, not a count "
                                                             "(Avro int or long)")
    try:
        return SuppressionRule(spec.threshold, spec.round_to, counts, spec.rows, spec.columns,
                               spec.denominator).to_json()
    except ValueError as exc:
        ctx.problems.add(own.at("suppression"), f"{exc}; name counts tagged {SMALL_COUNT_TAG} or list them")
        return None


def _in_force_until(agreement: Agreement) -> dt.datetime:
    lapse = agreement.legal_basis_until
    if lapse is None:
        return agreement.valid_until
    end_of_lapse_day = dt.datetime.combine(lapse + dt.timedelta(days=1), dt.time(), tzinfo=dt.UTC)
    return min(agreement.valid_until, end_of_lapse_day)


def _required_fields(ctx: _Context, agreement: Agreement, own: Origin, view: SchemaView | None) -> list[str]:
    for index, name in enumerate(agreement.required_fields):
        if view is not None and not view.has(name):
            ctx.problems.add(own.at("required_fields", index),
                             f"{name!r} is not a field of {view.stream}; required fields must be stream fields "
                             f"({', '.join(view.fields)})")
    return list(agreement.required_fields)


def _check_roles(ctx: _Context, agreement: Agreement, terms: _Terms, subscriber: Body) -> None:
    for tier, spec in terms["tiers"].items():
        for index, role in enumerate(spec.roles):
            if role in subscriber.roles:
                continue
            if terms.inherited("tiers"):
                # The template is fine for other subscribers; the fault is this pairing, so point here.
                where = terms.own.at("subscriber")
                fix = f"tier {tier!r} of template {agreement.template}"
            else:
                where = terms.own.at("tiers", tier, "roles", index)
                fix = f"tier {tier!r}"
            ctx.problems.add(where, f"subscriber {agreement.subscriber!r} does not hold role {role!r}, which {fix} "
                                    "gives access to; add the role to the body in bodies.yaml or change the tier")


def _check_signatories(ctx: _Context, agreement: Agreement, own: Origin, publisher: str | None) -> None:
    signed = set()
    for index, signatory in enumerate(agreement.signatories):
        ctx.body(signatory.body, own.at("signatories", index, "body"))
        signed.add(signatory.body)
    for party, ident in (("publisher", publisher), ("subscriber", agreement.subscriber)):
        # An unknown party is reported already; asking for its signature as well would only add noise.
        if ident in ctx.catalog.bodies and ident not in signed:
            ctx.problems.add(own.at("signatories"), f"no signatory from the {party} {ident!r}; "
                                                    "both parties must sign, add one")


def _row_scope(ctx: _Context, terms: _Terms, subscriber_id: str, subscriber: Body) -> list[str]:
    """The LA codes whose rows the agreement admits: the subscriber's areas, or a narrower list (authorities, or
    regions and countries standing for every authority in them)."""
    served = ctx.served(subscriber)
    scope = terms["row_scope"]
    if scope == SUBSCRIBER_AREAS:
        return sorted(served)
    origin = terms.origins["row_scope"]
    areas: set[str] = set()
    for index, code in enumerate(scope):
        within = ctx.la.areas_served(code)
        if not within or not within <= served:
            if within:
                listed = ", ".join(sorted(served)) if len(served) <= 10 else f"{len(served)} areas"
                ctx.problems.add(origin.at("row_scope", index),
                                 f"{code} is outside the areas {subscriber_id!r} serves ({listed}); "
                                 "a row scope can only narrow the subscriber's areas, never widen them")
            elif not terms.inherited("row_scope"):  # an unknown code of a template is reported at the template
                ctx.problems.add(origin.at("row_scope", index), f"{ctx.la.why_unknown(code)}; use a known code")
            continue
        areas |= within
    return sorted(areas)


def _rfc3339(moment: dt.datetime) -> str:
    return moment.astimezone(dt.UTC).isoformat().replace("+00:00", "Z")
