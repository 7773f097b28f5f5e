"""Who may do what on Kafka: the ACL bindings Accord keeps on the cluster, worked out from the catalog's bodies.

Default deny: the broker's authorizer refuses whatever no binding allows, so this module lists only allows. Every
body and every Accord service is its own SCRAM user:

- a publisher writes only its own ingest topics (`ingest.<body>.`; its streams are `<body>.<name>`) and reads its
  own quarantine topics, where the gate and the ingest API put the rows they refused;
- a subscriber reads only its own delivery topics (`deliver.<body>.`) in its own consumer groups (`<body>.`);
- the gate reads ingest topics and writes delivery and quarantine topics (and its status and audit records);
- the ingest API writes ingest and quarantine topics and reads quarantine topics (to show publishers theirs);
- the registry keeps its schema topic; the governance service its governance, audit and chain topics.

Accord's internal topics start with `_accord.`; a service's rights there are by prefix so that a deployment (or a
test) can run a second instance under its own topic names.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from enum import StrEnum

from broker.domain.topics import (
    AUDIT_TOPIC,
    CONTROL_TOPIC,
    DELIVER_PREFIX,
    GOVERNANCE_TOPIC,
    INGEST_PREFIX,
    QUARANTINE_PREFIX,
    SCHEMAS_TOPIC,
    STATUS_TOPIC,
    publisher_ingest_prefix,
    publisher_quarantine_prefix,
    subscriber_delivery_prefix,
)

ADMIN_USER = "accord.admin"
BROKER_USER = "accord.broker"  # the broker's own inter-broker SCRAM user, made when the storage is formatted
CONTROLLER_USER = "accord.controller"  # the KRaft controller listener's own PLAIN user, never a SCRAM user
SERVICE_USERS: Mapping[str, str] = {
    "gate": "accord.gate", "api": "accord.api", "registry": "accord.registry", "governance": "accord.governance",
    "fences": "accord.fences",
}
# Body ids match [A-Za-z][A-Za-z0-9_-]* (broker/domain/plans.py), so no body is ever called `accord.<anything>`.
SERVICE_PREFIX = "accord."


class Resource(StrEnum):
    TOPIC = "topic"
    GROUP = "group"
    TRANSACTIONAL_ID = "transactional-id"
    CLUSTER = "cluster"


class Op(StrEnum):
    READ = "read"
    WRITE = "write"
    CREATE = "create"
    DESCRIBE = "describe"
    DESCRIBE_CONFIGS = "describe-configs"
    ALTER = "alter"
    ALTER_CONFIGS = "alter-configs"
    DELETE = "delete"


@dataclass(frozen=True, order=True)
class Binding:
    """ALLOW `user` to `op` on `resource` named `name` (a prefix when `prefixed`)."""

    user: str
    resource: Resource
    name: str
    op: Op
    prefixed: bool = True

    def __str__(self) -> str:
        pattern = f"{self.name}*" if self.prefixed else self.name
        return f"User:{self.user} {self.op} {self.resource} {pattern}"


def _allow(user: str, resource: Resource, name: str, *ops: Op, prefixed: bool = True) -> list[Binding]:
    return [Binding(user, resource, name, op, prefixed) for op in ops]


def body_user(body: str) -> str:
    if body.startswith(SERVICE_PREFIX) or not body:
        raise ValueError(f"{body!r} is not a body id")
    return body


def body_bindings(body: str, publishes: bool, subscribes: bool) -> list[Binding]:
    """A body's rights: its own ingest and quarantine topics as a publisher, its own deliveries as a subscriber."""
    user = body_user(body)
    out: list[Binding] = []
    if publishes:
        out += _allow(user, Resource.TOPIC, publisher_ingest_prefix(body), Op.WRITE, Op.DESCRIBE)
        out += _allow(user, Resource.TOPIC, publisher_quarantine_prefix(body), Op.READ, Op.DESCRIBE)
        out += _allow(user, Resource.GROUP, f"{body}.", Op.READ)
    if subscribes:
        out += _allow(user, Resource.TOPIC, subscriber_delivery_prefix(body), Op.READ, Op.DESCRIBE)
        out += _allow(user, Resource.GROUP, f"{body}.", Op.READ)
    return sorted(set(out))


def service_bindings() -> list[Binding]:
    """Accord's own services; none of them can read a delivery topic, and none but the gate writes one."""
    gate, api, registry, governance = (SERVICE_USERS[s] for s in ("gate", "api", "registry", "governance"))
    out: list[Binding] = []
    # Every service creates the topics it needs at start-up (and the gate a subscriber's delivery topic on a new
    # grant), reading their config back; creating an existing topic is refused harmlessly.
    for user, prefixes in {
        gate: (INGEST_PREFIX, QUARANTINE_PREFIX, DELIVER_PREFIX, CONTROL_TOPIC, STATUS_TOPIC, AUDIT_TOPIC),
        api: (INGEST_PREFIX, QUARANTINE_PREFIX, AUDIT_TOPIC),
        registry: (SCHEMAS_TOPIC,),
        governance: (CONTROL_TOPIC, STATUS_TOPIC, GOVERNANCE_TOPIC, AUDIT_TOPIC),
    }.items():
        for prefix in prefixes:
            out += _allow(user, Resource.TOPIC, prefix, Op.CREATE, Op.DESCRIBE, Op.DESCRIBE_CONFIGS)
    out += _allow(gate, Resource.TOPIC, INGEST_PREFIX, Op.READ)
    out += _allow(gate, Resource.TOPIC, DELIVER_PREFIX, Op.WRITE)
    out += _allow(gate, Resource.TOPIC, QUARANTINE_PREFIX, Op.WRITE)
    out += _allow(gate, Resource.TOPIC, CONTROL_TOPIC, Op.READ)
    out += _allow(gate, Resource.TOPIC, STATUS_TOPIC, Op.WRITE)
    # The audit topic itself, not its prefix: `_accord.audit.chain` is the chainer's alone.
    out += _allow(gate, Resource.TOPIC, AUDIT_TOPIC, Op.WRITE, Op.DESCRIBE, prefixed=False)
    out += _allow(gate, Resource.GROUP, "accord-gate", Op.READ)
    out += _allow(gate, Resource.TRANSACTIONAL_ID, "accord-gate-", Op.WRITE, Op.DESCRIBE)

    out += _allow(api, Resource.TOPIC, INGEST_PREFIX, Op.WRITE)
    out += _allow(api, Resource.TOPIC, QUARANTINE_PREFIX, Op.READ, Op.WRITE)
    out += _allow(api, Resource.TOPIC, AUDIT_TOPIC, Op.WRITE, Op.DESCRIBE, prefixed=False)

    out += _allow(registry, Resource.TOPIC, SCHEMAS_TOPIC, Op.READ, Op.WRITE)

    out += _allow(governance, Resource.TOPIC, GOVERNANCE_TOPIC, Op.READ, Op.WRITE)
    out += _allow(governance, Resource.TOPIC, AUDIT_TOPIC, Op.READ, Op.WRITE)
    out += _allow(governance, Resource.TOPIC, CONTROL_TOPIC, Op.READ, Op.WRITE)
    out += _allow(governance, Resource.TOPIC, STATUS_TOPIC, Op.READ)
    out += _allow(governance, Resource.TOPIC, QUARANTINE_PREFIX, Op.READ, Op.DESCRIBE)
    out += _allow(governance, Resource.TRANSACTIONAL_ID, "accord-governance", Op.WRITE, Op.DESCRIBE)
    out += _allow(governance, Resource.TRANSACTIONAL_ID, "accord-audit-chainer-", Op.WRITE, Op.DESCRIBE)
    return sorted(set(out + fence_bindings()))


def fence_bindings() -> list[Binding]:
    """The delivery fences' own user (services/fences.py, run in the governance process): retention on delivery
    topics, deleting an ended topic's records, and the DENY binding that refuses its readers. Creating a binding
    needs ALTER on the cluster, a right that could grant any other; so it is this user's alone, not the governance
    user's, whose log and audit anchors it would otherwise put in reach. It reads nothing and writes only audit."""
    fences = SERVICE_USERS["fences"]
    return [*_allow(fences, Resource.TOPIC, DELIVER_PREFIX, Op.DESCRIBE, Op.DESCRIBE_CONFIGS, Op.ALTER_CONFIGS,
                    Op.DELETE),
            *_allow(fences, Resource.CLUSTER, "kafka-cluster", Op.ALTER, Op.DESCRIBE, prefixed=False),
            *_allow(fences, Resource.TOPIC, AUDIT_TOPIC, Op.WRITE, Op.DESCRIBE, prefixed=False)]


@dataclass(frozen=True)
class BodyRoles:
    """What the catalog says a body does on Kafka."""

    body: str
    publishes: bool
    subscribes: bool


def bodies_from_catalog(bodies: Iterable[str], streams: Iterable[str]) -> list[BodyRoles]:
    """Publishers are the bodies whose id prefixes a stream id. Any body may be granted a delivery, and only the
    gate writes delivery topics, so every body may read its own."""
    owners = {stream.split(".", 1)[0] for stream in streams}
    return [BodyRoles(body, body in owners, True) for body in sorted(set(bodies))]


def all_bindings(bodies: Iterable[BodyRoles]) -> list[Binding]:
    out = service_bindings()
    for b in bodies:
        out += body_bindings(b.body, b.publishes, b.subscribes)
    return sorted(set(out))


def users(bodies: Iterable[BodyRoles]) -> list[str]:
    """Every SCRAM user Accord keeps: its services and one per body (the admin is made when Kafka is formatted)."""
    return sorted({*SERVICE_USERS.values(), *(body_user(b.body) for b in bodies)})
