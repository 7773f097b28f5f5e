"""Registers a catalog's stream schemas in the schema registry before the catalog is applied (`catalog apply`), so
that running API and gate processes can take new streams on without a restart (services/stream_schemas.py)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from broker.adapters.registry_http import HttpSchemaRegistry
from broker.catalog.compiler import LoadedCatalog
from broker.services.stream_schemas import register_stream_schemas


def registered_catalog(loaded: LoadedCatalog, registry_url: str, token: Callable[[], str | None]) -> dict[str, Any]:
    """The compiled catalog with each stream's schema id, its schema registered under the stream's subject by the
    caller `token` names (Accord's operator); SchemaChangeRefused, with the registry's reasons, before anything is
    registered when one schema is incompatible with its subject."""
    registry = HttpSchemaRegistry(registry_url, token=token)
    try:
        return register_stream_schemas(registry, loaded.document, loaded.stream_schemas())
    finally:
        registry.close()
