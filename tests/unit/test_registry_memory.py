"""The in-memory schema registry behaves like the real one where serde and services depend on it."""

from __future__ import annotations

import json

import pytest

from broker.adapters.registry_memory import InMemorySchemaRegistry
from broker.domain.schemas import RegisteredSchema
from broker.errors import RegistryError
from broker.services.serde import SchemaRegistry

CASE_V1 = json.dumps({"type": "record", "name": "Case", "fields": [{"name": "case_id", "type": "string"}]})
CASE_V2 = json.dumps({"type": "record", "name": "Case", "fields": [
    {"name": "case_id", "type": "string"}, {"name": "ltla", "type": ["null", "string"], "default": None}]})
# CASE_V1 with other whitespace and key order: the same schema to a registry.
CASE_V1_RESPELT = '{ "fields": [ {"type": "string", "name": "case_id"} ],\n  "name": "Case", "type": "record" }'


@pytest.fixture
def registry() -> SchemaRegistry:
    return InMemorySchemaRegistry()


def test_ids_are_global_and_start_at_one(registry: SchemaRegistry) -> None:
    assert registry.register("ingest.cases-value", CASE_V1) == 1
    assert registry.register("ingest.cases-value", CASE_V2) == 2
    assert registry.register("other-value", CASE_V2) == 2


def test_same_schema_spelt_differently_gets_the_same_id_under_any_subject(registry: SchemaRegistry) -> None:
    first = registry.register("ingest.cases-value", CASE_V1)
    assert registry.register("deliver.ph.cases-value", CASE_V1_RESPELT) == first
    assert registry.latest("deliver.ph.cases-value").version == 1


def test_registering_again_adds_no_version(registry: SchemaRegistry) -> None:
    registry.register("ingest.cases-value", CASE_V1)
    registry.register("ingest.cases-value", CASE_V2)
    registry.register("ingest.cases-value", CASE_V1_RESPELT)
    assert registry.latest("ingest.cases-value") == RegisteredSchema("ingest.cases-value", 2, 2,
                                                                     registry.schema_by_id(2))


def test_schema_by_id_returns_the_same_schema(registry: SchemaRegistry) -> None:
    schema_id = registry.register("ingest.cases-value", CASE_V1_RESPELT)
    assert json.loads(registry.schema_by_id(schema_id)) == json.loads(CASE_V1)


def test_unknown_id_is_confluents_40403(registry: SchemaRegistry) -> None:
    with pytest.raises(RegistryError) as err:
        registry.schema_by_id(42)
    assert (err.value.status, err.value.error_code) == (404, 40403)
    assert "Schema 42 not found" in str(err.value)


def test_unknown_subject_is_confluents_40401(registry: SchemaRegistry) -> None:
    with pytest.raises(RegistryError) as err:
        registry.latest("ingest.nothing-value")
    assert (err.value.status, err.value.error_code) == (404, 40401)
    assert "'ingest.nothing-value'" in err.value.message


@pytest.mark.parametrize(("schema", "expected"), [
    ("{not json", "not JSON"),
    ('{"type": "record", "name": "Case", "fields": [{"name": "x", "type": "strng"}]}', "strng"),
])
def test_invalid_schema_is_confluents_42201(registry: SchemaRegistry, schema: str, expected: str) -> None:
    with pytest.raises(RegistryError) as err:
        registry.register("ingest.cases-value", schema)
    assert (err.value.status, err.value.error_code) == (422, 42201)
    assert expected in err.value.message
    with pytest.raises(RegistryError):
        registry.latest("ingest.cases-value")
