"""Where each catalog stream's Avro schema comes from: the file its `schema:` names, else the catalog's own
`schemas/` folder, else the shipped templates (ACCORD_SCHEMAS_DIR). The registry then holds the live ones."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from broker.catalog.loader import Problems
from broker.catalog.models import Catalog
from broker.errors import ConfigError
from broker.services.ingest import load_stream_schemas

OWN_SCHEMAS = "schemas"  # a catalog directory's own folder of .avsc files


def catalog_schemas(catalog: Catalog, directory: Path, templates: Path) -> dict[str, dict[str, Any]]:
    """Every schema a stream of `catalog` (loaded from `directory`) may use, by stream id: the shipped `templates`,
    overridden by `directory/schemas/`, overridden by a stream's own `schema:` file, which is used under the
    stream's id whatever `accord.stream` it names (a template schema can serve a new stream). CatalogError lists
    every unreadable `schema:` file with its streams.yaml line."""
    found = _folder(templates, "schema directory", "pass the folder of the streams' .avsc files")
    own = directory / OWN_SCHEMAS
    if own.is_dir():
        found |= _folder(own, "catalog's schema folder", "fix the .avsc file")
    problems = Problems()
    for ident, stream in sorted(catalog.streams.items()):
        if stream.schema_file is not None:
            schema = _file(directory / stream.schema_file, problems, catalog.origin("stream", ident).at("schema"))
            if schema is not None:
                found[ident] = {**schema, "accord.stream": ident}
    problems.raise_if_any("the streams' schemas do not load")
    return found


def _folder(folder: Path, what: str, fix: str) -> dict[str, dict[str, Any]]:
    if not folder.is_dir():
        raise ConfigError(f"{what} {folder} does not exist; {fix}")
    try:
        return load_stream_schemas(folder)
    except (OSError, ValueError) as exc:
        raise ConfigError(f"cannot read the stream schemas in {folder}: {exc}; fix the .avsc file") from exc


def _file(path: Path, problems: Problems, where: str) -> dict[str, Any] | None:
    try:
        schema = json.loads(path.read_text())
    except OSError as exc:
        problems.add(where, f"cannot read {path.name}: {exc.strerror or exc}; name an .avsc file relative to the "
                            "catalog directory")
        return None
    except ValueError as exc:
        problems.add(where, f"{path.name} is not JSON ({exc}); fix the .avsc file")
        return None
    if not isinstance(schema, dict) or schema.get("type") != "record" or not isinstance(schema.get("fields"), list):
        problems.add(where, f"{path.name} is not an Avro record schema (type record with fields); fix the file")
        return None
    return schema


def add_stream_from_template(directory: Path, templates: Path, template: str, stream: str, *, owner: str,
                             classification: str) -> Path:
    """Switch a new stream on in the catalog at `directory` from the schema of the template stream `template`
    (looked up as `catalog_schemas` does: the catalog's own schemas/, then `templates`): the schema is written under
    the new id to `directory/schemas/<stream>.avsc` and the stream appended to streams.yaml. Returns the schema file.
    The catalog's agreements for the new stream are the caller's; `accord catalog apply` (or the governance API with
    `register_stream_schemas`) then makes it live in the running processes without a restart."""
    own = directory / OWN_SCHEMAS
    known = (_folder(templates, "schema directory", "pass the folder of the streams' .avsc files")
             | (_folder(own, "catalog's schema folder", "fix the .avsc file") if own.is_dir() else {}))
    if template not in known:
        raise ConfigError(f"no template stream {template!r}; the templates are {', '.join(sorted(known))}")
    streams = directory / "streams.yaml"
    listed = streams.read_text()
    if f"id: {stream}\n" in listed or stream in known:
        raise ConfigError(f"stream {stream!r} is already in {streams}; choose a new id")
    own.mkdir(exist_ok=True)
    target = own / f"{stream}.avsc"
    target.write_text(json.dumps({**known[template], "accord.stream": stream}, indent=2) + "\n")
    streams.write_text(listed.rstrip("\n") + f"\n  - id: {stream}    # from template {template}\n"
                                              f"    owner: {owner}\n    classification: {classification}\n")
    return target
