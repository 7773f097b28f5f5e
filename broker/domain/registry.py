"""Schema registry state: subjects, versions, global ids and compatibility config, rebuilt from a changelog.

The changelog is a sequence of (key, value) records, last value per key wins, so the state is the same before
and after Kafka compacts the topic. Writes are planned here as records; the service appends them.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from dataclasses import dataclass, replace
from typing import Any

import avro.errors
import avro.schema

from broker.domain.compatibility import CompatibilityMode, incompatibilities
from broker.domain.schemas import canonical_text
from broker.errors import RegistryError

DEFAULT_MODE = CompatibilityMode.BACKWARD
GLOBAL = "__GLOBAL"
MAX_VERSION = 2**31 - 1
Change = tuple[str, dict[str, Any] | None]


@dataclass(frozen=True)
class SchemaVersion:
    subject: str
    version: int
    schema_id: int
    schema: str
    deleted: bool = False

    def as_json(self) -> dict[str, Any]:
        return {"subject": self.subject, "version": self.version, "id": self.schema_id, "schema": self.schema}


def parse_schema(schema: str) -> avro.schema.Schema:
    """Parse Avro schema text, or RegistryError 42201 with the parser's message."""
    try:
        return avro.schema.parse(schema)
    except json.JSONDecodeError as exc:
        raise RegistryError(422, 42201, f"Invalid schema: not JSON: {exc}") from exc
    except (avro.errors.AvroException, TypeError, ValueError, KeyError) as exc:
        raise RegistryError(422, 42201, f"Invalid schema: {exc}") from exc


def _content_id(text: str, attempt: int) -> int:
    digest = hashlib.sha256(f"{attempt}:{text}".encode()).digest()
    # Positive 31-bit ids, never 0: clients treat the id as a signed 4-byte integer.
    return int.from_bytes(digest[:4], "big") % (2**31 - 1) + 1


def _key_version(subject: str, version: int) -> str:
    return f"schema/{subject}/{version}"


def _key_config(subject: str | None) -> str:
    return f"config/{subject or GLOBAL}"


class RegistryState:
    """Everything the registry knows; mutated only by `apply` with changelog records."""

    def __init__(self) -> None:
        self._versions: dict[str, dict[int, SchemaVersion]] = {}
        self._by_id: dict[int, str] = {}
        self._config: dict[str, CompatibilityMode] = {}

    # -- the changelog ------------------------------------------------------------------------
    def apply(self, key: str, value: Mapping[str, Any] | None) -> None:
        kind, _, rest = key.partition("/")
        if kind == "schema":
            subject, _, version_text = rest.rpartition("/")
            self._apply_version(subject, int(version_text), value)
        elif kind == "config":
            if value is None:
                self._config.pop(rest, None)
            else:
                self._config[rest] = CompatibilityMode(value["compatibilityLevel"])

    def _apply_version(self, subject: str, version: int, value: Mapping[str, Any] | None) -> None:
        versions = self._versions.setdefault(subject, {})
        if value is None:
            versions.pop(version, None)
            if not versions:
                del self._versions[subject]
            return
        entry = SchemaVersion(subject, version, int(value["id"]), str(value["schema"]), bool(value["deleted"]))
        versions[version] = entry
        self._by_id.setdefault(entry.schema_id, entry.schema)

    # -- reads --------------------------------------------------------------------------------
    def subjects(self, deleted: bool = False) -> list[str]:
        return sorted(s for s, vs in self._versions.items() if deleted or any(not v.deleted for v in vs.values()))

    def versions(self, subject: str, deleted: bool = False) -> list[SchemaVersion]:
        found = [v for _, v in sorted(self._versions.get(subject, {}).items()) if deleted or not v.deleted]
        if not found:
            raise RegistryError(404, 40401, f"Subject '{subject}' not found.")
        return found

    def version(self, subject: str, spec: str, deleted: bool = False) -> SchemaVersion:
        live = self.versions(subject, deleted=deleted)
        number = parse_version(spec)
        if number == -1:
            return live[-1]
        for entry in live:
            if entry.version == number:
                return entry
        raise RegistryError(404, 40402, f"Version {spec} not found.")

    def schema(self, schema_id: int) -> str:
        if schema_id not in self._by_id:
            raise RegistryError(404, 40403, f"Schema {schema_id} not found")
        return self._by_id[schema_id]

    def usages(self, schema_id: int, deleted: bool = False) -> list[SchemaVersion]:
        self.schema(schema_id)
        return [v for s in sorted(self._versions) for _, v in sorted(self._versions[s].items())
                if v.schema_id == schema_id and (deleted or not v.deleted)]

    def lookup(self, subject: str, schema: str, deleted: bool = False) -> SchemaVersion:
        text = canonical_text(schema) if _is_json(schema) else schema
        for entry in self.versions(subject, deleted=deleted):
            if entry.schema == text:
                return entry
        raise RegistryError(404, 40403, "Schema not found")

    def mode(self, subject: str | None, default_to_global: bool = True) -> CompatibilityMode:
        if subject is not None and subject in self._config:
            return self._config[subject]
        if subject is not None and not default_to_global:
            raise RegistryError(
                404, 40408, f"Subject '{subject}' does not have subject-level compatibility configured"
            )
        return self._config.get(GLOBAL, DEFAULT_MODE)

    def check(self, subject: str, schema: str, spec: str | None) -> list[str]:
        """Why `schema` is incompatible with the subject (its mode; against one version if `spec`)."""
        candidate = parse_schema(schema)
        live = self.versions(subject)
        mode = self.mode(subject)
        if spec is not None and parse_version(spec) != -1:
            chosen = self.version(subject, spec)
            live = [chosen]
            mode = CompatibilityMode(mode.value.removesuffix("_TRANSITIVE"))
        earlier = [(v.version, parse_schema(v.schema)) for v in live]
        return incompatibilities(mode, candidate, earlier)

    # -- planned writes -----------------------------------------------------------------------
    def plan_register(self, subject: str, schema: str) -> tuple[SchemaVersion, list[Change]]:
        """The version that holds this schema: the existing live one (no records), or the next one and its record."""
        parse_schema(schema)
        text = canonical_text(schema)
        try:
            return self.lookup(subject, text), []
        except RegistryError:
            pass
        if subject in self._versions and any(not v.deleted for v in self._versions[subject].values()):
            problems = self.check(subject, text, None)
            if problems:
                raise RegistryError(409, 409, f"Schema being registered is incompatible with an earlier schema for "
                                    f"subject \"{subject}\", details: {problems}")
        version = max(self._versions.get(subject, {}), default=0) + 1
        entry = SchemaVersion(subject, version, self._id_for(text), text)
        return entry, [(_key_version(subject, version), _version_record(entry))]

    def _id_for(self, text: str) -> int:
        # Ids come from the schema's content, so every instance replaying the log agrees on them without
        # coordination; a clash with a different schema (about 1 in 10^6 at 50 schemas) moves to the next.
        attempt = 0
        while True:
            candidate = _content_id(text, attempt)
            if self._by_id.get(candidate, text) == text:
                return candidate
            attempt += 1

    def plan_delete_version(self, subject: str, spec: str, permanent: bool) -> tuple[int, list[Change]]:
        entry = self.version(subject, spec, deleted=permanent)
        if permanent:
            if not entry.deleted:
                raise RegistryError(404, 40407, f"Subject '{subject}' Version {entry.version} was not deleted "
                                    "first before being permanently deleted")
            return entry.version, [(_key_version(subject, entry.version), None)]
        return entry.version, [(_key_version(subject, entry.version), _version_record(replace(entry, deleted=True)))]

    def plan_delete_subject(self, subject: str, permanent: bool) -> tuple[list[int], list[Change]]:
        every = self.versions(subject, deleted=True)
        if permanent:
            if any(not v.deleted for v in every):
                raise RegistryError(404, 40405, f"Subject '{subject}' was not deleted first before being "
                                    "permanently deleted")
            changes: list[Change] = [(_key_version(subject, v.version), None) for v in every]
            return [v.version for v in every], [*changes, (_key_config(subject), None)]
        live = [v for v in every if not v.deleted]
        if not live:
            raise RegistryError(404, 40404, f"Subject '{subject}' was soft deleted.Set permanent=true to delete "
                                "permanently")
        return [v.version for v in live], [
            (_key_version(subject, v.version), _version_record(replace(v, deleted=True))) for v in live
        ]

    def plan_config(self, subject: str | None, level: str | None) -> list[Change]:
        if level is None:
            return [(_key_config(subject), None)]
        return [(_key_config(subject), {"compatibilityLevel": parse_mode(level).value})]


def _version_record(entry: SchemaVersion) -> dict[str, Any]:
    return {"subject": entry.subject, "version": entry.version, "id": entry.schema_id, "schema": entry.schema,
            "deleted": entry.deleted}


def _is_json(text: str) -> bool:
    try:
        json.loads(text)
    except json.JSONDecodeError:
        return False
    return True


def parse_version(spec: str) -> int:
    """'latest' or -1 → -1; 1..2^31-1 → itself; anything else → RegistryError 42202."""
    if spec == "latest":
        return -1
    try:
        number = int(spec)
    except ValueError:
        number = 0
    if number == -1 or 1 <= number <= MAX_VERSION:
        return number
    raise RegistryError(422, 42202, f"The specified version '{spec}' is not a valid version id. Allowed values are "
                        f"between [1, 2^31-1] and the string \"latest\"")


def parse_mode(level: str) -> CompatibilityMode:
    try:
        return CompatibilityMode(str(level).upper())
    except ValueError:
        allowed = ", ".join(m.value for m in CompatibilityMode)
        raise RegistryError(422, 42203, f"Invalid compatibility level {level!r}. Valid values are: {allowed}") from None
