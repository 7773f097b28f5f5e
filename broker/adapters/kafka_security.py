"""SCRAM users and ACLs on the cluster, through kafka-python's admin client (as a super user)."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass

from kafka import KafkaAdminClient
from kafka.admin import (
    ACL,
    ACLFilter,
    ACLOperation,
    ACLPermissionType,
    ACLResourcePatternType,
    ResourcePattern,
    ResourcePatternFilter,
    ResourceType,
)
from kafka.admin._users import ScramMechanism, UserScramCredentialDeletion, UserScramCredentialUpsertion
from kafka.errors import KafkaError

from broker.adapters.kafka_access import KafkaAccess
from broker.domain.kafka_acls import Binding, Op, Resource
from broker.errors import ServiceError

_RESOURCE = {Resource.TOPIC: ResourceType.TOPIC, Resource.GROUP: ResourceType.GROUP,
             Resource.TRANSACTIONAL_ID: ResourceType.TRANSACTIONAL_ID, Resource.CLUSTER: ResourceType.CLUSTER}
_OP = {Op.READ: ACLOperation.READ, Op.WRITE: ACLOperation.WRITE, Op.CREATE: ACLOperation.CREATE,
       Op.DESCRIBE: ACLOperation.DESCRIBE, Op.DESCRIBE_CONFIGS: ACLOperation.DESCRIBE_CONFIGS,
       Op.ALTER: ACLOperation.ALTER, Op.ALTER_CONFIGS: ACLOperation.ALTER_CONFIGS, Op.DELETE: ACLOperation.DELETE}
# PBKDF2 iterations for the SCRAM credentials Accord creates (Kafka accepts 4096 to 16384).
SCRAM_ITERATIONS = 8192


def _acl(binding: Binding) -> ACL:
    pattern = ACLResourcePatternType.PREFIXED if binding.prefixed else ACLResourcePatternType.LITERAL
    return ACL(principal=f"User:{binding.user}", host="*", operation=_OP[binding.op],
               permission_type=ACLPermissionType.ALLOW,
               resource_pattern=ResourcePattern(_RESOURCE[binding.resource], binding.name, pattern))


@dataclass(frozen=True)
class SyncReport:
    users_created: tuple[str, ...]
    acls_created: int
    acls_deleted: int


class KafkaSecurity:
    """Applies users and bindings; `kafka` must be a super user (the local admin)."""

    def __init__(self, kafka: KafkaAccess) -> None:
        try:
            self._admin = KafkaAdminClient(**kafka.client_options(), client_id="accord-security")
        except KafkaError as exc:
            raise ServiceError(f"could not reach Kafka at {kafka} to manage users and ACLs: {exc}") from exc

    def close(self) -> None:
        self._admin.close()

    def __enter__(self) -> KafkaSecurity:
        return self

    def __exit__(self, *_: object) -> None:
        self.close()

    def scram_users(self) -> set[str]:
        try:
            described = self._admin.describe_user_scram_credentials()
        except KafkaError as exc:
            raise ServiceError(f"could not list Kafka's SCRAM users: {exc}") from exc
        return {user for user, info in described.items() if info.get("credential_infos")}

    def set_passwords(self, passwords: Mapping[str, str]) -> None:
        """Create or replace each user's SCRAM-SHA-512 credential."""
        if not passwords:
            return
        upserts = [UserScramCredentialUpsertion(user, ScramMechanism.SCRAM_SHA_512, password,
                                                iterations=SCRAM_ITERATIONS) for user, password in passwords.items()]
        self._check(self._admin.alter_user_scram_credentials(upserts), "set the SCRAM credential of")

    def delete_users(self, users: Iterable[str]) -> None:
        deletions = [UserScramCredentialDeletion(u, ScramMechanism.SCRAM_SHA_512) for u in users]
        if deletions:
            self._check(self._admin.alter_user_scram_credentials(deletions), "delete the SCRAM credential of")

    @staticmethod
    def _check(results: Mapping[str, str | None], what: str) -> None:
        failed = {user: error for user, error in results.items() if error}
        if failed:
            raise ServiceError(f"Kafka refused to {what} " + "; ".join(f"{u}: {e}" for u, e in sorted(failed.items())))

    def acls(self) -> set[ACL]:
        """Every binding on the cluster (the only DENY ones are delivery fences, on principal User:*)."""
        every = ACLFilter(principal=None, host=None, operation=ACLOperation.ANY,
                          permission_type=ACLPermissionType.ANY,
                          resource_pattern=ResourcePatternFilter(ResourceType.ANY, None, ACLResourcePatternType.ANY))
        try:
            found, _ = self._admin.describe_acls(every)
        except KafkaError as exc:
            raise ServiceError(f"could not list Kafka's ACLs: {exc}") from exc
        return set(found)

    def sync(self, bindings: Iterable[Binding], managed_users: Iterable[str]) -> tuple[int, int]:
        """Make the managed users' ACLs exactly `bindings`: create what is missing, delete what is no longer
        wanted (a body removed from the catalog, a right withdrawn). Returns (created, deleted)."""
        wanted = {_acl(b) for b in bindings}
        principals = {f"User:{u}" for u in managed_users}
        present = {acl for acl in self.acls() if acl.principal in principals}
        missing = sorted(wanted - present, key=repr)
        stale = sorted(present - wanted, key=repr)
        if missing:
            result = self._admin.create_acls(missing)
            if result["failed"]:
                raise ServiceError(f"Kafka refused {len(result['failed'])} ACL(s): {result['failed'][:3]}")
        if stale:
            for _, _, error in self._admin.delete_acls(stale):
                if error.errno:
                    raise ServiceError(f"Kafka could not delete an ACL: {error}")
        return len(missing), len(stale)
