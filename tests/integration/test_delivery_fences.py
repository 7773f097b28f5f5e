"""Revocation as a fence on the real Kafka: an agreement's end refuses its subscriber's reads of what was already
delivered at once, the records go after the grace, retention follows the agreement, and every step is audited.

The keeper runs as Accord's delivery-fences user (its real ACLs) and reads the real control topic; it is scoped to this
test's own delivery topic so that it never fences another test's topics on the shared cluster.
"""

from __future__ import annotations

import datetime as dt
import json
import uuid
from collections.abc import Callable, Iterator, Mapping
from typing import Any

import pytest
from kafka import KafkaConsumer, KafkaProducer, TopicPartition
from kafka.errors import TopicAuthorizationFailedError

from broker.adapters.kafka_access import KafkaAccess
from broker.adapters.kafka_admin import create_topics
from broker.adapters.kafka_control import ControlView, ControlWriter
from broker.adapters.kafka_fences import KafkaFenceAdmin
from broker.adapters.kafka_log import KafkaLog
from broker.config import Settings
from broker.domain.control import GRANT_PREFIX
from broker.domain.disputes import stamp
from broker.domain.kafka_acls import SERVICE_USERS, subscriber_user
from broker.domain.topics import AUDIT_TOPIC, delivery_topic
from broker.errors import ServiceError
from broker.local.stack import Endpoints
from broker.security.control_keys import trusted_keys
from broker.services.fences import FenceKeeper
from tests.conftest import control_writer

KafkaAs = Callable[[str], KafkaAccess]
LEICESTER = "leicester-city-council"
RUN = uuid.uuid4().hex[:8]
STREAM = f"ukhsa.fence-test-{RUN}"
TOPIC = delivery_topic(LEICESTER, "dph", STREAM)
AS_LEICESTER_DPH = subscriber_user(LEICESTER, "dph")  # the login that reads TOPIC
GRANT = f"fence-test-{RUN}"
GRACE = dt.timedelta(hours=6)


class OneTopic:
    """The real fence admin, seeing only this test's delivery topic."""

    def __init__(self, admin: KafkaFenceAdmin) -> None:
        self.admin = admin

    def delivery_topics(self) -> Mapping[str, int | None]:
        return {t: r for t, r in self.admin.delivery_topics().items() if t == TOPIC}

    def fenced_topics(self) -> set[str]:
        return self.admin.fenced_topics() & {TOPIC}

    def set_retention(self, topic: str, retention_ms: int) -> None:
        self.admin.set_retention(topic, retention_ms)

    def fence(self, topic: str) -> None:
        self.admin.fence(topic)

    def unfence(self, topic: str) -> None:
        self.admin.unfence(topic)

    def delete_records(self, topic: str) -> int:
        return self.admin.delete_records(topic)


def _grant(now: dt.datetime) -> dict[str, Any]:
    return {"id": GRANT, "subscriber": LEICESTER, "stream": STREAM, "valid_from": stamp(now - dt.timedelta(hours=1)),
            "valid_until": stamp(now + dt.timedelta(days=1)), "retention_s": 7200,
            "tiers": [{"name": "dph", "roles": ["dph"], "fields": {}, "other_fields": "drop"}]}


def _read(kafka: KafkaAccess) -> list[bytes]:
    """Everything on the topic, as Leicester's own login reads it; TopicAuthorizationFailedError if refused."""
    consumer = KafkaConsumer(**kafka.client_options(), group_id=None, consumer_timeout_ms=3000)
    try:
        partition = TopicPartition(TOPIC, 0)
        consumer.assign([partition])
        consumer.seek_to_beginning(partition)
        return [message.value for message in consumer]
    finally:
        consumer.close()


@pytest.fixture
def keeper(services: Endpoints, kafka_as: KafkaAs) -> Iterator[tuple[FenceKeeper, list[dict[str, Any]]]]:
    admin = KafkaFenceAdmin(kafka_as(SERVICE_USERS["fences"]))
    audited: list[dict[str, Any]] = []
    audit_log = ControlWriter(kafka_as(SERVICE_USERS["fences"]))

    def audit(kind: str, record: dict[str, Any]) -> None:
        audit_log.append(kind, record, topic=AUDIT_TOPIC)
        audited.append({"kind": kind, **record})

    try:
        yield FenceKeeper(OneTopic(admin), audit, GRACE), audited
    finally:
        admin.unfence(TOPIC)
        admin.close()
        audit_log.close()


def test_a_revoked_grant_fences_what_was_delivered_and_the_records_go_after_the_grace(
        services: Endpoints, kafka_as: KafkaAs, keeper: tuple[FenceKeeper, list[dict[str, Any]]]) -> None:
    fences, audited = keeper
    create_topics(services.kafka, [TOPIC])
    producer = KafkaProducer(**services.kafka.client_options(), acks="all")
    for n in range(3):
        producer.send(TOPIC, f"case {n}".encode()).get(timeout=10)
    producer.close()
    control = control_writer(services.kafka)
    view = ControlView(services.kafka, trusted_keys(Settings().secrets_dir))
    leicester = kafka_as(AS_LEICESTER_DPH)
    try:
        now = dt.datetime.now(dt.UTC)
        control.append(f"{GRANT_PREFIX}{GRANT}", _grant(now))
        fences.step(view.current(), now)
        assert KafkaFenceAdmin(services.kafka).delivery_topics()[TOPIC] == 7_200_000  # the grant's retention
        assert _read(leicester) == [b"case 0", b"case 1", b"case 2"]

        control.append(f"{GRANT_PREFIX}{GRANT}", None)  # withdrawn
        fences.step(view.current(), now)
        with pytest.raises(TopicAuthorizationFailedError):
            _read(leicester)
        assert KafkaLog(services.kafka).read(TOPIC, max_records=10, timeout_s=5)  # still held, within the grace

        fences.step(view.current(), now + GRACE)
        assert KafkaLog(services.kafka).read(TOPIC, max_records=10, timeout_s=3) == []

        control.append(f"{GRANT_PREFIX}{GRANT}", _grant(now))  # granted again: read access is back
        fences.step(view.current(), now + GRACE)
        assert _read(leicester) == []
    finally:
        control.append(f"{GRANT_PREFIX}{GRANT}", None)
        control.close()
        view.close()
    assert [(a["action"], a["topic"]) for a in audited] == [
        ("retention-set", TOPIC), ("read-refused", TOPIC), ("records-deleted", TOPIC), ("read-restored", TOPIC)]
    assert audited[2]["records"] == 3
    on_topic = [json.loads(r.value or b"{}") for r in KafkaLog(services.kafka).read(AUDIT_TOPIC, max_records=100_000,
                                                                                    timeout_s=5)]
    assert [e["action"] for e in on_topic if e.get("topic") == TOPIC] == [a["action"] for a in audited]


def test_a_subscriber_cannot_lift_its_own_fence(services: Endpoints, kafka_as: KafkaAs) -> None:
    create_topics(services.kafka, [TOPIC])
    with pytest.raises(ServiceError, match=r"(?i)authoriz"):
        KafkaFenceAdmin(kafka_as(AS_LEICESTER_DPH)).unfence(TOPIC)
