"""`accord local`: bring Kafka, OPA, the schema registry and the API up, report them, print their endpoints."""

from __future__ import annotations

import json
import shutil
from dataclasses import asdict, dataclass
from pathlib import Path

from broker.adapters.kafka_admin import describe_cluster
from broker.config import Settings
from broker.errors import ServiceError
from broker.local import kafka_server, opa_server, processes, toolchain
from broker.local.python_service import PythonService


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
    api_url: str
    governance_url: str

    def env_lines(self) -> list[str]:
        return [f"ACCORD_KAFKA_BOOTSTRAP={self.kafka_bootstrap}", f"ACCORD_OPA_URL={self.opa_url}",
                f"ACCORD_REGISTRY_URL={self.registry_url}", f"ACCORD_API_URL={self.api_url}",
                f"ACCORD_GOVERNANCE_URL={self.governance_url}"]


class LocalStack:
    """The services of one state directory; external services named in the settings are used instead."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.root = settings.local_dir
        self.kafka = kafka_server.KafkaLayout(self.root / "kafka")
        self.opa = opa_server.OpaLayout(self.root / "opa")
        self.registry = PythonService("registry", self.root / "registry")
        self.api = PythonService("api", self.root / "api")
        self.gate = PythonService("gate", self.root / "gate")
        self.governance = PythonService("governance", self.root / "governance")
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

    def _running(self) -> dict[str, bool]:
        return {"kafka_bootstrap": self._kafka_running(), "opa_url": self._opa_running(),
                "registry_url": self.registry.running(), "api_url": self.api.running(),
                "governance_url": self.governance.running()}

    def _external(self) -> dict[str, str | None]:
        s = self.settings
        return {"kafka_bootstrap": s.kafka_bootstrap, "opa_url": s.opa_url, "registry_url": s.registry_url,
                "api_url": s.api_url, "governance_url": s.governance_url}

    # -- commands ----------------------------------------------------------------------------
    def up(self) -> Endpoints:
        """Start whatever is neither external nor running yet (idempotent) and return the endpoints."""
        s = self.settings
        known = self._current()
        if "kafka_bootstrap" not in known:
            toolchain.require_tool("java")
            libs = toolchain.ensure_kafka_jars(s)
            _, known["kafka_bootstrap"] = kafka_server.start(libs, self.kafka, s.kafka_heap, s.start_timeout_s)
            self._record(kafka_bootstrap=known["kafka_bootstrap"])
        if "opa_url" not in known:
            _, known["opa_url"] = opa_server.start(toolchain.ensure_opa(s), self.opa, s.start_timeout_s)
            self._record(opa_url=known["opa_url"])
        env = {"ACCORD_KAFKA_BOOTSTRAP": known["kafka_bootstrap"], "ACCORD_OPA_URL": known["opa_url"]}
        if "registry_url" not in known:
            known["registry_url"] = self.registry.start(env, s.start_timeout_s)
            self._record(registry_url=known["registry_url"])
        if "api_url" not in known:
            env["ACCORD_REGISTRY_URL"] = known["registry_url"]
            known["api_url"] = self.api.start(env, s.start_timeout_s, probe="/health")
            self._record(api_url=known["api_url"])
        if "governance_url" not in known:
            known["governance_url"] = self.governance.start(env, s.start_timeout_s, probe="/health")
            self._record(governance_url=known["governance_url"])
        if self._local_gate() and not self.gate.running():
            env |= {"ACCORD_REGISTRY_URL": known["registry_url"], "ACCORD_STATE_DIR": str(self.root)}
            self._record(gate_url=self.gate.start(env, s.start_timeout_s, probe="/health"))
        return Endpoints(**known)

    def _current(self) -> dict[str, str]:
        """Endpoints of services that are external or running now."""
        recorded, running = self._recorded(), self._running()
        found: dict[str, str] = {}
        for name, external in self._external().items():
            if external:
                found[name] = external.rstrip("/")
            elif running[name] and name in recorded:
                found[name] = recorded[name]
        return found

    def endpoints(self) -> Endpoints | None:
        """The endpoints in use, or None when some service is neither external nor running."""
        found = self._current()
        return Endpoints(**found) if len(found) == len(self._external()) else None

    def status(self) -> list[ServiceState]:
        return [self._kafka_state(), self._http_state("opa", "opa_url", "/health"),
                self._http_state("registry", "registry_url", "/"), self._http_state("api", "api_url", "/health"),
                self._http_state("governance", "governance_url", "/health"),
                *([self._gate_state()] if self._local_gate() else [])]

    def _local_gate(self) -> bool:
        # With an external registry Accord's services run elsewhere, and so do their gate workers.
        return not self.settings.registry_url

    def _gate_state(self) -> ServiceState:
        # Gate workers are Accord's own: one runs locally whichever other services are external.
        if not self.gate.running():
            return ServiceState("gate", None, None, False, True, "stopped")
        url = self._recorded().get("gate_url")
        ok = url is not None and opa_server.http_ok(f"{url}/health")
        return ServiceState("gate", url, processes.read_pid(self.gate.pid_file), ok, True,
                            "answering" if ok else "not answering")

    def _pid_file(self, name: str) -> Path:
        return {"opa": self.opa.pid_file, "registry": self.registry.pid_file, "api": self.api.pid_file,
                "governance": self.governance.pid_file}[name]

    def _kafka_state(self) -> ServiceState:
        if self.settings.kafka_bootstrap:
            return self._probe_kafka(self.settings.kafka_bootstrap, None, managed=False)
        if not self._kafka_running():
            return ServiceState("kafka", None, None, False, True, "stopped")
        pid = processes.read_pid(self.kafka.pid_file)
        return self._probe_kafka(self._recorded().get("kafka_bootstrap"), pid, managed=True)

    def _http_state(self, name: str, key: str, probe: str) -> ServiceState:
        external = self._external()[key]
        if external:
            url = external.rstrip("/")
            ok = opa_server.http_ok(f"{url}{probe}")
            return ServiceState(name, url, None, ok, False, "answering" if ok else "not answering")
        if not self._running()[key]:
            return ServiceState(name, None, None, False, True, "stopped")
        recorded = self._recorded().get(key)
        ok = recorded is not None and opa_server.http_ok(f"{recorded}{probe}")
        pid = processes.read_pid(self._pid_file(name))
        return ServiceState(name, recorded, pid, ok, True, "answering" if ok else "not answering")

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
        stopped = [svc.name for svc in (self.gate, self.governance, self.api, self.registry) if svc.stop()]
        if processes.stop(processes.read_pid(self.opa.pid_file), opa_server.MARKER):
            stopped.append("opa")
        if processes.stop(processes.read_pid(self.kafka.pid_file), kafka_server.MARKER):
            stopped.append("kafka")
        for pid_file in (self.opa.pid_file, self.kafka.pid_file, self.state_file):
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
