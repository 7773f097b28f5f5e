"""Every template stream's schema history in the real registry holds under its subject's compatibility mode."""

from __future__ import annotations

import json
import uuid

import httpx

from broker.adapters.registry_http import HttpSchemaRegistry
from broker.config import Settings
from broker.domain.compatibility import CompatibilityMode, incompatibilities
from broker.domain.registry import parse_schema
from broker.domain.topics import ingest_topic
from broker.local.stack import Endpoints
from broker.services.ingest import load_stream_schemas
from tests.conftest import bearer, service_tokens


def history_problems(registry_url: str, subjects: list[str]) -> dict[str, list[str]]:
    """For each subject, why some version may not follow the ones before it under the subject's mode."""
    found: dict[str, list[str]] = {}
    with httpx.Client(base_url=registry_url, headers=bearer()) as client:
        for subject in subjects:
            mode = CompatibilityMode(client.get(f"/config/{subject}?defaultToGlobal=true").json()["compatibilityLevel"])
            versions = client.get(f"/subjects/{subject}/versions").json()
            history = [(v, parse_schema(client.get(f"/subjects/{subject}/versions/{v}/schema").text))
                       for v in versions]
            problems = [p for i in range(1, len(history)) for p in
                        incompatibilities(mode, history[i][1], history[:i])]
            if problems:
                found[subject] = problems
    return found


def test_template_schemas_and_their_evolution_hold(services: Endpoints) -> None:
    schemas = load_stream_schemas(Settings().schemas_dir)
    assert len(schemas) == 7
    registry = HttpSchemaRegistry(services.registry_url, token=service_tokens())
    subjects = []
    try:
        for stream, schema in schemas.items():
            subject = f"{ingest_topic(stream)}-value"
            registry.register(subject, json.dumps(schema))
            # The kind of change a publisher makes: a new optional field with a default.
            evolved = {**schema, "fields": [*schema["fields"], {
                "name": "accord_test_note", "type": ["null", "string"], "default": None, "doc": "test"}]}
            subjects.append(subject)
            extra = f"{subject}.evolved-{uuid.uuid4().hex[:6]}"
            registry.register(extra, json.dumps(schema))
            registry.register(extra, json.dumps(evolved))
            subjects.append(extra)
    finally:
        registry.close()
    assert history_problems(services.registry_url, subjects) == {}


def test_history_walk_catches_a_version_that_breaks_the_mode(services: Endpoints) -> None:
    subject = f"history-broken-{uuid.uuid4().hex[:6]}"
    v1 = {"type": "record", "name": "R", "fields": [{"name": "a", "type": "string"}]}
    v2 = {"type": "record", "name": "R", "fields": [{"name": "a", "type": "string"}, {"name": "b", "type": "int"}]}
    with httpx.Client(base_url=services.registry_url, headers=bearer()) as client:
        assert client.put(f"/config/{subject}", json={"compatibility": "NONE"}).status_code == 200
        for schema in (v1, v2):
            assert client.post(f"/subjects/{subject}/versions", json={"schema": json.dumps(schema)}).status_code == 200
        assert client.put(f"/config/{subject}", json={"compatibility": "BACKWARD"}).status_code == 200
    problems = history_problems(services.registry_url, [subject])
    assert list(problems) == [subject] and "b" in problems[subject][0]
