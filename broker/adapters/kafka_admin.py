"""Kafka cluster administration through kafka-python: readiness probe, topic creation, listing and deletion."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass

from kafka import KafkaAdminClient
from kafka.errors import KafkaError, TopicAlreadyExistsError, for_code

from broker.adapters.kafka_access import KafkaAccess
from broker.domain.replication import durability
from broker.errors import ServiceError


@dataclass(frozen=True)
class ClusterInfo:
    cluster_id: str
    broker_ids: tuple[int, ...]


def describe_cluster(kafka: KafkaAccess, timeout_ms: int = 3000) -> ClusterInfo:
    """The cluster behind `kafka`, or ServiceError if no broker answers (unfenced)."""
    try:
        admin = KafkaAdminClient(
            **kafka.client_options(), request_timeout_ms=timeout_ms, client_id="accord-probe"
        )
    except KafkaError as exc:
        raise ServiceError(f"no Kafka broker answers at {kafka}: {exc}") from exc
    try:
        info = admin.describe_cluster()
    except KafkaError as exc:
        raise ServiceError(f"Kafka at {kafka} did not describe its cluster: {exc}") from exc
    finally:
        admin.close()
    brokers = tuple(b["broker_id"] for b in info.get("brokers", []) if not b.get("is_fenced"))
    if not brokers:
        raise ServiceError(f"Kafka at {kafka} has no unfenced broker yet")
    return ClusterInfo(cluster_id=str(info.get("cluster_id")), broker_ids=brokers)


# Topics that are a trail, kept for ever (governance log, raw audit, audit chain); a compacted changelog (the
# registry's schemas). Named once here: `accord deploy render k8s` renders the same configurations.
TRAIL_TOPIC_CONFIG = {"retention.ms": "-1", "retention.bytes": "-1"}
CHANGELOG_TOPIC_CONFIG = {"cleanup.policy": "compact"}


def create_topics(
    kafka: KafkaAccess, names: Iterable[str], partitions: int = 1, configs: dict[str, str] | None = None
) -> None:
    """Create topics that do not exist yet, replicated as the cluster's size allows (domain/replication.py: three
    copies, two in sync, on three brokers or more; one on a single node), whatever `configs` says of it."""
    admin = KafkaAdminClient(**kafka.client_options(), client_id="accord-admin")
    try:
        copies = durability(len(describe_cluster(kafka).broker_ids))
        for name in names:
            try:
                admin.create_topics(
                    {name: {"num_partitions": partitions, "replication_factor": copies.replication_factor,
                            "configs": dict(configs or {}) | copies.topic_configs()}},
                    wait_for_metadata=True,
                )
            except TopicAlreadyExistsError:
                continue
            except KafkaError as exc:
                raise ServiceError(f"could not create topic {name!r}: {exc}") from exc
    finally:
        admin.close()


def create_partitioned_topics(kafka: KafkaAccess, counts: Mapping[str, int],
                              configs: dict[str, str] | None = None) -> dict[str, int]:
    """Create each topic of `counts` (topic → partitions) that does not exist yet with its count; an existing one
    is left as it is (domain/partitions.py: growing is an operator's choice). Returns every topic's count now."""
    by_count: dict[int, list[str]] = {}
    for name, count in counts.items():
        by_count.setdefault(count, []).append(name)
    for count, names in sorted(by_count.items()):
        create_topics(kafka, names, partitions=count, configs=configs)
    return topic_partitions(kafka, counts)


def topic_partitions(kafka: KafkaAccess, names: Iterable[str] | None = None) -> dict[str, int]:
    """The partition count of each of `names` that exists (None: of every topic)."""
    wanted = sorted(set(names)) if names is not None else None
    if wanted == []:
        return {}
    admin = KafkaAdminClient(**kafka.client_options(), client_id="accord-admin")
    try:
        described = admin.describe_topics(wanted)
    except KafkaError as exc:
        raise ServiceError(f"could not describe topics {wanted or 'of the cluster'}: {exc}") from exc
    finally:
        admin.close()
    return {str(t["name"]): len(t.get("partitions") or ()) for t in described
            if not t.get("error_code") and t.get("partitions")}


def grow_partitions(kafka: KafkaAccess, counts: Mapping[str, int]) -> None:
    """Give each existing topic of `counts` that many partitions in all (Kafka adds; it never takes away)."""
    if not counts:
        return
    admin = KafkaAdminClient(**kafka.client_options(), client_id="accord-admin")
    try:
        admin.create_partitions(dict(counts))
    except KafkaError as exc:
        raise ServiceError(f"could not add partitions to {sorted(counts)}: {exc}") from exc
    finally:
        admin.close()


def describe_topic_config(kafka: KafkaAccess, topic: str) -> dict[str, str]:
    """The topic's effective configuration (name → value)."""
    from kafka.admin import ConfigResource, ConfigResourceType

    admin = KafkaAdminClient(**kafka.client_options(), client_id="accord-admin")
    try:
        responses = admin.describe_configs([ConfigResource(ConfigResourceType.TOPIC, topic)])
    except KafkaError as exc:
        raise ServiceError(f"could not describe topic {topic!r}: {exc}") from exc
    finally:
        admin.close()
    entries = responses.get("topic", {}).get(topic, {}) if isinstance(responses, dict) else {}
    return {name: str(entry.get("value")) for name, entry in entries.items()}


Positions = dict[tuple[str, int], int]  # (topic, partition) -> offset


def end_positions(kafka: KafkaAccess, topics: Iterable[str]) -> Positions:
    """The end offset of every partition of `topics` now."""
    from kafka import KafkaConsumer, TopicPartition

    consumer = KafkaConsumer(**kafka.client_options(), group_id=None, client_id="accord-positions")
    try:
        partitions = [TopicPartition(t, p) for t in topics for p in sorted(consumer.partitions_for_topic(t) or ())]
        return {(tp.topic, tp.partition): int(end) for tp, end in consumer.end_offsets(partitions).items()}
    except KafkaError as exc:
        raise ServiceError(f"could not read the end offsets of {sorted(topics)}: {exc}") from exc
    finally:
        consumer.close()


def wait_consumed(kafka: KafkaAccess, group: str, since: Positions, timeout_s: float = 60.0) -> None:
    """Wait until consumer group `group` has committed every record written to the partitions of `since` after
    those positions (a group that started at `latest` commits nothing where nothing new arrived)."""
    import time

    ends = {key: end for key, end in end_positions(kafka, {t for t, _ in since}).items() if end > since.get(key, 0)}
    admin = KafkaAdminClient(**kafka.client_options(), client_id="accord-positions")
    try:
        deadline = time.monotonic() + timeout_s
        while True:
            committed = admin.list_group_offsets(group).get(group, {})
            done = {(tp.topic, tp.partition): int(meta.offset) for tp, meta in committed.items()}
            if all(done.get(key, -1) >= end for key, end in ends.items()):
                return
            if time.monotonic() > deadline:
                raise ServiceError(f"consumer group {group} did not commit past {ends} within {timeout_s:.0f}s")
            time.sleep(0.05)
    except KafkaError as exc:
        raise ServiceError(f"could not read the offsets of consumer group {group}: {exc}") from exc
    finally:
        admin.close()


def align_topic_config(kafka: KafkaAccess, topic: str, configs: dict[str, str]) -> bool:
    """Give an existing topic `configs` (IncrementalAlterConfigs: other settings stay) when its effective
    configuration differs; True if it was changed. Needs ALTER_CONFIGS on the topic (the administrator)."""
    from kafka.admin import ConfigResource, ConfigResourceType

    current = describe_topic_config(kafka, topic)
    if all(current.get(name) == value for name, value in configs.items()):
        return False
    admin = KafkaAdminClient(**kafka.client_options(), client_id="accord-admin")
    try:
        answer = admin.alter_configs([ConfigResource(ConfigResourceType.TOPIC, topic, configs=dict(configs))],
                                     incremental=True)
    except KafkaError as exc:
        raise ServiceError(f"could not configure topic {topic!r}: {exc}") from exc
    finally:
        admin.close()
    outcome = answer.get("topic", {}).get(topic) if isinstance(answer, dict) else None
    errno = getattr(outcome, "errno", None)
    if isinstance(outcome, BaseException) or errno:
        raise ServiceError(f"Kafka refused to configure topic {topic!r}: {outcome}")
    return True


def list_topics(kafka: KafkaAccess) -> set[str]:
    """Every topic of the cluster that the principal may describe."""
    admin = KafkaAdminClient(**kafka.client_options(), client_id="accord-admin")
    try:
        return {str(name) for name in admin.list_topics()}
    except KafkaError as exc:
        raise ServiceError(f"could not list the topics of {kafka}: {exc}") from exc
    finally:
        admin.close()


def delete_topics(kafka: KafkaAccess, names: Iterable[str], timeout_ms: int = 30_000) -> dict[str, str]:
    """Delete the topics `names` (and their data); why, for each one the cluster did not delete. Needs DELETE on
    them (the administrator)."""
    wanted = sorted(set(names))
    if not wanted:
        return {}
    admin = KafkaAdminClient(**kafka.client_options(), client_id="accord-admin")
    try:
        answer = admin.delete_topics(wanted, timeout_ms=timeout_ms, raise_errors=False)
    except KafkaError as exc:
        return dict.fromkeys(wanted, f"the cluster did not answer: {exc}")
    finally:
        admin.close()
    failed = {}
    for topic in answer.get("topics") or ():
        code = int(topic.get("error_code") or 0)
        if code:
            failed[str(topic.get("name"))] = str(topic.get("error_message") or for_code(code).__name__)
    return failed
