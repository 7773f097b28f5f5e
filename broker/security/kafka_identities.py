"""Kafka identities: one SCRAM user per Accord service, per publishing body and per role of a body, passwords on
disk (0600), ACLs in sync.

A password lives in `<secrets dir>/kafka/<user>.password` and nowhere else: not in a log line, not in an error
message (KafkaAccess holds it as a SecretStr), not in the environment of the services (they get the file's path).
"""

from __future__ import annotations

import secrets
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pydantic import SecretStr

from broker.adapters.kafka_access import KafkaAccess, read_password_file
from broker.adapters.kafka_security import KafkaSecurity
from broker.config import Settings
from broker.domain.kafka_acls import (
    ADMIN_USER,
    BROKER_USER,
    CONTROLLER_USER,
    SERVICE_USERS,
    all_bindings,
    bodies_from_catalog,
    subscriber_bindings,
    subscriber_user,
    users,
)
from broker.errors import ConfigError
from broker.security.secrets import write_private

PASSWORD_BYTES = 32
# Made when Kafka's storage is formatted, never by provisioning, so never retired by it either.
_FORMATTED_USERS = frozenset({ADMIN_USER, BROKER_USER, CONTROLLER_USER})


def password_path(secrets_dir: Path, user: str) -> Path:
    if not user or "/" in user or user.startswith("."):
        raise ConfigError(f"{user!r} is not a Kafka user name Accord makes")
    return secrets_dir / "kafka" / f"{user}.password"


def ensure_password(secrets_dir: Path, user: str) -> str:
    """The user's password, made on first use (created exclusively: two starters agree on one)."""
    path = password_path(secrets_dir, user)
    password = secrets.token_urlsafe(PASSWORD_BYTES)
    try:
        write_private(path, password, exclusive=True)
    except FileExistsError:
        return read_password_file(path)
    return password


def local_access(secrets_dir: Path, bootstrap: str, user: str = ADMIN_USER) -> KafkaAccess:
    """How `user` reaches a Kafka that `accord local` runs, with the password from the secrets dir."""
    return KafkaAccess.scram(bootstrap, user, read_password_file(password_path(secrets_dir, user)))


def kafka_access(settings: Settings, bootstrap: str) -> KafkaAccess:
    """The principal this process acts as (see Settings.kafka_username)."""
    if settings.kafka_username:
        if settings.kafka_password is not None:
            password = settings.kafka_password.get_secret_value()
        elif settings.kafka_password_file is not None:
            password = read_password_file(settings.kafka_password_file)
        else:
            raise ConfigError("ACCORD_KAFKA_USERNAME is set without ACCORD_KAFKA_PASSWORD(_FILE)")
        return KafkaAccess(bootstrap, settings.kafka_username, SecretStr(password),
                           settings.kafka_security_protocol or "SASL_PLAINTEXT")
    if settings.kafka_bootstrap:
        return KafkaAccess(bootstrap, security_protocol=settings.kafka_security_protocol or "PLAINTEXT")
    return local_access(settings.secrets_dir, bootstrap)


def service_env(settings: Settings, service: str) -> dict[str, str]:
    """What a locally started service needs to act as its own Kafka user: the name and the password's file (and,
    for the governance service, the delivery fences' user too)."""
    if settings.kafka_bootstrap:
        return {}  # an external Kafka: the services act as whoever this process's environment names
    user = SERVICE_USERS[service]
    env = {"ACCORD_KAFKA_USERNAME": user, "ACCORD_KAFKA_SECURITY_PROTOCOL": "SASL_PLAINTEXT",
           "ACCORD_KAFKA_PASSWORD_FILE": str(password_path(settings.secrets_dir, user))}
    if service == "governance":
        fences = SERVICE_USERS["fences"]
        env |= {"ACCORD_FENCES_KAFKA_USERNAME": fences,
                "ACCORD_FENCES_KAFKA_PASSWORD_FILE": str(password_path(settings.secrets_dir, fences))}
    return env


def fences_access(settings: Settings, bootstrap: str) -> KafkaAccess | None:
    """The delivery fences' Kafka user, when the settings name one."""
    if not (settings.fences_kafka_username and settings.fences_kafka_password_file):
        return None
    return KafkaAccess(bootstrap, settings.fences_kafka_username,
                       SecretStr(read_password_file(settings.fences_kafka_password_file)),
                       settings.kafka_security_protocol or "SASL_PLAINTEXT")


def subscriber_access(settings: Settings, kafka: KafkaAccess, body: str, role: str) -> KafkaAccess:
    """How one role of a subscribing body reads its deliveries from the Kafka `kafka` reaches: as its own login on
    a Kafka that `accord local` runs; on an external one, as `kafka` (its users are its operator's to keep)."""
    if settings.kafka_bootstrap:
        return kafka
    return local_access(settings.secrets_dir, kafka.bootstrap, subscriber_user(body, role))


@dataclass(frozen=True)
class Provisioned:
    users_created: tuple[str, ...]
    users_retired: tuple[str, ...]
    acls_created: int
    acls_deleted: int

    def describe(self) -> str:
        made = f"{len(self.users_created)} user(s) created" if self.users_created else "no new users"
        retired = f", {len(self.users_retired)} retired" if self.users_retired else ""
        return f"{made}{retired}; ACLs: {self.acls_created} added, {self.acls_deleted} removed"


def _made_here(secrets_dir: Path, user: str) -> bool:
    """Whether Accord made `user` (it keeps the password of every user it makes, and of no other)."""
    try:
        return password_path(secrets_dir, user).is_file()
    except ConfigError:
        return False


def provision(admin: KafkaAccess, secrets_dir: Path, catalog: dict[str, Any]) -> Provisioned:
    """Every Accord service, publisher and role of a body of the compiled `catalog` gets a SCRAM user (a password
    made if it has none yet) and exactly the ACLs of broker/domain/kafka_acls.py. Idempotent.

    A user Accord made that the catalog no longer calls for (a body or role dropped from it, or a body's single
    login from before logins were per role) loses its ACLs and its credential, and its password file goes: a
    login that reads nothing is still a login to steal. Users Accord did not make lose their ACLs only."""
    parties = bodies_from_catalog(catalog.get("bodies", {}), catalog.get("streams", {}))
    wanted = set(users(parties))
    with KafkaSecurity(admin) as security:
        existing = security.scram_users()
        created = sorted(wanted - existing)
        security.set_passwords({u: ensure_password(secrets_dir, u) for u in created})
        managed = (existing | wanted) - _FORMATTED_USERS
        added, removed = security.sync(all_bindings(parties), managed)
        retired = sorted(u for u in existing - wanted - _FORMATTED_USERS if _made_here(secrets_dir, u))
        security.delete_users(retired)
    for user in retired:
        password_path(secrets_dir, user).unlink(missing_ok=True)
    return Provisioned(tuple(created), tuple(retired), added, removed)


def rotate(admin: KafkaAccess, secrets_dir: Path, user: str) -> Path:
    """A new password for `user`, on the cluster first and then on disk; returns the file.

    Clients already connected stay connected (Kafka checks the password at authentication); a client that
    reconnects needs the new one. The admin's own password is changed the same way.
    """
    if user in (BROKER_USER, CONTROLLER_USER):
        raise ConfigError(f"{user} is the broker's own user: its password changes with `accord local down --wipe`")
    path = password_path(secrets_dir, user)
    if not path.exists():
        raise ConfigError(f"Accord keeps no Kafka password for {user!r} (no {path.name}); users are publishers "
                          "(<body>), roles of a body (<body>.<role>) and services (accord.gate, ...)")
    password = secrets.token_urlsafe(PASSWORD_BYTES)
    with KafkaSecurity(admin) as security:
        security.set_passwords({user: password})
    write_private(path, password)
    return path


def provision_role(admin: KafkaAccess, secrets_dir: Path, body: str, role: str) -> KafkaAccess:
    """One role of one body (a drill's) made a Kafka login with exactly its ACLs, no other user touched; how it
    reaches Kafka. `admin` must be a super user of a Kafka that `accord local` runs."""
    user = subscriber_user(body, role)
    with KafkaSecurity(admin) as security:
        security.set_passwords({user: ensure_password(secrets_dir, user)})
        security.sync(subscriber_bindings(body, role), [user])
    return local_access(secrets_dir, admin.bootstrap, user)


def retire_role(admin: KafkaAccess, secrets_dir: Path, body: str, role: str) -> None:
    """Undo `provision_role`: the login's ACLs and credential go, and its password file."""
    user = subscriber_user(body, role)
    with KafkaSecurity(admin) as security:
        security.sync([], [user])
        security.delete_users([user])
    password_path(secrets_dir, user).unlink(missing_ok=True)
