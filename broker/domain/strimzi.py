"""Strimzi resources for Accord's Kafka: a `KafkaTopic` for each topic Accord makes and a `KafkaUser` for each login
it keeps, with exactly the ACLs of domain/kafka_acls.py (`accord deploy render k8s`). Pure: values in, manifests out.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from broker.domain.kafka_acls import Binding, BodyRoles, Op, Resource, all_bindings, users

API_VERSION = "kafka.strimzi.io/v1"
CLUSTER_LABEL = "strimzi.io/cluster"
_OPERATIONS = {Op.READ: "Read", Op.WRITE: "Write", Op.CREATE: "Create", Op.DESCRIBE: "Describe",
               Op.DESCRIBE_CONFIGS: "DescribeConfigs", Op.ALTER: "Alter", Op.ALTER_CONFIGS: "AlterConfigs",
               Op.DELETE: "Delete"}
_RESOURCES = {Resource.TOPIC: "topic", Resource.GROUP: "group", Resource.TRANSACTIONAL_ID: "transactionalId",
              Resource.CLUSTER: "cluster"}
_DNS_SUBDOMAIN = re.compile(r"[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*")


@dataclass(frozen=True)
class Target:
    """Where the resources go: the Strimzi `Kafka` they belong to, its namespace and its replication."""

    cluster: str = "accord"
    namespace: str = "accord"
    replicas: int = 3
    min_insync: int = 2


@dataclass(frozen=True)
class TopicSpec:
    name: str
    partitions: int
    config: Mapping[str, str]


def resource_name(kafka_name: str) -> str:
    """A Kubernetes name for a Kafka topic or user name: itself when it is a DNS subdomain, else lower-cased with
    other characters replaced and a short hash of the real name appended (so two names never meet)."""
    if _DNS_SUBDOMAIN.fullmatch(kafka_name) and len(kafka_name) <= 253:
        return kafka_name
    cleaned = re.sub(r"[^a-z0-9.-]+", "-", kafka_name.lower()).strip("-.")
    return f"{cleaned[:240]}-{hashlib.sha256(kafka_name.encode()).hexdigest()[:8]}"


def _metadata(name: str, target: Target) -> dict[str, Any]:
    return {"name": name, "namespace": target.namespace, "labels": {CLUSTER_LABEL: target.cluster,
                                                                     "app.kubernetes.io/part-of": "accord"}}


def kafka_topic(topic: TopicSpec, target: Target) -> dict[str, Any]:
    # Every topic waits for as many in-sync copies as the cluster's replication gives (domain/replication.py
    # decides the same for topics Accord creates itself).
    config = {**topic.config, "min.insync.replicas": str(min(target.min_insync, target.replicas))}
    return {"apiVersion": API_VERSION, "kind": "KafkaTopic", "metadata": _metadata(resource_name(topic.name), target),
            "spec": {"topicName": topic.name, "partitions": topic.partitions, "replicas": target.replicas,
                     "config": config}}


def _acls(bindings: Iterable[Binding]) -> list[dict[str, Any]]:
    """One rule per resource pattern, with every operation allowed on it."""
    grouped: dict[tuple[Resource, str, bool], set[str]] = {}
    for b in bindings:
        grouped.setdefault((b.resource, b.name, b.prefixed), set()).add(_OPERATIONS[b.op])
    rules = []
    for (resource, name, prefixed), ops in sorted(grouped.items()):
        target: dict[str, Any] = {"type": _RESOURCES[resource]}
        if resource is not Resource.CLUSTER:
            target |= {"name": name, "patternType": "prefix" if prefixed else "literal"}
        rules.append({"type": "allow", "resource": target, "operations": sorted(ops), "host": "*"})
    return rules


def kafka_users(bodies: Iterable[BodyRoles], target: Target) -> list[dict[str, Any]]:
    """A SCRAM `KafkaUser` for every login Accord keeps (domain/kafka_acls.users), each with its ACLs alone."""
    parties = list(bodies)
    by_user: dict[str, list[Binding]] = {}
    for b in all_bindings(parties):
        by_user.setdefault(b.user, []).append(b)
    found = []
    for user in users(parties):
        name = resource_name(user)
        if name != user:
            raise ValueError(f"Kafka user {user!r} is not a Kubernetes name, and Strimzi names the user after its "
                             "KafkaUser: rename the body or role (lower-case letters, digits, '-' and '.')")
        found.append({"apiVersion": API_VERSION, "kind": "KafkaUser", "metadata": _metadata(name, target),
                      "spec": {"authentication": {"type": "scram-sha-512"},
                               "authorization": {"type": "simple", "acls": _acls(by_user.get(user, ()))}}})
    return found
