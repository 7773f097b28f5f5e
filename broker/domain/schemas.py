"""Avro schemas as a schema registry hands them out, and the canonical text that decides their identity."""

from __future__ import annotations

import json
from dataclasses import dataclass


@dataclass(frozen=True)
class RegisteredSchema:
    """One version of a subject: its global `schema_id` and the Avro schema as JSON text."""

    subject: str
    version: int
    schema_id: int
    schema: str


def canonical_text(schema: str) -> str:
    """The schema as compact JSON with sorted keys, so whitespace and key order never make a new id.

    Raises ValueError (json.JSONDecodeError) if `schema` is not JSON.
    """
    return json.dumps(json.loads(schema), sort_keys=True, separators=(",", ":"))
