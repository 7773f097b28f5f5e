"""Who reads what in the registry, on the session's registry, OPA and Kafka, with two subscribers' credentials:

- a body sees the subjects of its own deliveries, of the streams it publishes or has agreements for, and of the
  templates; another subscriber's delivery subjects and schemas are refused (403) and missing from every list;
- kcat (`-s value=avro -r http://BODY:TOKEN@host`) and confluent-kafka's SchemaRegistryClient (basic.auth.user.info)
  decode a delivery topic with the subscriber's own Kafka login (its DPH role's) and Accord token sent as HTTP Basic.
"""

from __future__ import annotations

import datetime as dt
import json
import subprocess
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import httpx
import pytest
from confluent_kafka.schema_registry import SchemaRegistryClient
from confluent_kafka.schema_registry.avro import AvroDeserializer as ConfluentDeserializer
from confluent_kafka.schema_registry.error import SchemaRegistryError
from confluent_kafka.serialization import MessageField
from confluent_kafka.serialization import SerializationContext as ConfluentContext

from broker.adapters.kafka_access import KafkaAccess
from broker.adapters.kafka_admin import create_topics
from broker.adapters.kafka_log import KafkaLog
from broker.adapters.registry_http import HttpSchemaRegistry
from broker.config import Settings
from broker.domain.kafka_acls import SERVICE_USERS, subscriber_user
from broker.domain.plans import delivery_namespace
from broker.domain.topics import delivery_topic, value_subject
from broker.local.stack import Endpoints
from broker.local.toolchain import REPO_ROOT
from broker.security.api_tokens import issue, signing_key
from broker.services.serde import AvroSerializer, SerializationContext
from tests.conftest import bearer, service_tokens
from tests.integration.kcat_support import AVRO_KCAT_VARIABLE, avro_kcat_path, consume_one, kcat_env, login

LEICESTER, NOTTINGHAM = "leicester-city-council", "nottingham-city-council"
T1_SUBJECT = "ingest.ukhsa.positive-tests-value"
RUN = uuid.uuid4().hex[:8]
ROW = {"specimen_id": f"LEI-{RUN}-000001", "lsoa": "E01013578", "age_band": "30-34", "sex": "FEMALE"}


def _delivery_schema(subscriber: str) -> str:
    """A projected schema as the gate registers one: the subscriber's own namespace, only the fields it gets."""
    return json.dumps({"type": "record", "name": "PositiveTest", "namespace": delivery_namespace(subscriber, "dph"),
                       "fields": [{"name": name, "type": "string"} for name in ROW]})


def _token(body: str) -> str:
    return issue(signing_key(Settings().secrets_dir), body, "dph", "registry access test", dt.timedelta(hours=1),
                 dt.datetime.now(dt.UTC))


@dataclass(frozen=True)
class Delivered:
    topic: str
    subject: str
    schema_id: int


@pytest.fixture(scope="module")
def deliveries(services: Endpoints, kafka_as: Callable[[str], KafkaAccess],
               applied_catalog: dict[str, Any]) -> dict[str, Delivered]:
    """One row on a delivery topic of each council, written as the gate writes: on the gate's Kafka user, framed
    with the projected schema it registered under the topic's subject as Accord's service."""
    registry = HttpSchemaRegistry(services.registry_url, token=service_tokens())
    log = KafkaLog(kafka_as(SERVICE_USERS["gate"]))
    found = {}
    try:
        registry.register(T1_SUBJECT, (REPO_ROOT / "schemas" / "ukhsa.positive-tests.avsc").read_text())
        for body in (LEICESTER, NOTTINGHAM):
            topic = delivery_topic(body, "dph", f"registry-test-{RUN}")
            create_topics(services.kafka, [topic])
            payload = AvroSerializer(registry, _delivery_schema(body))(ROW, SerializationContext(topic))
            assert payload is not None
            log.publish(topic, payload)
            subject = value_subject(topic)
            found[body] = Delivered(topic, subject, registry.latest(subject).schema_id)
    finally:
        log.close()
        registry.close()
    return found


def test_each_subscriber_lists_only_its_own_deliveries_its_streams_and_the_templates(
        services: Endpoints, deliveries: dict[str, Delivered]) -> None:
    mine, theirs = deliveries[LEICESTER], deliveries[NOTTINGHAM]
    with httpx.Client(base_url=services.registry_url) as client:
        everything = client.get("/subjects", headers=bearer()).json()
        assert {mine.subject, theirs.subject, T1_SUBJECT} <= set(everything)  # Accord's services see all
        for body, own, other in ((LEICESTER, mine, theirs), (NOTTINGHAM, theirs, mine)):
            seen = client.get("/subjects", headers=bearer(body, "dph")).json()
            assert own.subject in seen and T1_SUBJECT in seen
            assert other.subject not in seen
            assert [s for s in seen if s.startswith("deliver.") and not s.startswith(f"deliver.{body}.")] == []
            assert set(seen) < set(everything)


def test_another_subscribers_subject_and_schema_are_refused_with_the_reason(
        services: Endpoints, deliveries: dict[str, Delivered]) -> None:
    mine, theirs = deliveries[LEICESTER], deliveries[NOTTINGHAM]
    leicester = bearer(LEICESTER, "dph")
    with httpx.Client(base_url=services.registry_url) as client:
        assert client.get(f"/subjects/{mine.subject}/versions/latest", headers=leicester).json()["id"] == \
            mine.schema_id
        refused = client.get(f"/subjects/{theirs.subject}/versions/latest", headers=leicester)
        assert refused.status_code == 403
        assert "sees only the subjects of streams it publishes or receives" in refused.json()["message"]
        assert client.get(f"/subjects/{theirs.subject}/versions", headers=leicester).status_code == 403
        assert client.get(f"/config/{theirs.subject}", headers=leicester).status_code == 403

        assert client.get(f"/schemas/ids/{mine.schema_id}", headers=leicester).status_code == 200
        by_id = client.get(f"/schemas/ids/{theirs.schema_id}", headers=leicester)
        assert by_id.status_code == 403
        assert "no such subject uses schema" in by_id.json()["message"]
        assert client.get(f"/schemas/ids/{theirs.schema_id}", headers=bearer(NOTTINGHAM, "dph")).status_code == 200
        # An id no one uses is refused the same way: a body cannot probe which ids exist.
        assert client.get("/schemas/ids/7", headers=leicester).status_code == 403
        assert client.get(f"/schemas/ids/{mine.schema_id}/subjects", headers=leicester).json() == [mine.subject]


def _basic_url(registry_url: str, body: str) -> str:
    parts = urlsplit(registry_url)
    return f"{parts.scheme}://{body}:{_token(body)}@{parts.netloc}"


@pytest.fixture
def avro_kcat() -> str:
    kcat = avro_kcat_path()
    if kcat is None:
        pytest.skip(f"no kcat with Avro support (Debian's has none): build kcat with libserdes and name it in "
                    f"{AVRO_KCAT_VARIABLE}")
    return kcat


def test_kcat_decodes_a_delivery_with_the_subscribers_kafka_login_and_token_as_basic(
        services: Endpoints, kafka_as: Callable[[str], KafkaAccess], deliveries: dict[str, Delivered],
        avro_kcat: str, tmp_path: Path) -> None:
    subscriber = kafka_as(subscriber_user(LEICESTER, "dph"))
    env = kcat_env(avro_kcat, subscriber, tmp_path / "librdkafka")

    def kcat_as(body: str) -> subprocess.CompletedProcess[bytes]:
        return subprocess.run([avro_kcat, *login(subscriber), "-C", "-t", deliveries[LEICESTER].topic,
                               "-o", "beginning", "-e", "-c", "1", "-s", "value=avro",
                               "-r", _basic_url(services.registry_url, body), "-f", "%s\n"],
                              capture_output=True, timeout=60, check=False, env=env)

    done = kcat_as(LEICESTER)
    assert done.returncode == 0, done.stderr.decode(errors="replace")
    assert json.loads(done.stdout) == ROW
    # The same row with another council's token: its schema is not Nottingham's to fetch, so kcat cannot decode it.
    refused = kcat_as(NOTTINGHAM)
    assert b'"PositiveTest"' not in refused.stdout and ROW["specimen_id"].encode() not in refused.stdout
    assert b"403" in refused.stderr, refused.stderr.decode(errors="replace")



@pytest.fixture
def basic_clients(services: Endpoints) -> Iterator[dict[str, SchemaRegistryClient]]:
    """Confluent's registry client for each council, its token sent as HTTP Basic with the council's id."""
    def client(body: str) -> SchemaRegistryClient:
        return SchemaRegistryClient({"url": services.registry_url, "basic.auth.user.info": f"{body}:{_token(body)}"})

    with client(LEICESTER) as leicester, client(NOTTINGHAM) as nottingham:
        yield {LEICESTER: leicester, NOTTINGHAM: nottingham}


def test_confluent_client_with_basic_user_info_decodes_only_its_own_delivery(
        kafka_as: Callable[[str], KafkaAccess], deliveries: dict[str, Delivered],
        basic_clients: dict[str, SchemaRegistryClient]) -> None:
    mine, theirs = deliveries[LEICESTER], deliveries[NOTTINGHAM]
    dph = subscriber_user(LEICESTER, "dph")
    raw = consume_one(kafka_as(dph), mine.topic, f"{dph}.registry-test-{RUN}")
    decoded = ConfluentDeserializer(basic_clients[LEICESTER])(raw, ConfluentContext(mine.topic, MessageField.VALUE))
    assert decoded == ROW
    listed = basic_clients[LEICESTER].get_subjects()
    assert mine.subject in listed and theirs.subject not in listed
    with pytest.raises(SchemaRegistryError) as refused:
        basic_clients[NOTTINGHAM].get_schema(mine.schema_id)
    assert refused.value.http_status_code == 403
