"""The SchemaRegistry port in memory: the shipped test double, with the real registry's ids and error codes."""

from __future__ import annotations

import json
import threading

from fastavro import parse_schema
from fastavro.schema import SchemaParseException

from broker.domain.schemas import RegisteredSchema, canonical_text
from broker.errors import RegistryError


class InMemorySchemaRegistry:
    """Global ids from 1; one id per canonical schema whatever the subject; versions per subject from 1.

    Schemas are stored and returned in canonical form, as the real registry does. No compatibility checks:
    a test that needs them runs against the real registry.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._id_by_text: dict[str, int] = {}
        self._text_by_id: dict[int, str] = {}
        self._versions: dict[str, list[int]] = {}
        self.compatibility: dict[str, str] = {}

    def register(self, subject: str, schema: str) -> int:
        text = _checked_canonical(schema)
        with self._lock:
            schema_id = self._id_by_text.setdefault(text, len(self._id_by_text) + 1)
            self._text_by_id[schema_id] = text
            versions = self._versions.setdefault(subject, [])
            if schema_id not in versions:
                versions.append(schema_id)
            return schema_id

    def schema_by_id(self, schema_id: int) -> str:
        try:
            return self._text_by_id[schema_id]
        except KeyError:
            raise RegistryError(404, 40403, f"Schema {schema_id} not found") from None

    def compatibility_problems(self, subject: str, schema: str) -> list[str]:
        """None: this double checks no compatibility (the real registry's is tested against it)."""
        _checked_canonical(schema)
        return []

    def set_compatibility(self, subject: str, mode: str) -> None:
        self.compatibility[subject] = mode

    def latest(self, subject: str) -> RegisteredSchema:
        versions = self._versions.get(subject)
        if not versions:
            raise RegistryError(404, 40401, f"Subject '{subject}' not found.")
        schema_id = versions[-1]
        return RegisteredSchema(subject, len(versions), schema_id, self._text_by_id[schema_id])


def _checked_canonical(schema: str) -> str:
    """Canonical text of a valid Avro schema, else the 422/42201 the real registry answers with."""
    try:
        text = canonical_text(schema)
        parse_schema(json.loads(text))
    except json.JSONDecodeError as exc:
        raise RegistryError(422, 42201, f"Invalid schema: not JSON: {exc}") from exc
    except (SchemaParseException, ValueError, TypeError, KeyError) as exc:
        raise RegistryError(422, 42201, f"Invalid schema: {exc}") from exc
    return text
