"""Kafka's own boundaries, proven with real clients on the SASL/SCRAM listener and the StandardAuthorizer: each
body reaches only its own topics, Accord's gate runs on its own narrow rights, and no one gets in without a user."""

from __future__ import annotations

import dataclasses
import uuid
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from kafka import KafkaConsumer, KafkaProducer, TopicPartition
from kafka.errors import GroupAuthorizationFailedError, KafkaError, TopicAuthorizationFailedError
from pydantic import SecretStr

from broker.adapters.kafka_access import KafkaAccess
from broker.adapters.kafka_admin import create_topics
from broker.config import Settings
from broker.demo.synthetic import positive_tests
from broker.domain.kafka_acls import SERVICE_USERS
from broker.local.stack import Endpoints
from broker.runtime.gate import GateThread
from broker.security import kafka_identities
from tests.conftest import service_tokens
from tests.integration.gate_support import Receiver, end_offsets, publish, specimen_day, start_gate, topic_for

KafkaAs = Callable[[str], KafkaAccess]
LEICESTER, NOTTINGHAM = "leicester-city-council", "nottingham-city-council"
LEICESTER_DPH = topic_for(LEICESTER, "dph")
# Topics of these tests only, inside each council's delivery prefix: a raw row on a real delivery topic would
# break every other reader of it.
RUN = uuid.uuid4().hex[:8]
LEICESTER_OWN, NOTTINGHAM_OWN = f"deliver.{LEICESTER}.acl-test.{RUN}", f"deliver.{NOTTINGHAM}.acl-test.{RUN}"


def _producer(kafka: KafkaAccess) -> Any:
    return KafkaProducer(**kafka.client_options(), acks="all", max_block_ms=5000, request_timeout_ms=5000)


def _write(kafka: KafkaAccess, topic: str, value: bytes) -> None:
    producer = _producer(kafka)
    try:
        producer.send(topic, value).get(timeout=10)
    finally:
        producer.close(timeout=2)


def _fetch_refused(consumer: Any, topic: str) -> bool:
    """True when fetching from the start of `topic` (which holds a row) yields an authorisation error or nothing."""
    consumer.assign([TopicPartition(topic, 0)])
    consumer.seek(TopicPartition(topic, 0), 0)
    try:
        return not any(consumer.poll(timeout_ms=1000) for _ in range(3))
    except TopicAuthorizationFailedError:
        return True


@pytest.fixture(scope="module")
def delivery_topics(services: Endpoints) -> list[str]:
    create_topics(services.kafka, [LEICESTER_OWN, NOTTINGHAM_OWN])
    _write(services.kafka, NOTTINGHAM_OWN, b"a row only Nottingham may read")
    return [LEICESTER_OWN, NOTTINGHAM_OWN]


def test_a_subscriber_reading_another_subscribers_topic_gets_an_authorisation_error(
        kafka_as: KafkaAs, delivery_topics: list[str]) -> None:
    consumer = KafkaConsumer(**kafka_as(LEICESTER).client_options(), group_id=None)
    try:
        with pytest.raises(TopicAuthorizationFailedError):
            consumer.beginning_offsets([TopicPartition(NOTTINGHAM_OWN, 0)])
        assert consumer.end_offsets([TopicPartition(LEICESTER_OWN, 0)])  # its own: fine
        # the broker refuses every fetch: the row that is there never arrives
        assert _fetch_refused(consumer, NOTTINGHAM_OWN)
    finally:
        consumer.close()


def test_a_subscriber_cannot_use_another_bodys_consumer_group(kafka_as: KafkaAs,
                                                                delivery_topics: list[str]) -> None:
    consumer = KafkaConsumer(**kafka_as(LEICESTER).client_options(), group_id=f"{NOTTINGHAM}.{uuid.uuid4().hex[:6]}",
                             auto_offset_reset="earliest")
    consumer.subscribe([LEICESTER_OWN])
    try:
        with pytest.raises(GroupAuthorizationFailedError):
            for _ in range(10):
                consumer.poll(timeout_ms=500)
    finally:
        consumer.close()


def test_a_subscriber_cannot_write_its_own_delivery_topic(kafka_as: KafkaAs, delivery_topics: list[str]) -> None:
    # A body that may write nowhere is refused even the producer id an idempotent producer asks for first.
    with pytest.raises(KafkaError, match="AuthorizationFailed"):
        _write(kafka_as(LEICESTER), LEICESTER_OWN, b"forged delivery")


def test_a_publisher_writing_a_stream_it_does_not_own_is_refused(services: Endpoints, kafka_as: KafkaAs,
                                                                 applied_catalog: dict[str, Any]) -> None:
    _write(kafka_as("ukhsa"), "ingest.ukhsa.positive-tests", b"not Avro: the gate will quarantine it")
    with pytest.raises(TopicAuthorizationFailedError):
        _write(kafka_as("ukhsa"), "ingest.nhsd.shielded-patients", b"someone else's stream")
    with pytest.raises(TopicAuthorizationFailedError):
        _write(kafka_as(LEICESTER), "ingest.ukhsa.positive-tests", b"a subscriber is no publisher")


@pytest.mark.parametrize("who", ["no credentials", "a wrong password", "an unknown user"])
def test_an_unauthenticated_client_gets_nothing(services: Endpoints, kafka_as: KafkaAs, who: str) -> None:
    real = kafka_as(LEICESTER)
    access = {"no credentials": KafkaAccess(real.bootstrap),
              "a wrong password": dataclasses.replace(real, password=SecretStr("not-the-password")),
              "an unknown user": dataclasses.replace(real, username="mallory")}[who]
    with pytest.raises(KafkaError):
        consumer = KafkaConsumer(**access.client_options(), group_id=None, bootstrap_timeout_ms=3000)
        try:
            consumer.beginning_offsets([TopicPartition(LEICESTER_OWN, 0)])
        finally:
            consumer.close()


@pytest.fixture(scope="module")
def gate_as_itself(services: Endpoints, kafka_as: KafkaAs, applied_catalog: dict[str, Any],
                   tmp_path_factory: pytest.TempPathFactory) -> Iterator[GateThread]:
    """A gate worker on the gate's own user, in a group and with a transactional id its ACLs cover."""
    as_gate = dataclasses.replace(services, kafka=kafka_as(SERVICE_USERS["gate"]))
    runner = start_gate(as_gate, "accord-gate-acl", "acl-worker")
    yield runner
    runner.stop()
    assert runner.failure is None, runner.failure


def test_the_gate_on_its_own_user_delivers_and_the_subscriber_reads_as_itself(
        services: Endpoints, kafka_as: KafkaAs, gate_as_itself: GateThread) -> None:
    prefix = f"A{uuid.uuid4().hex[:6].upper()}"
    cases = positive_tests(specimen_day(), {"leicester": 2, "nottingham": 1}, prefix=prefix)
    start = end_offsets(services.kafka, [LEICESTER_DPH])
    publish(dataclasses.replace(services, kafka=kafka_as(SERVICE_USERS["api"])), "ukhsa.positive-tests", cases)
    receiver = Receiver(kafka_as(LEICESTER), services.registry_url, service_tokens())
    try:
        got = receiver.records(LEICESTER_DPH, start[LEICESTER_DPH],
                               lambda r, _: str(r.get("specimen_id", "")).startswith(prefix), want=2)
    finally:
        receiver.close()
    assert sorted(r["specimen_id"] for r, _ in got) == sorted(c["specimen_id"] for c in cases
                                                               if "-LEICESTER-" in c["specimen_id"])


def test_the_gate_cannot_read_a_delivery_or_write_governance(services: Endpoints, kafka_as: KafkaAs,
                                                             delivery_topics: list[str]) -> None:
    gate = kafka_as(SERVICE_USERS["gate"])
    # The gate may describe a delivery topic (it creates them) but never fetch from one.
    consumer = KafkaConsumer(**gate.client_options(), group_id=None)
    try:
        assert _fetch_refused(consumer, NOTTINGHAM_OWN)
    finally:
        consumer.close()
    admin = KafkaConsumer(**services.kafka.client_options(), group_id=None)
    try:
        admin.assign([TopicPartition(NOTTINGHAM_OWN, 0)])
        admin.seek(TopicPartition(NOTTINGHAM_OWN, 0), 0)
        assert any(admin.poll(timeout_ms=1000) for _ in range(10))  # the row is there to be read
    finally:
        admin.close()
    with pytest.raises(TopicAuthorizationFailedError):
        _write(gate, "_accord.governance", b"a forged governance event")


def test_a_rotated_password_replaces_the_old_one(services: Endpoints, kafka_as: KafkaAs, local_settings: Settings,
                                                 delivery_topics: list[str]) -> None:
    old = kafka_as(LEICESTER)
    path = kafka_identities.rotate(services.kafka, local_settings.secrets_dir, LEICESTER)
    assert path.stat().st_mode & 0o777 == 0o600
    new = kafka_as(LEICESTER)
    assert new.password != old.password
    consumer = KafkaConsumer(**new.client_options(), group_id=None)
    try:
        assert consumer.end_offsets([TopicPartition(LEICESTER_OWN, 0)])
    finally:
        consumer.close()
    with pytest.raises(KafkaError):
        stale = KafkaConsumer(**old.client_options(), group_id=None, bootstrap_timeout_ms=3000)
        stale.close()
