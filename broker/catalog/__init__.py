"""The catalog as code: bodies, streams, templates and agreements in YAML, checked and compiled to OPA data."""

from __future__ import annotations

from broker.catalog.compiler import compile_catalog, load_and_compile, revision_of
from broker.catalog.loader import CatalogError, load_catalog
from broker.catalog.models import Catalog

__all__ = ["Catalog", "CatalogError", "compile_catalog", "load_and_compile", "load_catalog", "revision_of"]
