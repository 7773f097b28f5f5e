"""Clients no one here wrote, against Accord: confluent-kafka's registry client and Avro serde, and kcat."""

from __future__ import annotations

import datetime as dt
import json
import subprocess
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, cast

import pytest
from confluent_kafka import Producer
from confluent_kafka.schema_registry import Schema, SchemaRegistryClient
from confluent_kafka.schema_registry.avro import AvroDeserializer as ConfluentDeserializer
from confluent_kafka.schema_registry.avro import AvroSerializer as ConfluentSerializer
from confluent_kafka.serialization import MessageField
from confluent_kafka.serialization import SerializationContext as ConfluentContext

from broker.adapters.kafka_access import KafkaAccess
from broker.adapters.kafka_admin import create_topics
from broker.adapters.kafka_log import KafkaLog
from broker.adapters.registry_http import HttpSchemaRegistry
from broker.config import Settings
from broker.domain.kafka_acls import subscriber_user
from broker.domain.wire import unframe
from broker.local.stack import Endpoints
from broker.local.toolchain import REPO_ROOT
from broker.security.api_tokens import service_token
from broker.services.serde import AvroDeserializer, AvroSerializer, SerializationContext
from tests.conftest import service_tokens
from tests.integration.kcat_support import consume_one, kcat_env, kcat_path, login

SCHEMA_TEXT = (REPO_ROOT / "schemas" / "ukhsa.positive-tests.avsc").read_text()
CASE: dict[str, Any] = {
    "specimen_id": "LEI-20200622-000777", "nhs_number": None, "name": "Sam Example", "dob": dt.date(1990, 1, 2),
    "sex": "MALE", "ethnicity": None, "address": "2 Example Street, Leicester", "postcode": "LE2 2BB",
    "occupation": "teacher", "specimen_date": dt.date(2020, 6, 20), "lab_report_date": dt.date(2020, 6, 21),
    "test_type": "PCR", "pillar": "PILLAR_2", "lsoa": "E01013627", "msoa": "E02002807",
    "ltla": "E06000016", "utla": "E06000016",
}


@pytest.fixture
def client(services: Endpoints) -> Iterator[SchemaRegistryClient]:
    # Confluent's client sends Accord's bearer token like any other (its logical-cluster header is ignored).
    with SchemaRegistryClient({"url": services.registry_url, "bearer.auth.credentials.source": "STATIC_TOKEN",
                               "bearer.auth.token": service_token(Settings().secrets_dir, "confluent-interop"),
                               "bearer.auth.logical.cluster": "accord"}) as registry_client:
        yield registry_client


def _publish_with_accord(services: Endpoints, topic: str) -> bytes:
    registry = HttpSchemaRegistry(services.registry_url, token=service_tokens())
    log = KafkaLog(services.kafka)
    try:
        payload = AvroSerializer(registry, SCHEMA_TEXT)(CASE, SerializationContext(topic))
        assert payload is not None
        log.publish(topic, payload)
        return payload
    finally:
        log.close()
        registry.close()



def test_confluent_registry_client_against_accord(client: SchemaRegistryClient) -> None:
    subject = f"interop-{uuid.uuid4().hex[:8]}-value"
    schema_id = client.register_schema(subject, Schema(SCHEMA_TEXT, "AVRO"))
    latest = client.get_latest_version(subject)
    assert (latest.schema_id, latest.version, latest.subject) == (schema_id, 1, subject)
    assert json.loads(cast(str, client.get_schema(schema_id).schema_str))["name"] == "PositiveTest"
    assert client.lookup_schema(subject, Schema(SCHEMA_TEXT, "AVRO")).version == 1
    assert subject in client.get_subjects()
    client.set_compatibility(subject, "FULL")
    assert client.get_compatibility(subject) == "FULL"
    fields = json.loads(SCHEMA_TEXT)
    dropped_default = {**fields, "fields": [*fields["fields"], {"name": "hospitalised", "type": "boolean"}]}
    assert client.test_compatibility(subject, Schema(json.dumps(dropped_default), "AVRO")) is False
    with_default = {**fields, "fields": [*fields["fields"],
                                         {"name": "hospitalised", "type": "boolean", "default": False}]}
    assert client.test_compatibility(subject, Schema(json.dumps(with_default), "AVRO")) is True


def test_confluent_writes_accord_reads(services: Endpoints, topic: str, client: SchemaRegistryClient) -> None:
    serializer = ConfluentSerializer(client, SCHEMA_TEXT)
    payload = serializer(CASE, ConfluentContext(topic, MessageField.VALUE))
    producer = Producer({**services.kafka.librdkafka_options(), "enable.idempotence": True})
    producer.produce(topic, value=payload)
    assert producer.flush(10) == 0

    log = KafkaLog(services.kafka)
    registry = HttpSchemaRegistry(services.registry_url, token=service_tokens())
    try:
        [record] = log.read(topic, max_records=1)
        assert record.value is not None
        decoded = AvroDeserializer(registry)(record.value, SerializationContext(topic))
    finally:
        registry.close()
        log.close()
    assert decoded == CASE


def test_accord_writes_confluent_reads(services: Endpoints, topic: str, client: SchemaRegistryClient) -> None:
    _publish_with_accord(services, topic)
    raw = consume_one(services.kafka, topic, f"interop-{uuid.uuid4().hex}")
    decoded = ConfluentDeserializer(client)(raw, ConfluentContext(topic, MessageField.VALUE))
    assert decoded == CASE
    schema_id, _ = unframe(raw)
    assert client.get_latest_version(f"{topic}-value").schema_id == schema_id


@pytest.mark.skipif(kcat_path() is None, reason="kcat is not installed (apt-get install kcat)")
def test_kcat_reads_a_delivery_on_the_subscribers_role_login(services: Endpoints,
                                                             kafka_as: Callable[[str], KafkaAccess],
                                                             tmp_path: Path) -> None:
    # Framing only: decoding with `-s value=avro` through the registry is test_registry_access.py's (it needs a kcat
    # built with Avro, which Debian's is not). The topic is this test's own stream under Leicester's DPH deliveries,
    # read as a council would: on the DPH role's login (a SCRAM user name with a dot, `<body>.<role>`).
    kcat = kcat_path()
    assert kcat is not None
    topic = f"deliver.leicester-city-council.dph.kcat-{uuid.uuid4().hex[:8]}"
    create_topics(services.kafka, [topic])
    payload = _publish_with_accord(services, topic)
    expected_id, _ = unframe(payload)
    subscriber = kafka_as(subscriber_user("leicester-city-council", "dph"))
    env = kcat_env(kcat, subscriber, tmp_path / "librdkafka")
    done = subprocess.run([kcat, *login(subscriber), "-C", "-t", topic, "-o", "beginning", "-e",
                           "-c", "1", "-f", "%s"], capture_output=True, timeout=60, check=False, env=env)
    assert done.returncode == 0, done.stderr.decode(errors="replace")
    out = done.stdout
    assert out == payload
    assert unframe(out)[0] == expected_id
