"""`accord local`: bring Kafka, OPA, the schema registry and the API up, report them, print their endpoints."""

from __future__ import annotations

import contextlib
import fcntl
import json
import shutil
from collections.abc import Iterator
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from urllib.parse import urlsplit

from broker.adapters.kafka_access import KafkaAccess
from broker.adapters.kafka_admin import describe_cluster
from broker.adapters.kafka_control import ensure_control_topics
from broker.catalog import load_and_compile
from broker.config import Settings
from broker.domain.kafka_acls import ADMIN_USER
from broker.errors import ConfigError, ServiceError, ServiceStartError
from broker.local import kafka_cluster, kafka_server, opa_server, postgres_server, processes, toolchain
from broker.local.python_service import PythonService
from broker.local.supervisor_files import supervisor_layout
from broker.security import bundles
from broker.security.kafka_identities import kafka_access, password_path, provision, service_env
from broker.security.opa_tokens import WRITER, token_file

READY = "/ready"  # Accord's own services' readiness (broker/api/readiness.py)
# The services `up` starts, by the key of their endpoint in endpoints.json, in the order they depend on each other.
_KEYS = {"kafka": "kafka_bootstrap", "opa": "opa_url", "registry": "registry_url", "api": "api_url",
         "governance": "governance_url", "console": "console_url"}


@dataclass(frozen=True)
class ServiceState:
    """One service as `accord local status` reports it."""

    name: str
    endpoint: str | None
    pid: int | None
    running: bool
    managed: bool  # started by Accord (False: an external service named by an ACCORD_ variable)
    detail: str = ""
    ready: bool | None = None  # what its `/ready` says (None: it has none); `detail` then says why not
    restarts: int = 0  # how often the supervisor started it again
    last_restart: str = ""  # why it last did (or why its last start failed)


@dataclass(frozen=True)
class Endpoints:
    kafka: KafkaAccess  # as this process's principal: the local admin unless the settings name another
    opa_url: str
    registry_url: str
    api_url: str
    governance_url: str
    console_url: str | None = None
    kafka_password_file: Path | None = None  # where the principal's password is kept, when in a file
    opa_token_file: Path | None = None  # the OPA token this process calls with (the local writer's by default)

    @property
    def kafka_bootstrap(self) -> str:
        return self.kafka.bootstrap

    def env_lines(self) -> list[str]:
        """ACCORD_ variables that point another shell at these services, as the same Kafka principal (a password
        and OPA's token are named by their files, never printed)."""
        kafka = [f"ACCORD_KAFKA_BOOTSTRAP={self.kafka_bootstrap}"]
        if self.kafka.username:
            kafka += [f"ACCORD_KAFKA_SECURITY_PROTOCOL={self.kafka.security_protocol}",
                      f"ACCORD_KAFKA_USERNAME={self.kafka.username}"]
            if self.kafka_password_file is not None:
                kafka.append(f"ACCORD_KAFKA_PASSWORD_FILE={self.kafka_password_file}")
        opa = [f"ACCORD_OPA_URL={self.opa_url}"]
        if self.opa_token_file is not None:
            opa.append(f"ACCORD_OPA_TOKEN_FILE={self.opa_token_file}")
        return [*kafka, *opa,
                f"ACCORD_REGISTRY_URL={self.registry_url}", f"ACCORD_API_URL={self.api_url}",
                f"ACCORD_GOVERNANCE_URL={self.governance_url}",
                *([f"ACCORD_CONSOLE_URL={self.console_url}"] if self.console_url else [])]


class LocalStack:
    """The services of one state directory; external services named in the settings are used instead."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.root = settings.local_dir
        self.kafka = kafka_server.KafkaLayout(self.root / "kafka")  # a single node's (the default)
        self.kafka_cluster = kafka_cluster.KafkaCluster(self.root / "kafka")  # the nodes of `--brokers N`
        self.opa = opa_server.OpaLayout(self.root / "opa")
        self.registry = PythonService("registry", self.root / "registry")
        self.api = PythonService("api", self.root / "api")
        self.gate = PythonService("gate", self.root / "gate")
        self.governance = PythonService("governance", self.root / "governance")
        self.console = PythonService("console", self.root / "console")
        self.postgres = postgres_server.PostgresLayout(self.root / "postgres")
        self.state_file = self.root / "endpoints.json"
        self.supervisor = supervisor_layout(self.root)
        self._lock_file = self.root / "stack.lock"
        self._lock_depth = 0

    @contextlib.contextmanager
    def locked(self) -> Iterator[None]:
        """Held while services of this state directory start or stop, by this process or another: the supervisor
        never restarts a service that `up`, `down` or an OPA refresh is starting or stopping at the same time."""
        if self._lock_depth:
            self._lock_depth += 1
            try:
                yield
            finally:
                self._lock_depth -= 1
            return
        self.root.mkdir(parents=True, exist_ok=True)
        with open(self._lock_file, "a+") as handle:
            fcntl.flock(handle, fcntl.LOCK_EX)
            self._lock_depth = 1
            try:
                yield
            finally:
                self._lock_depth = 0
                fcntl.flock(handle, fcntl.LOCK_UN)

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

    def _kept_port(self, key: str) -> int | None:
        """The port the service of `key` had, to start it there again: ports are chosen once per state directory
        (until `accord local down`), so a restarted service keeps its address and its clients find it."""
        recorded = self._recorded().get(key)
        if not recorded:
            return None
        port = urlsplit(recorded if "//" in recorded else f"//{recorded}").port
        if port is not None and processes.port_in_use(port):
            raise ServiceStartError(
                f"{key.split('_')[0]} was at {recorded} and is to start there again, but another process listens on "
                f"port {port}: stop it, or run `accord local down` so that new ports are chosen")
        return port

    def kafka_brokers(self, check: bool = False) -> int:
        """How many brokers this state directory's Kafka has: those it was made with, else as many as the settings
        ask for (one by default). With `check`, a different number asked for is an error."""
        made = self.kafka_cluster.brokers() or (1 if (self.kafka.data / "meta.properties").is_file() else 0)
        wanted = self.settings.kafka_brokers
        if check and made and wanted and wanted != made:
            raise ConfigError(
                f"the local Kafka in {self.root} has {made} broker(s), not {wanted}: run `accord local down --wipe` "
                f"first to make a new one (it deletes the local services' data)")
        return made or wanted or 1

    def _kafka_running(self) -> bool:
        """Whether Kafka answers here: the single node runs, or at least one node of the cluster."""
        if self.kafka_brokers() > 1:
            return any(self.kafka_cluster.running(n) for n in self.kafka_cluster.node_ids())
        return processes.alive(processes.read_pid(self.kafka.pid_file), kafka_server.MARKER)

    def _kafka_complete(self) -> bool:
        """Whether every node of this state directory's Kafka runs."""
        if self.kafka_brokers() > 1:
            return all(self.kafka_cluster.running(n) for n in self.kafka_cluster.node_ids())
        return self._kafka_running()

    def _start_kafka(self) -> str:
        """Start the Kafka nodes that are not running, on their kept ports (new ones when none is kept); record
        and return the bootstrap."""
        s = self.settings
        toolchain.require_tool("java")
        libs = toolchain.ensure_kafka_jars(s)
        brokers = self.kafka_brokers(check=True)
        if brokers == 1:
            _, bootstrap = kafka_server.start(libs, self.kafka, s.kafka_heap, s.start_timeout_s, s.secrets_dir,
                                              self._kept_port("kafka_bootstrap"))
            self._record(kafka_bootstrap=bootstrap)
            return bootstrap
        self.kafka_cluster.create(brokers)
        recorded, ids = self._recorded(), self.kafka_cluster.node_ids()
        ports = kafka_cluster.parse_ports(recorded.get("kafka_bootstrap", ""), recorded.get("kafka_controllers", ""),
                                          ids)
        if ports is None or (not any(self.kafka_cluster.running(n) for n in ids) and self._ports_taken(ports)):
            ports = kafka_cluster.fresh_ports(ids)
        # Recorded before the nodes start: a node that dies during start-up comes back on the same ports.
        self._record(kafka_bootstrap=kafka_cluster.bootstrap_of(ports),
                     kafka_controllers=kafka_cluster.controllers_of(ports))
        return kafka_cluster.start(libs, self.kafka_cluster, s.kafka_heap, s.start_timeout_s, s.secrets_dir, ports)

    @staticmethod
    def _ports_taken(ports: dict[int, kafka_cluster.NodePorts]) -> bool:
        return any(processes.port_in_use(p) for node in ports.values() for p in (node.client, node.controller))

    def _opa_running(self) -> bool:
        return processes.alive(processes.read_pid(self.opa.pid_file), opa_server.MARKER)

    def _running(self) -> dict[str, bool]:
        return {"kafka_bootstrap": self._kafka_running(), "opa_url": self._opa_running(),
                "registry_url": self.registry.running(), "api_url": self.api.running(),
                "governance_url": self.governance.running(), "console_url": self.console.running()}

    def _external(self) -> dict[str, str | None]:
        s = self.settings
        return {"kafka_bootstrap": s.kafka_bootstrap, "opa_url": s.opa_url, "registry_url": s.registry_url,
                "api_url": s.api_url, "governance_url": s.governance_url, "console_url": s.console_url}

    def names_only_its_own(self) -> bool:
        """Whether every service the settings name is one this stack recorded starting (`accord local env` names
        them so), none elsewhere: a deployment whose processes `accord local hold` and its supervisor control."""
        recorded = self._recorded()
        return all(not named or named.rstrip("/") == recorded.get(name, "").rstrip("/")
                   for name, named in self._external().items())

    # -- commands ----------------------------------------------------------------------------
    def up(self) -> Endpoints:
        """Start whatever is neither external nor running yet (idempotent) and return the endpoints."""
        with self.locked():
            return self._up()

    def _up(self) -> Endpoints:
        s = self.settings
        known = self._current()
        if "kafka_bootstrap" not in known or (not s.kafka_bootstrap and not self._kafka_complete()):
            known["kafka_bootstrap"] = self._start_kafka()
        if not s.kafka_bootstrap:
            # Users and ACLs for the shipped catalog's bodies and Accord's services; `accord catalog apply`
            # does the same for a catalog it applies.
            admin = kafka_access(s, known["kafka_bootstrap"])
            provision(admin, s.secrets_dir, load_and_compile(s.catalog_dir, s.schemas_dir))
            # A control topic an older version made (compacted, producer timestamps) gets today's configuration,
            # without which gates refuse every record on it.
            ensure_control_topics(admin, align=True)
        if "opa_url" not in known:
            known["opa_url"] = self._start_opa(self._kept_port("opa_url"))
        elif not s.opa_url:
            self._refresh_opa(known["opa_url"])
        # Every service reads the same secrets dir: the API token key, the pseudonym secret, Kafka passwords.
        env = {"ACCORD_KAFKA_BOOTSTRAP": known["kafka_bootstrap"], "ACCORD_OPA_URL": known["opa_url"],
               "ACCORD_STATE_DIR": str(self.root)}
        if "registry_url" not in known:
            known["registry_url"] = self.registry.start(env | service_env(s, "registry"), s.start_timeout_s,
                                                        port=self._kept_port("registry_url"))
            self._record(registry_url=known["registry_url"])
        if "api_url" not in known:
            env["ACCORD_REGISTRY_URL"] = known["registry_url"]
            known["api_url"] = self.api.start(env | service_env(s, "api"), s.start_timeout_s, probe="/health",
                                              port=self._kept_port("api_url"))
            self._record(api_url=known["api_url"])
        if "governance_url" not in known:
            known["governance_url"] = self.governance.start(env | service_env(s, "governance"), s.start_timeout_s,
                                                            probe="/health", port=self._kept_port("governance_url"))
            self._record(governance_url=known["governance_url"])
        if "console_url" not in known:
            wired = {"ACCORD_REGISTRY_URL": known["registry_url"], "ACCORD_GOVERNANCE_URL": known["governance_url"]}
            known["console_url"] = self.console.start(env | wired | service_env(s, "console"), s.start_timeout_s,
                                                      probe="/health", port=self._kept_port("console_url"))
            self._record(console_url=known["console_url"])
        if self._local_gate() and not self.gate.running():
            env |= {"ACCORD_REGISTRY_URL": known["registry_url"]}
            self._record(gate_url=self.gate.start(env | service_env(s, "gate"), s.start_timeout_s, probe="/health",
                                                  port=self._kept_port("gate_url")))
        return self._endpoints(known)

    def up_postgres(self) -> str:
        """PostgreSQL for the sinks, started if not running (not part of `up`: only the demo and the tests that
        need it start it); its DSN. The password of its `accord` user is in postgres_server.password_file."""
        with self.locked():
            recorded = self._recorded().get("postgres_dsn")
            if recorded and self._postgres_running():
                return recorded
            bin_dir = postgres_server.ensure_binaries()
            _, dsn = postgres_server.start(bin_dir, self.postgres, self.settings.secrets_dir,
                                           self.settings.start_timeout_s)
            self._record(postgres_dsn=dsn)
            return dsn

    # -- supervision ---------------------------------------------------------------------------
    def managed(self) -> list[str]:
        """The services this state directory runs itself (not external), in the order they depend on each other:
        PostgreSQL only once `up_postgres` started it."""
        external = self._external()
        names = [name for name, key in _KEYS.items() if not external[key]]
        if self._local_gate():
            names.append("gate")
        if self._recorded().get("postgres_dsn"):
            names.insert(names.index("registry") if "registry" in names else len(names), "postgres")
        return names

    def running(self, name: str) -> bool:
        """Whether the managed service `name` has a live process."""
        if name == "kafka":
            return self._kafka_complete()  # a cluster with a node down is restarted (its missing nodes only)
        if name == "opa":
            return self._opa_running()
        if name == "postgres":
            return self._postgres_running()
        return self._python(name).running()

    def pid(self, name: str) -> int | None:
        layout = {"kafka": self.kafka.pid_file, "opa": self.opa.pid_file, "postgres": self.postgres.pid_file}
        return processes.read_pid(layout[name] if name in layout else self._python(name).pid_file)

    def _python(self, name: str) -> PythonService:
        services = {svc.name: svc for svc in (self.registry, self.api, self.gate, self.governance, self.console)}
        if name not in services:
            raise ConfigError(f"no local service {name!r}: choose one of {', '.join(self.managed())}")
        return services[name]

    def restart(self, name: str) -> str:
        """Start the managed service `name` again where it was (its kept port), wired as `up` wires it, unless it
        runs; return its endpoint. The services it depends on are not touched: one that is down makes this start
        fail (ServiceStartError) or the service start unready, until it is back."""
        with self.locked():
            s, recorded = self.settings, self._recorded()
            known = recorded | {k: v.rstrip("/") for k, v in self._external().items() if v}
            if self._kafka_complete() if name == "kafka" else self.running(name):
                return known.get(_KEYS.get(name, f"{name}_url"), "")
            if name == "kafka":
                return self._start_kafka()  # the nodes that are down, on their kept ports
            if name == "opa":
                return self._start_opa(self._kept_port("opa_url"))
            if name == "postgres":
                bin_dir = postgres_server.ensure_binaries()
                _, dsn = postgres_server.start(bin_dir, self.postgres, s.secrets_dir, s.start_timeout_s,
                                               port=self._kept_port("postgres_dsn"))
                self._record(postgres_dsn=dsn)
                return dsn
            service, key = self._python(name), f"{name}_url"
            env = {"ACCORD_KAFKA_BOOTSTRAP": known["kafka_bootstrap"], "ACCORD_OPA_URL": known["opa_url"],
                   "ACCORD_STATE_DIR": str(self.root)}
            if name != "registry":
                env["ACCORD_REGISTRY_URL"] = known["registry_url"]
            if name == "console":
                env["ACCORD_GOVERNANCE_URL"] = known["governance_url"]
            url = service.start(env | service_env(s, name), s.start_timeout_s,
                                probe="/" if name == "registry" else "/health", port=self._kept_port(key))
            self._record(**{key: url})
            return url

    def _postgres_running(self) -> bool:
        return processes.alive(processes.read_pid(self.postgres.pid_file), postgres_server.MARKER)

    def _endpoints(self, known: dict[str, str]) -> Endpoints:
        found, s = dict(known), self.settings
        password_file = s.kafka_password_file if s.kafka_username else (
            None if s.kafka_bootstrap else password_path(s.secrets_dir, ADMIN_USER))
        return Endpoints(kafka=kafka_access(s, found.pop("kafka_bootstrap")), kafka_password_file=password_file,
                         opa_token_file=s.opa_token_file or (None if s.opa_url else token_file(s.secrets_dir, WRITER)),
                         **found)

    def _start_opa(self, port: int | None = None) -> str:
        """OPA with the signed bundle of policies/, built (and its key made) if missing or out of date."""
        binary = toolchain.ensure_opa(self.settings)
        bundle, _ = bundles.ensure_bundle(binary, self.opa.bundle, self.settings.secrets_dir,
                                              self.settings.policies_dir)
        _, url = opa_server.start(binary, self.opa, self.settings.start_timeout_s, bundle, port)
        self._record(opa_url=url)
        return url

    def refresh_opa(self) -> bool:
        """Rebuild the bundle and restart the local OPA if it is running and its bundle is out of date."""
        with self.locked():
            url = self._recorded().get("opa_url")
            if self.settings.opa_url or not self._opa_running() or not isinstance(url, str):
                return False
            return self._refresh_opa(url)

    def _refresh_opa(self, url: str) -> bool:
        """Restart a running OPA on its own port when policies/ (or the OPA tokens) changed since its bundle was built.

        OPA loads a bundle file once, at start; the gate pushes the catalog again to the restarted OPA.
        """
        binary = toolchain.ensure_opa(self.settings)
        _, rebuilt = bundles.ensure_bundle(binary, self.opa.bundle, self.settings.secrets_dir,
                                              self.settings.policies_dir)
        if rebuilt:
            processes.stop(processes.read_pid(self.opa.pid_file), opa_server.MARKER)
            self._start_opa(urlsplit(url).port)
        return rebuilt

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
        return self._endpoints(found) if len(found) == len(self._external()) else None

    def status(self) -> list[ServiceState]:
        states = [*self._kafka_states(), self._http_state("opa", "opa_url", "/health?bundles"),
                  self._http_state("registry", "registry_url", READY), self._http_state("api", "api_url", READY),
                  self._http_state("governance", "governance_url", READY),
                  self._http_state("console", "console_url", READY),
                  *([self._gate_state()] if self._local_gate() else []),
                  *([self._postgres_state()] if self._postgres_running() else [])]
        supervised = self.supervisor.read_state()
        if supervised is None:
            return states
        restarts = supervised.get("services", {})
        states = [replace(st, restarts=int(restarts.get(st.name, {}).get("restarts", 0)),
                          last_restart=str(restarts.get(st.name, {}).get("last_reason", "")))
                  if st.managed else st for st in states]
        alive = self.supervisor.running()
        return [*states, ServiceState("supervisor", None, self.supervisor.pid() if alive else None, alive, True,
                                      "restarting crashed services" if alive else "stopped")]

    def scrape_targets(self) -> dict[str, str]:
        """host:port of each running service's /metrics, by job name: Accord's token-free metrics ports, and OPA's
        own port (its /metrics takes the scraper token)."""
        found = {svc.name: svc.metrics_address() for svc in
                 (self.registry, self.api, self.governance, self.console, self.gate)}
        url = self._recorded().get("opa_url")
        if self._opa_running() and url:
            found["opa"] = urlsplit(url).netloc     # scraped with the `scraper` OPA token (opa_tokens.SCRAPER)
        return {name: address for name, address in found.items() if address}

    def _postgres_state(self) -> ServiceState:
        return ServiceState("postgres", self._recorded().get("postgres_dsn"),
                            processes.read_pid(self.postgres.pid_file), True, True, "running")

    def _local_gate(self) -> bool:
        # With an external registry Accord's services run elsewhere, and so do their gate workers.
        return not self.settings.registry_url

    def _gate_state(self) -> ServiceState:
        # Gate workers are Accord's own: one runs locally whichever other services are external.
        if not self.gate.running():
            return ServiceState("gate", None, None, False, True, "stopped")
        url = self._recorded().get("gate_url")
        return _answer("gate", url, READY, processes.read_pid(self.gate.pid_file), True)

    def _pid_file(self, name: str) -> Path:
        return {"opa": self.opa.pid_file, "registry": self.registry.pid_file, "api": self.api.pid_file,
                "governance": self.governance.pid_file, "console": self.console.pid_file}[name]

    def _kafka_states(self) -> list[ServiceState]:
        """The single node's state, or each broker's of a cluster: running, and a live broker of it or why not."""
        if self.settings.kafka_bootstrap or self.kafka_brokers() == 1:
            return [self._kafka_state()]
        bootstrap = self._recorded().get("kafka_bootstrap", "")
        members: set[int] = set()
        why = "no broker of the cluster runs"
        if bootstrap and self._kafka_running():
            try:
                members = set(describe_cluster(kafka_access(self.settings, bootstrap)).broker_ids)
            except (ServiceError, ConfigError) as exc:
                why = str(exc)
        addresses, ids = bootstrap.split(","), self.kafka_cluster.node_ids()
        states = []
        for n in ids:
            name, pid = f"kafka-{n}", self.kafka_cluster.pid(n)
            where = addresses[n - 1] if len(addresses) == len(ids) else None
            if not self.kafka_cluster.running(n):
                states.append(ServiceState(name, where, None, False, True, "stopped"))
            elif n in members:
                states.append(ServiceState(name, where, pid, True, True,
                                           f"broker {n} of {len(ids)}; live brokers {sorted(members)}"))
            else:
                states.append(ServiceState(name, where, pid, False, True, "not a live broker of the cluster: "
                                           + (why if not members else f"live brokers are {sorted(members)}")))
        return states

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
            return _answer(name, external.rstrip("/"), probe, None, False)
        if not self._running()[key]:
            return ServiceState(name, None, None, False, True, "stopped")
        return _answer(name, self._recorded().get(key), probe, processes.read_pid(self._pid_file(name)), True)

    def _probe_kafka(self, bootstrap: str | None, pid: int | None, managed: bool) -> ServiceState:
        if bootstrap is None:
            return ServiceState("kafka", None, pid, False, managed, "running but endpoint unknown")
        try:
            info = describe_cluster(kafka_access(self.settings, bootstrap))
        except (ServiceError, ConfigError) as exc:
            return ServiceState("kafka", bootstrap, pid, False, managed, str(exc))
        return ServiceState("kafka", bootstrap, pid, True, managed,
                            f"cluster {info.cluster_id}, brokers {list(info.broker_ids)}")

    def down(self, wipe: bool = False) -> list[str]:
        """Stop the services this state directory started; with `wipe`, delete their data too."""
        # The supervisor first, so that it starts nothing again; it may be starting one now, which stops with it
        # or has its pid file already and is stopped below.
        stopped = ["supervisor"] if self.supervisor.stop() else []
        with self.locked():
            stopped += self._down()
        if wipe and self.root.exists():
            shutil.rmtree(self.root)
        return stopped

    def _down(self) -> list[str]:
        stopped = [svc.name for svc in (self.console, self.gate, self.governance, self.api, self.registry)
                   if svc.stop()]
        if processes.stop(processes.read_pid(self.opa.pid_file), opa_server.MARKER):
            stopped.append("opa")
        if processes.stop(processes.read_pid(self.kafka.pid_file), kafka_server.MARKER):
            stopped.append("kafka")
        stopped += self.kafka_cluster.stop()
        if postgres_server.stop(processes.read_pid(self.postgres.pid_file)):
            stopped.append("postgres")
        for pid_file in (self.opa.pid_file, self.kafka.pid_file, self.postgres.pid_file, self.state_file):
            pid_file.unlink(missing_ok=True)
        self.supervisor.clear()
        return stopped


def _answer(name: str, url: str | None, probe: str, pid: int | None, managed: bool) -> ServiceState:
    """A service by what `probe` answers: for READY its readiness and why not, else whether it answers 200."""
    if url is None:
        return ServiceState(name, None, pid, False, managed, "running but endpoint unknown")
    if probe != READY:
        ok = opa_server.http_ok(f"{url}{probe}")
        return ServiceState(name, url, pid, ok, managed, "answering" if ok else "not answering")
    answered = opa_server.http_json(f"{url}{READY}")
    if answered is None:
        return ServiceState(name, url, pid, False, managed, "not answering", ready=False)
    ready, reasons = answered[0] == 200, answered[1].get("checks", {})
    why = "; ".join(f"{check}: {reasons[check]}" for check in answered[1].get("failing", []) if check in reasons)
    return ServiceState(name, url, pid, True, managed, "ready" if ready else f"NOT READY: {why or answered[1]}",
                        ready=ready)


def describe(states: list[ServiceState]) -> list[str]:
    lines = []
    for st in states:
        where = st.endpoint or "-"
        who = "external" if not st.managed else (f"pid {st.pid}" if st.pid else "not running")
        restarted = f" (restarted {st.restarts}x, last: {st.last_restart})" if st.restarts else ""
        lines.append(f"{st.name:<8} {'up' if st.running else 'DOWN':<5} {where:<28} {who:<12} {st.detail}{restarted}")
    return lines


def as_json(states: list[ServiceState]) -> str:
    return json.dumps([asdict(st) for st in states], indent=2)
