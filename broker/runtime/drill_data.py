"""The deployment as a drill's records reach it (services/drill_streams.DrillData): the schema registry, the ingest
API (as the stream's publisher, with a short-lived token), the delivery topics read as the drill's Kafka principal
and decoded with the registry, the gate group's positions, the control topic's records and the gates' reports of
applying them."""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping, Sequence
from typing import Any

from broker.adapters.ingest_http import IngestApi
from broker.adapters.kafka_access import KafkaAccess
from broker.adapters.kafka_admin import end_positions
from broker.adapters.kafka_control import control_end, control_record
from broker.adapters.kafka_gate_lag import GateLag
from broker.adapters.kafka_log import KafkaLog
from broker.adapters.registry_http import HttpSchemaRegistry
from broker.clock import Clock, system_clock
from broker.config import Settings
from broker.demo.synthetic import for_area
from broker.domain.geography_files import load_la_table
from broker.domain.ladder import Actor
from broker.domain.trusts import TrustTable, load_trust_table
from broker.errors import DeliveryRefused, NotFoundError, ServiceError
from broker.runtime.deliveries import DeliveryReader
from broker.security import api_tokens
from broker.security.kafka_identities import provision_role, retire_role
from broker.services import policy_changes
from broker.services.ingest import load_stream_schemas
from broker.services.stream_schemas import StreamSchemas, schema_text

TOKEN_TTL = dt.timedelta(minutes=15)


class DeploymentData:
    def __init__(self, settings: Settings, kafka: KafkaAccess, api_url: str, registry_url: str,
                 operator: Actor, clock: Clock = system_clock) -> None:
        self._key, self._clock, self._kafka = api_tokens.signing_key(settings.secrets_dir), clock, kafka
        self._schemas_dir, self._geography_dir = settings.schemas_dir, settings.geography_dir
        self._trusts: TrustTable | None = None
        service = api_tokens.ServiceTokens(settings.secrets_dir, "drill", clock)
        # Accord's service reads any schema; the operator registers the twin's, as `accord catalog apply` does.
        self._registry = HttpSchemaRegistry(registry_url, token=service)
        self._registrar = HttpSchemaRegistry(registry_url, token=lambda: self._token(operator))
        self._ingest = IngestApi(api_url)
        self._reader = DeliveryReader(kafka, registry_url, service, client_id="accord-drill")
        self._service, self._registry_url, self._secrets_dir = service, registry_url, settings.secrets_dir
        self._external = bool(settings.kafka_bootstrap)
        self._logins: dict[tuple[str, str], DeliveryReader] = {}
        self._accesses: dict[str, KafkaAccess] = {}
        self._status = KafkaLog(kafka, client_id="accord-drill-status")
        self._lag = GateLag(kafka, settings.gate_group, client_id="accord-drill-lag")

    def _token(self, actor: Actor) -> str:
        return api_tokens.issue(self._key, actor.body, actor.role, actor.person, TOKEN_TTL, self._clock())

    def stream_schema(self, catalog: Mapping[str, Any], stream: str) -> dict[str, Any]:
        """The registry's schema of the stream; the shipped template's (ACCORD_SCHEMAS_DIR) when a catalog was
        applied without registering it and nothing has been published on it yet."""
        try:
            schema = StreamSchemas(lambda: catalog, self._registry).lookup(stream)
        except NotFoundError:
            schema = load_stream_schemas(self._schemas_dir).get(stream)
        if schema is None:
            raise ServiceError(f"no schema of stream {stream} in the registry or in {self._schemas_dir}")
        return schema

    def register(self, subject: str, schema: Mapping[str, Any]) -> int:
        return self._registrar.register(subject, schema_text(schema))

    def synthetic(self, stream: str, area: str, upper_tier: str, count: int, prefix: str, seed: int,
                  avoiding: Sequence[str] = ()) -> list[dict[str, Any]] | None:
        yesterday = self._clock().date() - dt.timedelta(days=1)
        if self._trusts is None:  # read once, when a drill first makes rows
            self._trusts = load_trust_table(self._geography_dir, load_la_table(self._geography_dir))
        return for_area(stream, area, upper_tier, yesterday, count, prefix, seed, self._trusts, avoiding)

    def publish(self, stream: str, publisher: Actor, records: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
        return self._ingest.publish(stream, self._token(publisher), records)

    def delivered(self, topic: str, reader: tuple[str, str] | None = None
                  ) -> list[tuple[dict[str, Any], dict[str, bytes]]]:
        if not end_positions(self._kafka, [topic]):
            return []
        chosen = self._reader if reader is None else self._logins.get(reader, self._reader)
        if chosen is not self._reader and not self._visible(chosen, topic):
            raise DeliveryRefused(f"Kafka does not let {chosen.login} read {topic}, which holds its deliveries: "
                                  "its ACLs do not cover its own delivery topics (`accord kafka acls --user "
                                  f"{chosen.login}` lists them)")
        return [(d.value, d.headers) for d in chosen.read(topic, 0, lambda *_: True, want=0, timeout_s=0,
                                                          settle_s=0)]

    def _visible(self, reader: DeliveryReader, topic: str) -> bool:
        """Whether the reader's login sees `topic` at all (Kafka hides a topic a login may not describe)."""
        try:
            return bool(end_positions(self._accesses[reader.login], [topic]))
        except ServiceError:
            return False

    def login(self, subscriber: str, role: str) -> str:
        if self._external:
            return "the drill's principal (an external Kafka's users are its operator's to keep)"
        access = provision_role(self._kafka, self._secrets_dir, subscriber, role)
        self._accesses[str(access.username)] = access
        self._logins[subscriber, role] = DeliveryReader(access, self._registry_url, self._service,
                                                        client_id=f"accord-drill-{subscriber}-{role}")
        return f"its own Kafka login {access.username}"

    def retire_login(self, subscriber: str, role: str) -> None:
        reader = self._logins.pop((subscriber, role), None)
        if reader is not None:
            reader.close()
            retire_role(self._kafka, self._secrets_dir, subscriber, role)

    def gate_behind(self, stream: str) -> int | None:
        return self._lag(stream)

    def enforced_at_ms(self, control_offset: int, timeout_s: float) -> int | None:
        change = policy_changes.Announced("", control_offset, 0)
        try:
            first = policy_changes.enforcement(self._status, change, workers=1, timeout_s=timeout_s)[0]
        except ServiceError:
            return None
        return int(first["applied_ms"])

    def control_end(self) -> int:
        return control_end(self._kafka, client_id="accord-drill-control")

    def control_written(self, key: str, since: int, timeout_s: float) -> dict[str, int] | None:
        found = control_record(self._kafka, key, since, timeout_s, client_id="accord-drill-control")
        return None if found is None else {"offset": found.offset, "timestamp_ms": found.timestamp_ms}

    def close(self) -> None:
        for subscriber, role in list(self._logins):
            self.retire_login(subscriber, role)
        self._reader.close()
        self._status.close()
        self._ingest.close()
        self._registry.close()
        self._registrar.close()
