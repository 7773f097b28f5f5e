"""What the Catalogue page shows, from the catalog and the streams' Avro schemas: plain values for the templates."""

from __future__ import annotations

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
