"""New streams go live without restarts: `catalog apply` registers each stream's schema under its subject
(compatibility enforced, an incompatible change refused before anything is applied), and the applied catalog names,
per stream, its subject and schema id; a running API or gate worker meeting a stream it did not start with looks it
up in the latest applied catalog and reads its schema from the registry (`StreamSchemas`). A stream the applied
catalog does not name stays unknown: default deny."""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping
from typing import Any, Protocol

from broker.errors import ConfigError, NotFoundError, RegistryError
from broker.services.serde import SchemaRegistry

SCHEMA_ID = "schema_id"  # a compiled stream's key for the registry id of the schema applied with it


class SchemaRegistrar(Protocol):
    """The registry as `catalog apply` uses it (adapters.registry_http.HttpSchemaRegistry)."""

    def compatibility_problems(self, subject: str, schema: str) -> list[str]:
        """Why `schema` may not become the subject's next version under its compatibility mode; [] if it may
        (always for a subject with no versions yet)."""

    def register(self, subject: str, schema: str) -> int:
        """The global id of `schema` under `subject` (the same id again if it is registered already)."""


class SchemaChangeRefused(ConfigError):
    """A stream's schema is incompatible with what its subject holds; nothing was registered or applied."""


def register_stream_schemas(registry: SchemaRegistrar, document: Mapping[str, Any],
                            schemas: Mapping[str, Mapping[str, Any]]) -> dict[str, Any]:
    """`document` (a compiled catalog) with each stream's `schema_id`: its schema in `schemas` registered under the
    stream's subject. Every schema is checked first, so one incompatible change (SchemaChangeRefused, the registry's
    reasons per stream) leaves every subject as it was. The revision is the compiled catalog's: a schema id is
    where its content (already compiled into the stream's fields) was registered."""
    streams: Mapping[str, Mapping[str, Any]] = document["streams"]
    missing = sorted(ident for ident in streams if ident not in schemas)
    if missing:
        raise ConfigError(f"no schema for stream(s) {', '.join(missing)}: compile the catalog with its schemas")
    texts = {ident: schema_text(schemas[ident]) for ident in streams}
    refused = [f"{ident} (subject {streams[ident]['subject']}): {'; '.join(problems)}"
               for ident in sorted(texts)
               if (problems := registry.compatibility_problems(str(streams[ident]["subject"]), texts[ident]))]
    if refused:
        raise SchemaChangeRefused("the registry refuses the new schema of " + " and of ".join(refused)
                                  + "; nothing was applied: make the change compatible (e.g. give a new field a "
                                  "default) or publish it as a new stream")
    ids = {ident: registry.register(str(streams[ident]["subject"]), texts[ident]) for ident in sorted(texts)}
    return {**document, "streams": {ident: {**stream, SCHEMA_ID: ids[ident]} for ident, stream in streams.items()}}


def schema_text(schema: Mapping[str, Any]) -> str:
    """The JSON text a stream's schema is registered as (the registry keeps it canonical anyway)."""
    return json.dumps(schema, sort_keys=True, separators=(",", ":"))


class StreamSchemas:
    """The schema of a stream a process did not start with: named by the latest applied catalog (`catalog()`, e.g.
    the signed control topic's), read from the registry by the schema id applied with it, or the subject's latest
    version when the catalog carries none."""

    def __init__(self, catalog: Callable[[], Mapping[str, Any] | None], registry: SchemaRegistry) -> None:
        self._catalog = catalog
        self._registry = registry

    def named(self) -> list[str]:
        """The streams the latest applied catalog names."""
        return sorted(_streams(self._catalog()))

    def entry(self, stream: str) -> Mapping[str, Any] | None:
        """The latest applied catalog's entry of the stream (its subject, schema id, partitions), or None."""
        entry = _streams(self._catalog()).get(stream)
        return entry if isinstance(entry, Mapping) else None

    def lookup(self, stream: str) -> dict[str, Any] | None:
        """The stream's schema (its `accord.stream` the stream's id), or None when the applied catalog does not name
        it. NotFoundError when it names it but the registry holds no schema for it; RegistryError when the registry
        cannot answer."""
        return self.schema_of(stream, _streams(self._catalog()).get(stream))

    def schema_of(self, stream: str, entry: Mapping[str, Any] | None) -> dict[str, Any] | None:
        """As `lookup`, for the catalog entry `entry` of the stream."""
        if not isinstance(entry, Mapping):
            return None
        subject = str(entry.get("subject") or "")
        schema_id = entry.get(SCHEMA_ID)
        try:
            text = (self._registry.schema_by_id(schema_id) if isinstance(schema_id, int)
                    else self._registry.latest(subject).schema)
        except RegistryError as exc:
            if exc.status != 404:
                raise
            raise NotFoundError(f"stream {stream!r} is in the applied catalog but the registry holds no schema for "
                                f"it under {subject!r}; apply the catalog with `accord catalog apply`, which "
                                "registers it") from exc
        schema = json.loads(text)
        if not isinstance(schema, dict):
            raise NotFoundError(f"the registry's schema of stream {stream!r} is not an Avro record")
        return {**schema, "accord.stream": stream}


def _streams(catalog: Mapping[str, Any] | None) -> Mapping[str, Any]:
    streams = (catalog or {}).get("streams")
    return streams if isinstance(streams, Mapping) else {}
