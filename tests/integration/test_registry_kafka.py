"""The registry on the real Kafka: durable in a compacted topic, same ids after a restart and in a second instance."""

from __future__ import annotations

import json
import os
import signal
import time
import uuid
from pathlib import Path

import httpx

from broker.adapters.kafka_admin import describe_topic_config
from broker.local import processes
from broker.local.python_service import PythonService
from broker.local.stack import Endpoints
from broker.runtime.registry import open_registry
from tests.conftest import bearer, kafka_env

SCHEMA = {"type": "record", "name": "Sitrep", "namespace": "t",
          "fields": [{"name": "trust_ods_code", "type": "string"}, {"name": "covid_inpatients", "type": "int"}]}


def test_restarted_and_second_instances_serve_the_same_ids(services: Endpoints) -> None:
    topic = f"_test.schemas.{uuid.uuid4().hex[:8]}"
    first, log1 = open_registry(services.kafka, topic)
    try:
        v1 = first.register("sitrep-value", json.dumps(SCHEMA))
        evolved = {**SCHEMA, "fields": [*SCHEMA["fields"], {"name": "mv_beds", "type": "int", "default": 0}]}
        v2 = first.register("sitrep-value", json.dumps(evolved))
        first.set_config("sitrep-value", "FULL")
        first.delete_version("sitrep-value", "1", permanent=False)
        second, log2 = open_registry(services.kafka, topic)  # while the first still runs
        try:
            for registry in (first, second):
                assert registry.read(lambda s: [(v.version, v.schema_id) for v in s.versions("sitrep-value")]) == [
                    (2, v2.schema_id)]
                assert registry.read(lambda s: s.schema(v1.schema_id)) == v1.schema
                assert registry.read(lambda s: s.mode("sitrep-value").value) == "FULL"
            # A write through one instance is seen by the other (it follows the topic).
            third = second.register("other-value", json.dumps(SCHEMA))
            assert third.schema_id == v1.schema_id
            deadline = time.monotonic() + 10
            while not first.read(lambda s: "other-value" in s.subjects()) and time.monotonic() < deadline:
                time.sleep(0.05)
            assert first.read(lambda s: s.version("other-value", "1").schema_id) == v1.schema_id
        finally:
            log2.close()
    finally:
        log1.close()
    restarted, log3 = open_registry(services.kafka, topic)
    try:
        assert restarted.read(lambda s: s.version("sitrep-value", "latest").schema_id) == v2.schema_id
        assert restarted.read(lambda s: s.subjects()) == ["other-value", "sitrep-value"]
    finally:
        log3.close()
    assert describe_topic_config(services.kafka, topic)["cleanup.policy"] == "compact"


def test_registry_service_started_by_accord_local(services: Endpoints) -> None:
    subject = f"svc-{uuid.uuid4().hex[:8]}-value"
    response = httpx.post(f"{services.registry_url}/subjects/{subject}/versions",
                          json={"schema": json.dumps(SCHEMA)},
                          headers={"Content-Type": "application/vnd.schemaregistry.v1+json", **bearer()})
    assert response.status_code == 200, response.text
    schema_id = response.json()["id"]
    assert httpx.get(f"{services.registry_url}/schemas/ids/{schema_id}", headers=bearer()).status_code == 200
    assert subject in httpx.get(f"{services.registry_url}/subjects", headers=bearer()).json()


def test_killed_registry_process_restarts_with_every_subject_version_and_id(
        services: Endpoints, tmp_path: Path) -> None:
    service = PythonService("registry", tmp_path)
    env = kafka_env(services.kafka) | {"ACCORD_OPA_URL": services.opa_url}
    url = service.start(env, timeout_s=60)
    subject = f"killed-{uuid.uuid4().hex[:8]}-value"
    evolved = {**SCHEMA, "fields": [*SCHEMA["fields"], {"name": "mv_beds", "type": "int", "default": 0}]}
    try:
        ids = [httpx.post(f"{url}/subjects/{subject}/versions", json={"schema": json.dumps(s)},
                          headers=bearer()).json()["id"]
               for s in (SCHEMA, evolved)]
        pid = processes.read_pid(service.pid_file)
        assert pid is not None
        os.kill(pid, signal.SIGKILL)  # no shutdown hook runs: only what reached Kafka survives
        deadline = time.monotonic() + 10
        while service.running() and time.monotonic() < deadline:
            time.sleep(0.05)
        assert not service.running()
        url = service.start(env, timeout_s=60)
        assert httpx.get(f"{url}/subjects/{subject}/versions", headers=bearer()).json() == [1, 2]
        assert [httpx.get(f"{url}/subjects/{subject}/versions/{v}", headers=bearer()).json()["id"]
                for v in (1, 2)] == ids
        assert all(httpx.get(f"{url}/schemas/ids/{i}", headers=bearer()).status_code == 200 for i in ids)
    finally:
        service.stop()
