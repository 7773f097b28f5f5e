"""Delivery-topic fences on Kafka (services/fences.py's FenceAdmin): retention.ms, a DENY READ binding for every
principal on a fenced topic, and deleteRecords to the end of each partition."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from kafka import KafkaAdminClient, TopicPartition
from kafka.admin import (
    ACL,
    ACLFilter,
    ACLOperation,
    ACLPermissionType,
    ACLResourcePatternType,
    ConfigResource,
    ConfigResourceType,
    OffsetSpec,
    ResourcePattern,
    ResourcePatternFilter,
    ResourceType,
)
from kafka.errors import KafkaError

from broker.adapters.kafka_access import KafkaAccess
from broker.domain.topics import DELIVER_PREFIX
from broker.errors import ServiceError

# Every principal: a DENY binding beats any ALLOW, so a fenced topic's own subscriber is refused too. Kafka's super
# users (the local admin) are not checked against bindings at all.
EVERYONE = "User:*"
RETENTION = "retention.ms"


def _deny(topic: str) -> ACL:
    return ACL(principal=EVERYONE, host="*", operation=ACLOperation.READ, permission_type=ACLPermissionType.DENY,
               resource_pattern=ResourcePattern(ResourceType.TOPIC, topic, ACLResourcePatternType.LITERAL))


class KafkaFenceAdmin:
    """Needs ALTER on the cluster (bindings) and ALTER_CONFIGS, DESCRIBE_CONFIGS and DELETE on delivery topics."""

    def __init__(self, kafka: KafkaAccess, client_id: str = "accord-fences") -> None:
        try:
            self._admin = KafkaAdminClient(**kafka.client_options(), client_id=client_id)
        except KafkaError as exc:
            raise ServiceError(f"could not reach Kafka at {kafka} to keep delivery fences: {exc}") from exc

    def close(self) -> None:
        self._admin.close()

    def delivery_topics(self) -> Mapping[str, int | None]:
        topics = sorted(t for t in self._call(self._admin.list_topics, "list topics") if t.startswith(DELIVER_PREFIX))
        if not topics:
            return {}
        resources = [ConfigResource(ConfigResourceType.TOPIC, t, configs={RETENTION: None}) for t in topics]
        described = self._call(lambda: self._admin.describe_configs(resources), "describe delivery topics")
        entries = described.get("topic", {}) if isinstance(described, dict) else {}
        return {t: _retention(entries.get(t, {})) for t in topics}

    def fenced_topics(self) -> set[str]:
        every_topic = ResourcePatternFilter(ResourceType.TOPIC, None, ACLResourcePatternType.LITERAL)
        flt = ACLFilter(principal=EVERYONE, host="*", operation=ACLOperation.READ,
                        permission_type=ACLPermissionType.DENY, resource_pattern=every_topic)
        found, error = self._call(lambda: self._admin.describe_acls(flt), "list fenced topics")
        if error is not None and error.errno:
            raise ServiceError(f"Kafka could not list fenced topics: {error}")
        return {acl.resource_pattern.resource_name for acl in found
                if acl.resource_pattern.resource_name.startswith(DELIVER_PREFIX)}

    def set_retention(self, topic: str, retention_ms: int) -> None:
        resource = ConfigResource(ConfigResourceType.TOPIC, topic, configs={RETENTION: str(retention_ms)})
        self._call(lambda: self._admin.alter_configs([resource], incremental=True), f"set the retention of {topic}")

    def fence(self, topic: str) -> None:
        result = self._call(lambda: self._admin.create_acls([_deny(topic)]), f"fence {topic}")
        if result.get("failed"):
            raise ServiceError(f"Kafka refused to fence {topic}: {result['failed']}")

    def unfence(self, topic: str) -> None:
        deny = _deny(topic)
        flt = ACLFilter(principal=deny.principal, host=deny.host, operation=deny.operation,
                        permission_type=deny.permission_type,
                        resource_pattern=ResourcePatternFilter(ResourceType.TOPIC, topic,
                                                               ACLResourcePatternType.LITERAL))
        for _, _, error in self._call(lambda: self._admin.delete_acls([flt]), f"unfence {topic}"):
            if error.errno:
                raise ServiceError(f"Kafka could not unfence {topic}: {error}")

    def delete_records(self, topic: str) -> int:
        partitions = [TopicPartition(topic, p["partition_index"])
                      for t in self._call(lambda: self._admin.describe_topics([topic]), f"describe {topic}")
                      for p in t.get("partitions", [])]
        if not partitions:
            return 0
        latest = self._offsets(partitions, OffsetSpec.LATEST)
        earliest = self._offsets(partitions, OffsetSpec.EARLIEST)
        held = {tp: end for tp, end in latest.items() if end > earliest.get(tp, 0)}
        if held:
            self._call(lambda: self._admin.delete_records(held), f"delete the records of {topic}")
        return sum(end - earliest.get(tp, 0) for tp, end in held.items())

    def _offsets(self, partitions: list[TopicPartition], spec: OffsetSpec) -> dict[TopicPartition, int]:
        answer = self._call(lambda: self._admin.list_partition_offsets(dict.fromkeys(partitions, spec)),
                            "list offsets")
        return {tp: int(getattr(info, "offset", info)) for tp, info in answer.items()}

    @staticmethod
    def _call(action: Any, what: str) -> Any:
        try:
            return action()
        except KafkaError as exc:
            raise ServiceError(f"Kafka could not {what}: {exc}") from exc


def _retention(entries: Mapping[str, Any]) -> int | None:
    entry = entries.get(RETENTION)
    value = entry.get("value") if isinstance(entry, Mapping) else None
    return int(value) if value not in (None, "") else None
