"""What the Catalogue page shows, from the catalog and the streams' Avro schemas: plain values for the templates.
The agreements listed are those in force now, read from the signed control topic (the catalog applied last, less
revocations, plus decided grants), so an agreement applied or a grant decided after the console started shows
at once, and one revoked or expired does not."""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping
from typing import Any

from broker.catalog.models import Catalog


def catalogue_view(catalog: Catalog, schemas: Mapping[str, Mapping[str, Any]]) -> dict[str, Any]:
    """Streams with their publisher's name and their fields' tags, templates, agreements and bodies."""
    bodies = {ident: body.name for ident, body in catalog.bodies.items()}
    streams = []
    for ident, stream in sorted(catalog.streams.items()):
        schema = schemas.get(ident, {})
        fields = [{"name": str(f.get("name")), "tags": list(f.get("accord.tags") or ()), "doc": str(f.get("doc", ""))}
                  for f in schema.get("fields", ()) if isinstance(f, Mapping)]
        streams.append({"id": ident, "publisher": f"{bodies.get(stream.owner, stream.owner)} ({stream.owner})",
                        "owner": stream.owner, "classification": stream.classification,
                        "doc": str(schema.get("doc", "")), "fields": fields})
    templates = [{"id": t.template, "title": t.title, "stream": t.stream, "purpose": t.purpose,
                  "legal_basis": "; ".join(_bases(t.legal_basis)), "level": t.emergency_level_required,
                  "tiers": {name: list(tier.fields) for name, tier in t.tiers.items()},
                  "legal_bases": _bases(t.legal_basis), "fields_for": _fields_for(t, schemas.get(t.stream, {}))}
                 for _, t in sorted(catalog.templates.items())]
    agreements = []
    for ident, a in sorted(catalog.agreements.items()):
        template = catalog.templates.get(a.template) if a.template else None
        stream_id = a.stream or (template.stream if template else "")
        agreements.append({"id": ident, "subscriber": bodies.get(a.subscriber, a.subscriber),
                           "subscriber_id": a.subscriber, "stream": stream_id, "template": a.template,
                           "valid_until": a.valid_until.date().isoformat(), "valid_until_at": a.valid_until})
    return {"bodies": bodies, "streams": streams, "templates": templates, "agreements": agreements}


def _fields_for(template: Any, schema: Mapping[str, Any]) -> dict[str, list[str]]:
    """The fields a request from `template` may name, by role: what the role's tier delivers (its named fields not
    dropped, and the stream's other fields where the tier keeps them)."""
    names = [str(f.get("name")) for f in schema.get("fields", ()) if isinstance(f, Mapping)]
    found: dict[str, list[str]] = {}
    for tier in template.tiers.values():
        named = {name for name, rule in tier.fields.items() if rule.transform != "drop"}
        kept = {n for n in names if n not in tier.fields} if tier.other_fields == "keep" else set()
        wanted = named | kept
        for role in tier.roles:
            found[role] = [n for n in names if n in wanted] + sorted(wanted - set(names))
    return found


def _bases(value: Any) -> list[str]:
    if isinstance(value, str):
        return [value]
    return [str(v) for v in value] if isinstance(value, list | tuple) else [str(value)]


def in_force(view: Mapping[str, Any], applied: Mapping[str, Any] | None, revoked: Mapping[str, Any],
             grants: Mapping[str, Mapping[str, Any]], now: dt.datetime) -> list[dict[str, Any]]:
    """The agreements and grants in force at `now`, shaped like catalogue_view's: the applied catalog's agreements
    not revoked, and the decided grants, each until its end. Before any catalog is applied, none."""
    bodies = view.get("bodies", {})
    found = []
    documents = [(ident, a, "agreement") for ident, a in ((applied or {}).get("agreements") or {}).items()
                 if ident not in revoked]
    documents += [(ident, g, "grant") for ident, g in grants.items()]
    for ident, document, kind in documents:
        until = _moment(document.get("valid_until"))
        if until is not None and until <= now:
            continue
        subscriber = str(document.get("subscriber", ""))
        found.append({"id": ident, "kind": kind, "subscriber": bodies.get(subscriber, subscriber),
                      "subscriber_id": subscriber, "stream": str(document.get("stream", "")),
                      "template": document.get("template"),
                      "valid_until": "" if until is None else until.strftime("%Y-%m-%d %H:%M UTC"),
                      "valid_until_at": until})
    return sorted(found, key=lambda a: (a["kind"], a["id"]))


def _moment(text: Any) -> dt.datetime | None:
    if not text:
        return None
    moment = dt.datetime.fromisoformat(str(text).replace("Z", "+00:00"))
    return moment if moment.tzinfo else moment.replace(tzinfo=dt.UTC)


def with_applied_streams(view: Mapping[str, Any], applied: Mapping[str, Any] | None) -> dict[str, Any]:
    """`view` with every stream the applied catalog names that the console's catalog directory does not (one applied
    since the console started): its owner, classification and fields' tags from the compiled catalog."""
    named = (applied or {}).get("streams")
    known = {str(s["id"]) for s in view["streams"]}
    added = []
    for ident, entry in sorted(named.items() if isinstance(named, Mapping) else ()):
        if ident in known or not isinstance(entry, Mapping):
            continue
        owner = str(entry.get("owner", ""))
        fields = entry.get("fields")
        fields = fields if isinstance(fields, Mapping) else {}
        added.append({"id": ident, "publisher": f"{view['bodies'].get(owner, owner)} ({owner})", "owner": owner,
                      "classification": str(entry.get("classification", "")), "doc": "",
                      "fields": [{"name": str(name), "tags": list(spec.get("tags") or ()), "doc": ""}
                                 for name, spec in fields.items() if isinstance(spec, Mapping)]})
    if not added:
        return dict(view)
    return {**view, "streams": sorted([*view["streams"], *added], key=lambda s: str(s["id"]))}
