"""Accord's settings: the one place the environment is read (prefix ACCORD_)."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Literal

from pydantic import Field, SecretStr, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

KAFKA_VERSION = "4.3.1"
OPA_VERSION = "v1.22.2"
# The console's front end (npm, fetched at set-up into the cache) and the accessibility engine its tests inject.
GOVUK_FRONTEND_VERSION = "6.6.0"
AXE_CORE_VERSION = "4.14.1"


# schemas/, catalog/ and policies/ of the source tree this package sits in; a deployment names its own copies.
_SOURCE_ROOT = Path(__file__).resolve().parents[1]
Transport = Literal["kafka-python", "librdkafka"]  # the Kafka client a data path runs on


def _default_home() -> Path:
    cache = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(cache) / "accord"


class Settings(BaseSettings):
    """Where Accord keeps its cache and which services it talks to.

    `home` holds what is fetched or built once per machine (Kafka jars, the OPA binary) and, under
    `home/local`, the state of the services `accord local up` starts. `kafka_bootstrap` and `opa_url`,
    when set, point Accord at services someone else runs; nothing is started for them.
    """

    model_config = SettingsConfigDict(env_prefix="ACCORD_", extra="ignore")

    home: Path = Field(default_factory=_default_home)
    state_dir: Path | None = None
    kafka_bootstrap: str | None = None
    # How many brokers `accord local up` runs (`--brokers`); unset: as many as its state directory already has,
    # else one. A cluster's nodes are KRaft combined brokers and controllers on loopback (local/kafka_cluster.py).
    kafka_brokers: int | None = Field(default=None, ge=1, le=5)
    # The Kafka principal this process acts as. Unset with a local stack: the local admin (whose password
    # `accord local` keeps in the secrets dir); unset with an external Kafka: no authentication.
    kafka_username: str | None = None
    kafka_password: SecretStr | None = None
    kafka_password_file: Path | None = None
    kafka_security_protocol: str | None = None  # default SASL_PLAINTEXT with a user name, else PLAINTEXT
    opa_url: str | None = None
    opa_token_file: Path | None = None  # bearer token for an OPA with authentication; default: the local one
    # The public key gates and readers of the control topic trust; default: control-signing.pub in the secrets dir.
    control_public_key: Path | None = None
    registry_url: str | None = None
    api_url: str | None = None
    governance_url: str | None = None
    # Where people open the console (sign-in links name it); `accord local env` prints the local one.
    console_url: str | None = None
    # Where the console's front-end packages are (default: fetched into the cache by `accord local fetch`).
    console_assets: Path | None = None
    governance_tick_s: float = 1.0
    # How many days before an agreement's legal basis ends its parties are told (webhook), e.g. "14,3".
    legal_basis_notice_days: str = "14,3"
    # How long an ended delivery topic keeps its records (readers already refused) before they are deleted.
    fence_grace_s: float = 7 * 24 * 3600.0
    # The Kafka user the delivery fences act as, in the governance process (unset: fences are not kept).
    fences_kafka_username: str | None = None
    fences_kafka_password_file: Path | None = None
    # While anything is added, the audit chain is signed and anchored on the governance log at least this often.
    audit_checkpoint_every_s: float = Field(default=10.0, ge=0)
    # Networks webhooks may reach although not public, comma-separated (e.g. 127.0.0.1/32 for a receiver on loopback).
    webhook_allow: str = ""
    max_request_bytes: int = 1_048_576
    # Prometheus: every `accord ... serve` process also serves /metrics on this port without a token (unset: not
    # served; the service's own /metrics still takes a bearer token). Bind it to loopback or the private network
    # the scraper is on, never a public address: it is a credential that does not expire.
    metrics_port: int | None = Field(default=None, ge=0, le=65535)
    metrics_host: str = "127.0.0.1"
    kafka_version: str = KAFKA_VERSION
    opa_version: str = OPA_VERSION
    kafka_heap: str = "1g"
    start_timeout_s: float = 90.0
    # `accord local supervise`: a crashed local service is started again at once, then after waits doubling from
    # the first to the cap while it keeps dying; up this long, it is forgiven (domain/restart_policy.py).
    supervise_first_backoff_s: float = Field(default=1.0, gt=0)
    supervise_max_backoff_s: float = Field(default=30.0, gt=0)
    supervise_healthy_s: float = Field(default=30.0, gt=0)
    pseudonym_secret: SecretStr | None = None
    gate_worker_id: str | None = None
    # The gate worker's slot in its group: its transactional id is `<gate_group>-<slot>`, so a worker restarted in
    # the slot fences the transaction its crashed predecessor left open (domain/gate_slots.py).
    gate_slot: int = Field(default=0, ge=0)
    gate_workers: int = Field(default=1, ge=1)  # `accord gate serve` runs this many, in slots gate_slot, +1, ...
    gate_group: str = "accord-gate"
    gate_start_from: Literal["earliest", "latest"] = "earliest"
    # The Kafka client of each data path: librdkafka through confluent-kafka, or kafka-python; both are tested against
    # the real broker and measured side by side (`python -m benchmarks transports`, `... ingest`). The gate's path
    # consumes, transforms and produces in transactions; the API's produces each publish request's records (a keyed
    # request's records and key commit in a transaction on kafka-python whichever is chosen).
    gate_transport: Transport = "librdkafka"
    ingest_transport: Transport = "librdkafka"
    schemas_dir: Path = _SOURCE_ROOT / "schemas"     # the template streams' .avsc files
    catalog_dir: Path = _SOURCE_ROOT / "catalog"     # bodies, streams, agreements, ladder (YAML)
    policies_dir: Path = _SOURCE_ROOT / "policies"   # the Rego policies bundled for OPA
    # ONS LSOA-to-LAD lookup CSV (domain/residence.py); unset: the one of the vintage in geography_dir; "off" (or
    # an empty value): none, rows are routed by their LA code fields alone
    residence_lookup: Path | Literal["off"] | None = None

    @field_validator("residence_lookup", mode="before")
    @classmethod
    def _residence_off(cls, value: object) -> object:
        # An environment variable cannot be unset by a deployment that inherits it; "" or "off" turns it off.
        return "off" if isinstance(value, str) and value.strip().lower() in ("", "off", "none") else value

    @property
    def geography_dir(self) -> Path:
        """The ONS lookups rows are routed by (geography.yaml names the vintage in force)."""
        return self.catalog_dir / "geography"

    @property
    def local_dir(self) -> Path:
        """State of the locally started services (data, logs, pid files)."""
        return self.state_dir if self.state_dir is not None else self.home / "local"

    @property
    def secrets_dir(self) -> Path:
        """Secrets generated for the locally run services (mode 0600)."""
        return self.local_dir / "secrets"

    @property
    def kafka_libs(self) -> Path:
        return self.home / "kafka" / self.kafka_version / "libs"

    @property
    def console_assets_dir(self) -> Path:
        """node_modules holding govuk-frontend (and axe-core for the browser tests)."""
        if self.console_assets is not None:
            return self.console_assets
        versions = f"govuk-frontend-{GOVUK_FRONTEND_VERSION}-axe-{AXE_CORE_VERSION}"
        return self.home / "console" / versions / "node_modules"

    @property
    def opa_binary(self) -> Path:
        return self.home / "opa" / self.opa_version / "bin" / "opa"
