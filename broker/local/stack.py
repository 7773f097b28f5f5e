"""`accord local`: bring the local Kafka and OPA up, report them, print their endpoints, bring them down."""

from __future__ import annotations

import json
import shutil
from dataclasses import asdict, dataclass

from broker.adapters.kafka_admin import describe_cluster
from broker.config import Settings
from broker.errors import ServiceError
from broker.local import kafka_server, opa_server, processes, registry_server, toolchain


@dataclass(frozen=True)
class ServiceState:
    """One service as `accord local status` reports it."""

    name: str
    endpoint: str | None
    pid: int | None
    running: bool
    managed: bool  # started by Accord (False: an external service named by an ACCORD_ variable)
    detail: str = ""


@dataclass(frozen=True)
class Endpoints:
    kafka_bootstrap: str
    opa_url: str
    registry_url: str

    def env_lines(self) -> list[str]:
        return [f"ACCORD_KAFKA_BOOTSTRAP={self.kafka_bootstrap}", f"ACCORD_OPA_URL={self.opa_url}",
                f"ACCORD_REGISTRY_URL={self.registry_url}"]


class LocalStack:
    """The services of one state directory; external services named in the settings are used instead."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.root = settings.local_dir
        self.kafka = kafka_server.KafkaLayout(self.root / "kafka")
        self.opa = opa_server.OpaLayout(self.root / "opa")
        self.registry = registry_server.RegistryLayout(self.root / "registry")
        self.state_file = self.root / "endpoints.json"

    # -- state -------------------------------------------------------------------------------
    def _recorded(self) -> dict[str, str]:
        try:
            data = json.loads(self.state_file.read_text())
        except (FileNotFoundError, json.JSONDecodeError):
            return {}
        return {k: str(v) for k, v in data.items()}

    def _record(self, **endpoints: str) -> None:
        data = self._recorded() | endpoints
        self.root.mkdir(parents=True, exist_ok=True)
        self.state_file.write_text(json.dumps(data, indent=2))

    def _kafka_running(self) -> bool:
        return processes.alive(processes.read_pid(self.kafka.pid_file), kafka_server.MARKER)

    def _opa_running(self) -> bool:
        return processes.alive(processes.read_pid(self.opa.pid_file), opa_server.MARKER)

    def _registry_running(self) -> bool:
        return processes.alive(processes.read_pid(self.registry.pid_file), registry_server.MARKER)

    # -- commands ----------------------------------------------------------------------------
    def up(self) -> Endpoints:
        """Start whatever is not running yet (idempotent) and return the endpoints."""
        s = self.settings
        recorded = self._recorded()
        if s.kafka_bootstrap:
            kafka = s.kafka_bootstrap
        elif self._kafka_running() and "kafka_bootstrap" in recorded:
            kafka = recorded["kafka_bootstrap"]
        else:
            toolchain.require_tool("java")
            libs = toolchain.ensure_kafka_jars(s)
            _, kafka = kafka_server.start(libs, self.kafka, s.kafka_heap, s.start_timeout_s)
            self._record(kafka_bootstrap=kafka)
        if s.opa_url:
            opa = s.opa_url.rstrip("/")
        elif self._opa_running() and "opa_url" in recorded:
            opa = recorded["opa_url"]
        else:
            _, opa = opa_server.start(toolchain.ensure_opa(s), self.opa, s.start_timeout_s)
            self._record(opa_url=opa)
        if s.registry_url:
            registry = s.registry_url.rstrip("/")
        elif self._registry_running() and "registry_url" in recorded:
            registry = recorded["registry_url"]
        else:
            _, registry = registry_server.start(kafka, self.registry, s.start_timeout_s)
            self._record(registry_url=registry)
        return Endpoints(kafka, opa, registry)

    def endpoints(self) -> Endpoints | None:
        """The endpoints in use, or None when a service is neither external nor running."""
        s = self.settings
        recorded = self._recorded()
        kafka = s.kafka_bootstrap or (recorded.get("kafka_bootstrap") if self._kafka_running() else None)
        opa = s.opa_url or (recorded.get("opa_url") if self._opa_running() else None)
        registry = s.registry_url or (recorded.get("registry_url") if self._registry_running() else None)
        if kafka is None or opa is None or registry is None:
            return None
        return Endpoints(kafka, opa.rstrip("/"), registry.rstrip("/"))

    def status(self) -> list[ServiceState]:
        return [self._kafka_state(), self._opa_state(), self._registry_state()]

    def _registry_state(self) -> ServiceState:
        if self.settings.registry_url:
            external = self.settings.registry_url.rstrip("/")
            ok = opa_server.http_ok(f"{external}/")
            return ServiceState("registry", external, None, ok, False, "answering" if ok else "not answering")
        if not self._registry_running():
            return ServiceState("registry", None, None, False, True, "stopped")
        url = self._recorded().get("registry_url")
        ok = url is not None and opa_server.http_ok(f"{url}/")
        pid = processes.read_pid(self.registry.pid_file)
        return ServiceState("registry", url, pid, ok, True, "answering" if ok else "not answering")

    def _kafka_state(self) -> ServiceState:
        if self.settings.kafka_bootstrap:
            return self._probe_kafka(self.settings.kafka_bootstrap, None, managed=False)
        if not self._kafka_running():
            return ServiceState("kafka", None, None, False, True, "stopped")
        pid = processes.read_pid(self.kafka.pid_file)
        return self._probe_kafka(self._recorded().get("kafka_bootstrap"), pid, managed=True)

    def _opa_state(self) -> ServiceState:
        if self.settings.opa_url:
            external = self.settings.opa_url.rstrip("/")
            ok = opa_server.healthy(external)
            return ServiceState("opa", external, None, ok, False, "healthy" if ok else "not answering")
        if not self._opa_running():
            return ServiceState("opa", None, None, False, True, "stopped")
        url = self._recorded().get("opa_url")
        ok = url is not None and opa_server.healthy(url)
        pid = processes.read_pid(self.opa.pid_file)
        return ServiceState("opa", url, pid, ok, True, "healthy" if ok else "not answering")

    @staticmethod
    def _probe_kafka(bootstrap: str | None, pid: int | None, managed: bool) -> ServiceState:
        if bootstrap is None:
            return ServiceState("kafka", None, pid, False, managed, "running but endpoint unknown")
        try:
            info = describe_cluster(bootstrap)
        except ServiceError as exc:
            return ServiceState("kafka", bootstrap, pid, False, managed, str(exc))
        return ServiceState("kafka", bootstrap, pid, True, managed,
                            f"cluster {info.cluster_id}, brokers {list(info.broker_ids)}")

    def down(self, wipe: bool = False) -> list[str]:
        """Stop the services this state directory started; with `wipe`, delete their data too."""
        stopped = []
        if processes.stop(processes.read_pid(self.registry.pid_file), registry_server.MARKER):
            stopped.append("registry")
        if processes.stop(processes.read_pid(self.opa.pid_file), opa_server.MARKER):
            stopped.append("opa")
        if processes.stop(processes.read_pid(self.kafka.pid_file), kafka_server.MARKER):
            stopped.append("kafka")
        for pid_file in (self.registry.pid_file, self.opa.pid_file, self.kafka.pid_file, self.state_file):
            pid_file.unlink(missing_ok=True)
        if wipe and self.root.exists():
            shutil.rmtree(self.root)
        return stopped


def describe(states: list[ServiceState]) -> list[str]:
    lines = []
    for st in states:
        where = st.endpoint or "-"
        who = "external" if not st.managed else (f"pid {st.pid}" if st.pid else "not running")
        lines.append(f"{st.name:<8} {'up' if st.running else 'DOWN':<5} {where:<28} {who:<12} {st.detail}")
    return lines


def as_json(states: list[ServiceState]) -> str:
    return json.dumps([asdict(st) for st in states], indent=2)

