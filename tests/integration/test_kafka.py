"""The real Kafka broker: idempotent round trip and transactional visibility with kafka-python."""

from __future__ import annotations

import uuid

from kafka import KafkaAdminClient, KafkaConsumer, KafkaProducer

from broker.adapters.kafka_access import KafkaAccess
from broker.adapters.kafka_admin import create_topics, describe_cluster, describe_topic_config
from broker.adapters.kafka_log import KafkaLog
from broker.domain.topics import CONTROL_TOPIC
from broker.local.stack import Endpoints


def _read_all(kafka: KafkaAccess, topic: str, isolation: str, expected: int) -> list[bytes]:
    consumer = KafkaConsumer(
        topic, **kafka.client_options(), group_id=None, auto_offset_reset="earliest",
        isolation_level=isolation, consumer_timeout_ms=3000,
    )
    values: list[bytes] = []
    try:
        for message in consumer:
            values.append(message.value)
            if len(values) >= expected:
                break
    finally:
        consumer.close()
    return values


def test_idempotent_producer_round_trip(services: Endpoints, topic: str) -> None:
    producer = KafkaProducer(**services.kafka.client_options(), acks="all", enable_idempotence=True)
    sent = [f"case-{i}".encode() for i in range(20)]
    for value in sent:
        producer.send(topic, value=value, key=b"E06000016")
    producer.flush()
    producer.close()
    assert _read_all(services.kafka, topic, "read_committed", len(sent)) == sent


def test_committed_transaction_is_visible_and_aborted_one_is_not(services: Endpoints, topic: str) -> None:
    producer = KafkaProducer(
        **services.kafka.client_options(), transactional_id=f"test-{uuid.uuid4().hex}",
        acks="all", enable_idempotence=True,
    )
    producer.init_transactions()
    producer.begin_transaction()
    producer.send(topic, b"committed-1")
    producer.commit_transaction()
    producer.begin_transaction()
    producer.send(topic, b"aborted")
    producer.flush()
    producer.abort_transaction()
    producer.begin_transaction()
    producer.send(topic, b"committed-2")
    producer.commit_transaction()
    producer.close()

    committed = _read_all(services.kafka, topic, "read_committed", 2)
    assert committed == [b"committed-1", b"committed-2"]
    # The aborted record is in the log: a read_uncommitted consumer sees it, so the filter above is real.
    everything = _read_all(services.kafka, topic, "read_uncommitted", 3)
    assert b"aborted" in everything


def test_kafka_log_publish_then_read_from_offset(services: Endpoints, topic: str) -> None:
    log = KafkaLog(services.kafka)
    try:
        first = log.publish(topic, b"first", headers=[("accord.stream", b"demo")])
        second = log.publish(topic, b"second", key=b"k")
        records = log.read(topic, max_records=5, start_offset=second[1], timeout_s=3)
    finally:
        log.close()
    assert second[1] == first[1] + 1
    assert [(r.key, r.value) for r in records] == [(b"k", b"second")]


def _replicas(kafka: KafkaAccess, topic: str) -> list[int]:
    admin = KafkaAdminClient(**kafka.client_options(), client_id="test-replicas")
    try:
        [described] = admin.describe_topics([topic])
    finally:
        admin.close()
    return [len(p["replica_nodes"]) for p in described["partitions"]]


def test_a_topic_on_a_single_node_keeps_one_copy_and_says_so(services: Endpoints) -> None:
    """The replication rule as the single-node test broker gets it: one replica and, set on the topic itself
    (whatever the caller's configs say), min.insync.replicas=1; on three brokers it would be 3 and 2."""
    assert len(describe_cluster(services.kafka).broker_ids) == 1, "this test knows the single-node rule only"
    name = f"test.replication.{uuid.uuid4().hex[:8]}"
    create_topics(services.kafka, [name], partitions=2, configs={"cleanup.policy": "compact",
                                                                 "min.insync.replicas": "3"})
    for topic in (name, CONTROL_TOPIC):  # the control topic: made by `accord local up`
        assert _replicas(services.kafka, topic) and set(_replicas(services.kafka, topic)) == {1}, topic
        assert describe_topic_config(services.kafka, topic).get("min.insync.replicas") == "1", topic
    assert describe_topic_config(services.kafka, name)["cleanup.policy"] == "compact"

