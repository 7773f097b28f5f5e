"""Two registry processes writing one subject at once on the real Kafka: no acknowledged schema is ever lost.

Each version is a key on the compacted `_accord.schemas` topic, and compaction keeps the last value of a key. If two
registries could both write version N, one of the two acknowledged schemas would be gone after compaction (and after
any rebuild from the topic, which keeps the last value too). Writers are fenced, so that never happens.
"""

from __future__ import annotations

import json
import threading
import uuid
from collections import defaultdict
from collections.abc import Callable, Iterator
from pathlib import Path

import httpx
import pytest
from kafka import KafkaConsumer, TopicPartition

from broker.adapters.kafka_access import KafkaAccess
from broker.domain.kafka_acls import SERVICE_USERS
from broker.domain.schemas import canonical_text
from broker.domain.topics import SCHEMAS_TOPIC
from broker.local.python_service import PythonService
from broker.local.stack import Endpoints
from broker.runtime.registry import open_registry
from tests.conftest import bearer, kafka_env

ROUNDS = 25
MEDIA = {"Content-Type": "application/vnd.schemaregistry.v1+json"}


def _schema(round_: int, writer: str) -> str:
    """A schema no other round or writer registers (so every acknowledgement is of a new version)."""
    return json.dumps({"type": "record", "name": f"Sitrep_{writer}_{round_}", "namespace": "fencing",
                       "fields": [{"name": "trust_ods_code", "type": "string"}]})


@pytest.fixture
def two_registries(services: Endpoints, kafka_as: Callable[[str], KafkaAccess],
                   tmp_path: Path) -> Iterator[list[str]]:
    """Two `accord registry serve` processes on the registry's own Kafka user and the shared schemas topic."""
    env = kafka_env(kafka_as(SERVICE_USERS["registry"])) | {"ACCORD_OPA_URL": services.opa_url}
    started: list[PythonService] = []
    try:
        urls = []
        for name in ("first", "second"):
            service = PythonService("registry", tmp_path / name)
            started.append(service)
            urls.append(service.start(env, timeout_s=60))
        yield urls
    finally:
        for service in started:
            service.stop()


def _register_at_once(urls: list[str], subject: str, schemas: list[str]) -> list[httpx.Response]:
    """Each registry registers its schema under `subject`, the two requests released together."""
    barrier = threading.Barrier(len(urls))
    answers: list[httpx.Response | None] = [None] * len(urls)

    def register(index: int) -> None:
        with httpx.Client(base_url=urls[index], headers=bearer(), timeout=60) as client:
            barrier.wait()
            answers[index] = client.post(f"/subjects/{subject}/versions", json={"schema": schemas[index]},
                                         headers=MEDIA)

    threads = [threading.Thread(target=register, args=(i,)) for i in range(len(urls))]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert all(answer is not None for answer in answers)
    return [answer for answer in answers if answer is not None]


def _values_per_version_key(kafka: KafkaAccess, subject: str) -> dict[str, set[int]]:
    """Every schema id ever committed under each version key of `subject`, read from the raw topic."""
    tp = TopicPartition(SCHEMAS_TOPIC, 0)
    consumer = KafkaConsumer(**kafka.client_options(), group_id=None, enable_auto_commit=False,
                             isolation_level="read_committed")
    found: dict[str, set[int]] = defaultdict(set)
    try:
        consumer.assign([tp])
        consumer.seek_to_beginning(tp)
        end = int(consumer.end_offsets([tp])[tp])
        while consumer.position(tp) < end:
            for batch in consumer.poll(timeout_ms=200).values():
                for message in batch:
                    key = message.key.decode()
                    if key.startswith(f"schema/{subject}/") and message.value is not None:
                        found[key].add(int(json.loads(message.value)["id"]))
    finally:
        consumer.close()
    return found


def test_two_registries_registering_one_subject_at_once_lose_no_acknowledged_schema(
        services: Endpoints, two_registries: list[str]) -> None:
    subject = f"fenced-{uuid.uuid4().hex[:8]}-value"
    # NONE: any two schemas are accepted in either order, so every refusal would be a fencing failure.
    config = httpx.put(f"{two_registries[0]}/config/{subject}", json={"compatibility": "NONE"},
                       headers={**bearer(), **MEDIA})
    assert config.status_code == 200, config.text
    acknowledged: dict[int, str] = {}
    refused: list[str] = []
    for round_ in range(ROUNDS):
        schemas = [_schema(round_, "first"), _schema(round_, "second")]
        for answer, schema in zip(_register_at_once(two_registries, subject, schemas), schemas, strict=True):
            if answer.status_code == 200:
                acknowledged[answer.json()["id"]] = schema
            else:
                refused.append(answer.text)

    # No version key was ever written with two different schemas, so compaction (last value per key) loses none.
    written = _values_per_version_key(services.kafka, subject)
    assert {key: ids for key, ids in written.items() if len(ids) > 1} == {}
    assert len(written) == 2 * ROUNDS - len(refused)

    # A registry rebuilt from the topic has every acknowledged id, each under its own version of the subject.
    rebuilt, changelog = open_registry(services.kafka)
    try:
        versions = rebuilt.read(lambda s: {v.schema_id: v.version for v in s.versions(subject)})
        assert set(acknowledged) <= set(versions), "acknowledged ids missing from the rebuilt registry"
        assert sorted(versions.values()) == list(range(1, len(written) + 1))
        held = rebuilt.read(lambda s: {schema_id: s.schema(schema_id) for schema_id in acknowledged})
        assert held == {schema_id: canonical_text(schema) for schema_id, schema in acknowledged.items()}
    finally:
        changelog.close()
    # A writer that lost a race registers again at the next version: nobody is refused.
    assert refused == []
