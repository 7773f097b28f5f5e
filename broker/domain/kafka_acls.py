"""Who may do what on Kafka: the ACL bindings Accord keeps on the cluster, worked out from the catalog's bodies.

Default deny: the broker's authorizer refuses whatever no binding allows, so this module lists only allows. Every
Accord service, every publishing body and every role of a body is its own SCRAM user:

- a publisher (`<body>`) writes only its own ingest topics (`ingest.<body>.`; its streams are `<body>.<name>`) and
  reads its own quarantine topics, where the gate and the ingest API put the rows they refused. A stream is owned
  by a body and the catalog names no publishing role, so a body publishes under one login;
- a subscriber's role (`<body>.<role>`) reads only that role's delivery topics (`deliver.<body>.<role>.`) in its
  own consumer groups (`<body>.<role>.`): a body's analysts never read what its DPH receives;
- the gate reads ingest topics and writes delivery and quarantine topics (and its status and audit records);
- the ingest API writes ingest and quarantine topics and reads quarantine topics (to show publishers theirs),
  delivery topics (a subscriber's pulls) and the control topic (whose rights have ended);
- the registry keeps its schema topic (one fenced writer at a time); the governance service its governance, audit
  and chain topics;
- the National Data Opt-out list (`_accord.optout`, keyed hashes of NHS numbers) is written by its own privileged
  user (`accord.optout`, the one `accord optout load` runs as) and read by the gate alone.

Accord's internal topics start with `_accord.`; a service's rights there are by prefix so that a deployment (or a
test) can run a second instance under its own topic names.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from enum import StrEnum
from typing import Any

from broker.domain.topics import (
    AUDIT_TOPIC,
    BACKFILL_TOPIC,
    CHAIN_TOPIC,
    CONTROL_TOPIC,
    DELIVER_PREFIX,
    GOVERNANCE_TOPIC,
    INGEST_PREFIX,
    INGEST_REQUESTS_TOPIC,
    OPTOUT_TOPIC,
    QUARANTINE_PREFIX,
    SCHEMAS_TOPIC,
    STATUS_TOPIC,
    publisher_ingest_prefix,
    publisher_quarantine_prefix,
    role_delivery_prefix,
)

ADMIN_USER = "accord.admin"
BROKER_USER = "accord.broker"  # the broker's own inter-broker SCRAM user, made when the storage is formatted
CONTROLLER_USER = "accord.controller"  # the KRaft controller listener's own PLAIN user, never a SCRAM user
SERVICE_USERS: Mapping[str, str] = {
    "gate": "accord.gate", "api": "accord.api", "registry": "accord.registry", "governance": "accord.governance",
    "fences": "accord.fences", "optout": "accord.optout", "console": "accord.console",
}
SERVICE_PREFIX = "accord."
CLUSTER_NAME = "kafka-cluster"  # the one name Kafka gives its cluster resource in ACLs
INGEST_TRANSACTIONAL_PREFIX = "accord-ingest-"  # the API's writers of keyed (idempotent) publish requests
# Ids as broker/domain/plans.py holds them (the catalog's are narrower: kebab-case). Neither holds a dot, so
# `<body>.<role>` names exactly one role of one body, and a role's topic prefix `deliver.<body>.<role>.` reaches no
# other role's; nor a comma or `=`, the two characters a SCRAM user name has to escape (RFC 5802, saslname).
_BODY = re.compile(r"[A-Za-z][A-Za-z0-9_-]*")
_ROLE = re.compile(r"[A-Za-z0-9][A-Za-z0-9_-]*")


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


def _body(body: str) -> str:
    # A body called `accord` would have its roles' users inside the services' name space (`accord.gate`).
    if not _BODY.fullmatch(body) or f"{body}." == SERVICE_PREFIX:
        raise ValueError(f"{body!r} is not a body id Accord can make a Kafka user for")
    return body


def publisher_user(body: str) -> str:
    """The one login a publishing body writes its streams with."""
    return _body(body)


def subscriber_user(body: str, role: str) -> str:
    """The login of one role of a subscribing body; it reads that role's deliveries and nothing else."""
    if not _ROLE.fullmatch(role):
        raise ValueError(f"{role!r} is not a role id Accord can make a Kafka user for")
    return f"{_body(body)}.{role}"


def publisher_bindings(body: str) -> list[Binding]:
    """A publisher writes its own ingest topics and reads its own quarantine topics. It reads them by partition,
    without a consumer group: a group prefix `<body>.` would reach into its roles' groups (`<body>.<role>.`)."""
    user = publisher_user(body)
    out = _allow(user, Resource.TOPIC, publisher_ingest_prefix(body), Op.WRITE, Op.DESCRIBE)
    out += _allow(user, Resource.TOPIC, publisher_quarantine_prefix(body), Op.READ, Op.DESCRIBE)
    return sorted(set(out))


def subscriber_bindings(body: str, role: str) -> list[Binding]:
    """One role of a subscriber reads its own delivery topics, in consumer groups named after its login."""
    user = subscriber_user(body, role)
    out = _allow(user, Resource.TOPIC, role_delivery_prefix(body, role), Op.READ, Op.DESCRIBE)
    out += _allow(user, Resource.GROUP, f"{user}.", Op.READ)
    return sorted(set(out))


def service_bindings() -> list[Binding]:
    """Accord's own services; none but the gate writes a delivery topic, and none but the API (the pull API, for the
    subscriber whose token it verified) reads one."""
    gate, api, registry, governance = (SERVICE_USERS[s] for s in ("gate", "api", "registry", "governance"))
    out: list[Binding] = []
    # Every service creates the topics it needs at start-up (and the gate a subscriber's delivery topic on a new
    # grant), reading their config back; creating an existing topic is refused harmlessly.
    for user, prefixes in {
        gate: (INGEST_PREFIX, QUARANTINE_PREFIX, DELIVER_PREFIX, CONTROL_TOPIC, STATUS_TOPIC, AUDIT_TOPIC,
               BACKFILL_TOPIC),
        api: (INGEST_PREFIX, QUARANTINE_PREFIX, AUDIT_TOPIC, INGEST_REQUESTS_TOPIC),
        registry: (SCHEMAS_TOPIC,),
        governance: (CONTROL_TOPIC, STATUS_TOPIC, GOVERNANCE_TOPIC, AUDIT_TOPIC),
    }.items():
        for prefix in prefixes:
            out += _allow(user, Resource.TOPIC, prefix, Op.CREATE, Op.DESCRIBE, Op.DESCRIBE_CONFIGS)
    out += _allow(gate, Resource.TOPIC, INGEST_PREFIX, Op.READ)
    out += _allow(gate, Resource.TOPIC, DELIVER_PREFIX, Op.WRITE)
    out += _allow(gate, Resource.TOPIC, QUARANTINE_PREFIX, Op.WRITE)
    out += _allow(gate, Resource.TOPIC, CONTROL_TOPIC, Op.READ)
    out += _allow(gate, Resource.TOPIC, OPTOUT_TOPIC, Op.READ, Op.CREATE, Op.DESCRIBE, Op.DESCRIBE_CONFIGS)
    out += _allow(gate, Resource.TOPIC, STATUS_TOPIC, Op.WRITE)
    # The audit topic itself, not its prefix: `_accord.audit.chain` is the chainer's alone.
    out += _allow(gate, Resource.TOPIC, AUDIT_TOPIC, Op.WRITE, Op.DESCRIBE, prefixed=False)
    # History on a new grant: the gate marks where live delivery began and writes the replay's progress there.
    out += _allow(gate, Resource.TOPIC, BACKFILL_TOPIC, Op.READ, Op.WRITE, prefixed=False)
    out += _allow(gate, Resource.GROUP, "accord-gate", Op.READ)
    out += _allow(gate, Resource.TRANSACTIONAL_ID, "accord-gate-", Op.WRITE, Op.DESCRIBE)

    out += _allow(api, Resource.TOPIC, INGEST_PREFIX, Op.WRITE)
    out += _allow(api, Resource.TOPIC, QUARANTINE_PREFIX, Op.READ, Op.WRITE)
    out += _allow(api, Resource.TOPIC, AUDIT_TOPIC, Op.WRITE, Op.DESCRIBE, prefixed=False)
    # Idempotent publishing: the keys already answered, written in one transaction with the records they published,
    # under transactional ids every API instance shares (so the broker fences a concurrent retry's other writer).
    out += _allow(api, Resource.TOPIC, INGEST_REQUESTS_TOPIC, Op.READ, Op.WRITE, prefixed=False)
    out += _allow(api, Resource.TRANSACTIONAL_ID, INGEST_TRANSACTIONAL_PREFIX, Op.WRITE, Op.DESCRIBE)
    # The pull API reads a subscriber's deliveries for it (the topic from the caller's verified token), and the
    # control topic to refuse a right that has ended. A fenced topic's DENY binding refuses this user too.
    out += _allow(api, Resource.TOPIC, DELIVER_PREFIX, Op.READ, Op.DESCRIBE)
    out += _allow(api, Resource.TOPIC, CONTROL_TOPIC, Op.READ, Op.DESCRIBE, prefixed=False)
    # Receipts: the keys bodies registered are events on the governance log (no more than the API's own service
    # token may read over the governance API).
    out += _allow(api, Resource.TOPIC, GOVERNANCE_TOPIC, Op.READ, Op.DESCRIBE, prefixed=False)

    out += _allow(registry, Resource.TOPIC, SCHEMAS_TOPIC, Op.READ, Op.WRITE)
    # One transactional id per schemas topic, shared by every registry instance so that the broker fences all
    # writers but the newest (broker/adapters/kafka_changelog.py).
    out += _allow(registry, Resource.TRANSACTIONAL_ID, "accord-registry", Op.WRITE, Op.DESCRIBE)

    out += _allow(governance, Resource.TOPIC, GOVERNANCE_TOPIC, Op.READ, Op.WRITE)
    out += _allow(governance, Resource.TOPIC, AUDIT_TOPIC, Op.READ, Op.WRITE)
    out += _allow(governance, Resource.TOPIC, CONTROL_TOPIC, Op.READ, Op.WRITE)
    out += _allow(governance, Resource.TOPIC, STATUS_TOPIC, Op.READ)
    out += _allow(governance, Resource.TOPIC, BACKFILL_TOPIC, Op.READ, Op.DESCRIBE, prefixed=False)
    out += _allow(governance, Resource.TOPIC, QUARANTINE_PREFIX, Op.READ, Op.DESCRIBE)
    out += _allow(governance, Resource.TRANSACTIONAL_ID, "accord-governance", Op.WRITE, Op.DESCRIBE)
    out += _allow(governance, Resource.TRANSACTIONAL_ID, "accord-audit-chainer-", Op.WRITE, Op.DESCRIBE)
    return sorted(set(out + fence_bindings() + optout_bindings() + console_bindings()))


def optout_bindings() -> list[Binding]:
    """The opt-out list's writer: it keeps `_accord.optout` (reads it to replace the list whole) and nothing else."""
    user = SERVICE_USERS["optout"]
    return _allow(user, Resource.TOPIC, OPTOUT_TOPIC, Op.READ, Op.WRITE, Op.CREATE, Op.DESCRIBE, Op.DESCRIBE_CONFIGS)


def console_bindings() -> list[Binding]:
    """The console reads, and never writes: the governance log (the transparency figures), the audit chain with its
    anchors (the chain's verification status), and, as the pull API does, a signed-in subscriber's own deliveries
    (the topic from the person's verified body and role) and the control topic to refuse a right that has ended; as
    the ingest API does, the quarantine topics (a publisher's own, and a subscriber's own refused rows)."""
    console = SERVICE_USERS["console"]
    out: list[Binding] = []
    for topic in (GOVERNANCE_TOPIC, CHAIN_TOPIC, CONTROL_TOPIC):
        out += _allow(console, Resource.TOPIC, topic, Op.READ, Op.DESCRIBE, prefixed=False)
    out += _allow(console, Resource.TOPIC, DELIVER_PREFIX, Op.READ, Op.DESCRIBE)
    # The Publisher page: a signed-in publisher's own quarantined rows, as the ingest API reads them.
    out += _allow(console, Resource.TOPIC, QUARANTINE_PREFIX, Op.READ, Op.DESCRIBE)
    # The delivery lag: the gate group's committed offsets on the ingest topics, and those topics' ends.
    out += _allow(console, Resource.TOPIC, INGEST_PREFIX, Op.DESCRIBE)
    out += _allow(console, Resource.GROUP, "accord-gate", Op.DESCRIBE)
    return out


def fence_bindings() -> list[Binding]:
    """The delivery fences' own user (services/fences.py, run in the governance process): retention on delivery
    topics, deleting an ended topic's records, and the DENY binding that refuses its readers. Creating a binding
    needs ALTER on the cluster, a right that could grant any other; so it is this user's alone, not the governance
    user's, whose log and audit anchors it would otherwise put in reach. It reads nothing and writes only audit."""
    fences = SERVICE_USERS["fences"]
    return [*_allow(fences, Resource.TOPIC, DELIVER_PREFIX, Op.DESCRIBE, Op.DESCRIBE_CONFIGS, Op.ALTER_CONFIGS,
                    Op.DELETE),
            *_allow(fences, Resource.CLUSTER, CLUSTER_NAME, Op.ALTER, Op.DESCRIBE, prefixed=False),
            *_allow(fences, Resource.TOPIC, AUDIT_TOPIC, Op.WRITE, Op.DESCRIBE, prefixed=False)]


@dataclass(frozen=True)
class BodyRoles:
    """What the catalog says a body does on Kafka: publish (its own streams), and receive under each of `roles`."""

    body: str
    publishes: bool
    roles: tuple[str, ...]


def bodies_from_catalog(bodies: Mapping[str, Mapping[str, Any]], streams: Iterable[str]) -> list[BodyRoles]:
    """Publishers are the bodies whose id prefixes a stream id. A delivery goes to a role the body holds (an
    agreement's tier, a dispute's grant or a break-glass names one), and only the gate writes delivery topics, so
    every role a body holds may read its own."""
    owners = {stream.split(".", 1)[0] for stream in streams}
    return [BodyRoles(body, body in owners, tuple(sorted(set(bodies[body].get("roles") or ()))))
            for body in sorted(bodies)]


def all_bindings(bodies: Iterable[BodyRoles]) -> list[Binding]:
    out = service_bindings()
    for b in bodies:
        if b.publishes:
            out += publisher_bindings(b.body)
        for role in b.roles:
            out += subscriber_bindings(b.body, role)
    return sorted(set(out))


def users(bodies: Iterable[BodyRoles]) -> list[str]:
    """Every SCRAM user Accord keeps: its services, each publisher and each role of each body (the admin and the
    broker's own user are made when Kafka is formatted)."""
    found = set(SERVICE_USERS.values())
    for b in bodies:
        if b.publishes:
            found.add(publisher_user(b.body))
        found.update(subscriber_user(b.body, role) for role in b.roles)
    return sorted(found)
