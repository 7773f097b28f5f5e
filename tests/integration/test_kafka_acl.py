"""Kafka's own boundaries, proven with real clients on the SASL/SCRAM listener and the StandardAuthorizer: each
body reaches only its own topics and each of its roles only that role's deliveries, Accord's gate runs on its own
narrow rights, and no one gets in without a user."""

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
from broker.adapters.kafka_control import ControlWriter
from broker.adapters.kafka_security import KafkaSecurity
from broker.config import Settings
from broker.demo.synthetic import positive_tests
from broker.domain.kafka_acls import SERVICE_USERS, Binding, Op, Resource, subscriber_user
from broker.domain.topics import CONTROL_TOPIC
from broker.local.stack import Endpoints
from broker.runtime.gate import GateThread
from broker.security import kafka_identities
from broker.security.control_keys import ControlSigner, control_signing_key
from tests.conftest import service_tokens
from tests.integration.gate_support import Receiver, end_offsets, publish, specimen_day, start_gate, topic_for

KafkaAs = Callable[[str], KafkaAccess]
LEICESTER, NOTTINGHAM = "leicester-city-council", "nottingham-city-council"
LEICESTER_DPH, LEICESTER_ANALYST = topic_for(LEICESTER, "dph"), topic_for(LEICESTER, "analyst")
# The logins of Leicester's Director of Public Health and of its analysts, and of Nottingham's DPH.
AS_LEICESTER_DPH, AS_LEICESTER_ANALYST = subscriber_user(LEICESTER, "dph"), subscriber_user(LEICESTER, "analyst")
AS_NOTTINGHAM_DPH = subscriber_user(NOTTINGHAM, "dph")
# Topics of these tests only, inside each council's DPH delivery prefix: a raw row on a real delivery topic would
# break every other reader of it.
RUN = uuid.uuid4().hex[:8]
LEICESTER_OWN, NOTTINGHAM_OWN = f"deliver.{LEICESTER}.dph.acl-test.{RUN}", f"deliver.{NOTTINGHAM}.dph.acl-test.{RUN}"


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
    consumer = KafkaConsumer(**kafka_as(AS_LEICESTER_DPH).client_options(), group_id=None)
    try:
        with pytest.raises(TopicAuthorizationFailedError):
            consumer.beginning_offsets([TopicPartition(NOTTINGHAM_OWN, 0)])
        assert consumer.end_offsets([TopicPartition(LEICESTER_OWN, 0)])  # its own: fine
        # the broker refuses every fetch: the row that is there never arrives
        assert _fetch_refused(consumer, NOTTINGHAM_OWN)
    finally:
        consumer.close()


@pytest.mark.parametrize("group", [AS_NOTTINGHAM_DPH, AS_LEICESTER_ANALYST])
def test_a_subscriber_cannot_use_another_logins_consumer_group(kafka_as: KafkaAs, delivery_topics: list[str],
                                                                group: str) -> None:
    consumer = KafkaConsumer(**kafka_as(AS_LEICESTER_DPH).client_options(),
                             group_id=f"{group}.{uuid.uuid4().hex[:6]}", auto_offset_reset="earliest")
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
        _write(kafka_as(AS_LEICESTER_DPH), LEICESTER_OWN, b"forged delivery")


def test_a_publisher_writing_a_stream_it_does_not_own_is_refused(services: Endpoints, kafka_as: KafkaAs,
                                                                 applied_catalog: dict[str, Any]) -> None:
    _write(kafka_as("ukhsa"), "ingest.ukhsa.positive-tests", b"not Avro: the gate will quarantine it")
    with pytest.raises(TopicAuthorizationFailedError):
        _write(kafka_as("ukhsa"), "ingest.nhsd.shielded-patients", b"someone else's stream")
    with pytest.raises(TopicAuthorizationFailedError):
        _write(kafka_as(AS_LEICESTER_DPH), "ingest.ukhsa.positive-tests", b"a subscriber is no publisher")


@pytest.mark.parametrize("who", ["no credentials", "a wrong password", "an unknown user"])
def test_an_unauthenticated_client_gets_nothing(services: Endpoints, kafka_as: KafkaAs, who: str) -> None:
    real = kafka_as(AS_LEICESTER_DPH)
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
    receiver = Receiver(kafka_as(AS_LEICESTER_DPH), services.registry_url, service_tokens())
    try:
        got = receiver.records(LEICESTER_DPH, start[LEICESTER_DPH],
                               lambda r, _: str(r.get("specimen_id", "")).startswith(prefix), want=2)
    finally:
        receiver.close()
    assert sorted(r["specimen_id"] for r, _ in got) == sorted(c["specimen_id"] for c in cases
                                                               if "-LEICESTER-" in c["specimen_id"])


def _refused(kafka: KafkaAccess, topic: str) -> None:
    """`kafka`'s login is refused `topic` outright, and no record of it ever arrives."""
    consumer = KafkaConsumer(**kafka.client_options(), group_id=None)
    try:
        with pytest.raises(TopicAuthorizationFailedError):
            consumer.beginning_offsets([TopicPartition(topic, 0)])
        assert _fetch_refused(consumer, topic)
    finally:
        consumer.close()


def test_each_role_reads_its_own_deliveries_and_is_refused_another_roles(
        services: Endpoints, kafka_as: KafkaAs, gate_as_itself: GateThread) -> None:
    # Issue 15, defect 2: with one login per body, Leicester's analysts (LSOA, age band and sex) read the DPH's
    # topic, with NHS numbers, names and addresses.
    cases = positive_tests(specimen_day(), {"leicester": 3, "nottingham": 1}, prefix=f"R{uuid.uuid4().hex[:6].upper()}")
    start = end_offsets(services.kafka, [LEICESTER_DPH, LEICESTER_ANALYST])
    sources = publish(dataclasses.replace(services, kafka=kafka_as(SERVICE_USERS["api"])), "ukhsa.positive-tests",
                      cases)
    ours = [c for c in cases if "-LEICESTER-" in c["specimen_id"]]

    def mine(_: dict[str, Any], headers: dict[str, bytes]) -> bool:
        return headers.get("accord.source") in sources

    views = {}
    for login, topic in ((AS_LEICESTER_DPH, LEICESTER_DPH), (AS_LEICESTER_ANALYST, LEICESTER_ANALYST)):
        receiver = Receiver(kafka_as(login), services.registry_url, service_tokens())
        try:
            views[topic] = [value for value, _ in receiver.records(topic, start[topic], mine, want=len(ours))]
        finally:
            receiver.close()
    assert sorted(v["specimen_id"] for v in views[LEICESTER_DPH]) == sorted(c["specimen_id"] for c in ours)
    assert all({"nhs_number", "name", "address"} <= set(v) for v in views[LEICESTER_DPH])
    assert len(views[LEICESTER_ANALYST]) == len(ours)
    assert all(sorted(v) == ["age_band", "lsoa", "sex"] for v in views[LEICESTER_ANALYST])
    # The analysts' login is refused the DPH's topic, which holds the identifiers; the DPH's the analysts'.
    _refused(kafka_as(AS_LEICESTER_ANALYST), LEICESTER_DPH)
    _refused(kafka_as(AS_LEICESTER_DPH), LEICESTER_ANALYST)
    _refused(kafka_as(AS_NOTTINGHAM_DPH), LEICESTER_DPH)


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
    old = kafka_as(AS_LEICESTER_DPH)
    path = kafka_identities.rotate(services.kafka, local_settings.secrets_dir, AS_LEICESTER_DPH)
    assert path.stat().st_mode & 0o777 == 0o600
    new = kafka_as(AS_LEICESTER_DPH)
    assert new.password != old.password
    consumer = KafkaConsumer(**new.client_options(), group_id=None)
    try:
        assert consumer.end_offsets([TopicPartition(LEICESTER_OWN, 0)])
    finally:
        consumer.close()
    with pytest.raises(KafkaError):
        stale = KafkaConsumer(**old.client_options(), group_id=None, bootstrap_timeout_ms=3000)
        stale.close()


def test_provisioning_retires_a_bodys_single_login_from_before(services: Endpoints, kafka_as: KafkaAs,
                                                               local_settings: Settings,
                                                               applied_catalog: dict[str, Any],
                                                               delivery_topics: list[str]) -> None:
    # Before logins were per role, Leicester had one, reading every delivery of every role of the council.
    legacy, secrets_dir = LEICESTER, local_settings.secrets_dir
    with KafkaSecurity(services.kafka) as security:
        security.set_passwords({legacy: kafka_identities.ensure_password(secrets_dir, legacy)})
        security.sync([Binding(legacy, Resource.TOPIC, f"deliver.{LEICESTER}.", Op.READ),
                       Binding(legacy, Resource.TOPIC, f"deliver.{LEICESTER}.", Op.DESCRIBE),
                       Binding(legacy, Resource.GROUP, f"{LEICESTER}.", Op.READ)], [legacy])
    before = kafka_as(legacy)
    consumer = KafkaConsumer(**before.client_options(), group_id=None)
    try:
        assert consumer.end_offsets([TopicPartition(LEICESTER_OWN, 0)])  # what the old login could do
    finally:
        consumer.close()

    done = kafka_identities.provision(services.kafka, secrets_dir, applied_catalog)

    assert legacy in done.users_retired and "retired" in done.describe()
    assert not kafka_identities.password_path(secrets_dir, legacy).exists()
    with KafkaSecurity(services.kafka) as security:
        assert legacy not in security.scram_users()
        assert not [acl for acl in security.acls() if acl.principal == f"User:{legacy}"]
        assert AS_LEICESTER_ANALYST in security.scram_users()  # the roles' logins stay
    with pytest.raises(KafkaError):
        stale = KafkaConsumer(**before.client_options(), group_id=None, bootstrap_timeout_ms=3000)
        stale.close()
    again = kafka_identities.provision(services.kafka, secrets_dir, applied_catalog)
    assert (again.users_created, again.users_retired, again.acls_created, again.acls_deleted) == ((), (), 0, 0)


def test_only_the_governance_service_writes_the_control_topic(services: Endpoints, kafka_as: KafkaAs,
                                                             applied_catalog: dict[str, Any]) -> None:
    # A key no gate acts on, signed as the governance service signs: the one writer may write.
    ignored = f"acl-test/{RUN}"
    writer = ControlWriter(kafka_as(SERVICE_USERS["governance"]), client_id="test-acl-governance",
                           signer=ControlSigner(control_signing_key(Settings().secrets_dir)))
    try:
        writer.append(ignored, None)
    finally:
        writer.close()
    for user in ("ukhsa", AS_LEICESTER_DPH, SERVICE_USERS["gate"], SERVICE_USERS["api"], SERVICE_USERS["registry"],
                 SERVICE_USERS["fences"]):
        with pytest.raises(TopicAuthorizationFailedError):
            _write(kafka_as(user), CONTROL_TOPIC, b'{"kind": "revocation", "agreement": "t1-leicester"}')


def test_the_console_writes_nothing(services: Endpoints, kafka_as: KafkaAs, applied_catalog: dict[str, Any]) -> None:
    # Without the cluster's IDEMPOTENT_WRITE the console's producer is refused before any topic is asked.
    console = kafka_as(SERVICE_USERS["console"])
    for topic in (CONTROL_TOPIC, "_accord.governance", "ingest.ukhsa.positive-tests"):
        with pytest.raises(KafkaError, match="AuthorizationFailed"):
            _write(console, topic, b'{"kind": "revocation", "agreement": "t1-leicester"}')
