"""A local Kafka cluster: N KRaft nodes on loopback, each a combined broker and controller among N static voters.

Each node has its own directory (`broker-<id>`: config, data, logs, pid) under the state's `kafka` directory,
beside `cluster.json` (how many brokers, the cluster id every node is formatted with). Ports, the clients' and the
controllers', are chosen once and kept by the stack (endpoints.json) until `accord local down`: a node killed and
started again comes back on its own addresses, where its peers and the clients look for it.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from pathlib import Path

from broker.adapters.kafka_access import KafkaAccess
from broker.adapters.kafka_admin import describe_cluster
from broker.errors import ConfigError, ServiceError, ServiceStartError
from broker.local import kafka_server, processes
from broker.local.kafka_server import KafkaLayout, Quorum
from broker.security.kafka_identities import local_access

MAX_BROKERS = 5


@dataclass(frozen=True)
class NodePorts:
    client: int
    controller: int


@dataclass(frozen=True)
class KafkaCluster:
    """The nodes of one local cluster, kept under `root` (the state's `kafka` directory)."""

    root: Path

    @property
    def record(self) -> Path:
        return self.root / "cluster.json"

    def recorded(self) -> dict[str, object] | None:
        """What `cluster.json` says (brokers, cluster id), or None when this directory holds no cluster."""
        try:
            data = json.loads(self.record.read_text())
        except FileNotFoundError:
            return None
        except json.JSONDecodeError as exc:
            raise ConfigError(f"{self.record}: not JSON ({exc}); stop and wipe with `accord local down --wipe`") \
                from exc
        return data if isinstance(data, dict) else None

    def brokers(self) -> int:
        """How many nodes this cluster has (0: none made here)."""
        found = self.recorded()
        return int(str(found.get("brokers", 0))) if found else 0

    def node_ids(self) -> list[int]:
        return list(range(1, self.brokers() + 1))

    def node(self, node_id: int) -> KafkaLayout:
        return KafkaLayout(self.root / f"broker-{node_id}")

    def pid(self, node_id: int) -> int | None:
        return processes.read_pid(self.node(node_id).pid_file)

    def running(self, node_id: int) -> bool:
        return processes.alive(self.pid(node_id), kafka_server.MARKER)

    def create(self, brokers: int) -> str:
        """Record a new cluster of `brokers` nodes (once); its cluster id."""
        found = self.recorded()
        if found:
            return str(found["cluster_id"])
        if not 2 <= brokers <= MAX_BROKERS:
            raise ConfigError(f"a local Kafka cluster has 2 to {MAX_BROKERS} brokers, not {brokers}")
        cluster_id = kafka_server.new_cluster_id()
        self.root.mkdir(parents=True, exist_ok=True)
        self.record.write_text(json.dumps({"brokers": brokers, "cluster_id": cluster_id}, indent=2))
        return cluster_id

    def stop(self) -> list[str]:
        """Stop every node; the names of those that were running."""
        stopped = [f"kafka-{n}" for n in self.node_ids() if processes.stop(self.pid(n), kafka_server.MARKER)]
        for n in self.node_ids():
            self.node(n).pid_file.unlink(missing_ok=True)
        return stopped


def bootstrap_of(ports: dict[int, NodePorts]) -> str:
    """Every node's client address: a client reaches the cluster through whichever answers."""
    return ",".join(f"127.0.0.1:{ports[n].client}" for n in sorted(ports))


def controllers_of(ports: dict[int, NodePorts]) -> str:
    return ",".join(f"127.0.0.1:{ports[n].controller}" for n in sorted(ports))


def parse_ports(bootstrap: str, controllers: str, node_ids: list[int]) -> dict[int, NodePorts] | None:
    """The kept ports from the stack's record of them, or None when it does not name every node's."""
    clients = [a.rsplit(":", 1)[-1] for a in bootstrap.split(",") if a]
    voters = [a.rsplit(":", 1)[-1] for a in controllers.split(",") if a]
    if len(clients) != len(node_ids) or len(voters) != len(node_ids):
        return None
    try:
        return {n: NodePorts(int(c), int(v)) for n, c, v in zip(node_ids, clients, voters, strict=True)}
    except ValueError:
        return None


def fresh_ports(node_ids: list[int]) -> dict[int, NodePorts]:
    """Two free ports per node, all different."""
    taken: set[int] = set()
    chosen: dict[int, NodePorts] = {}
    for n in node_ids:
        pair: list[int] = []
        while len(pair) < 2:
            port = processes.free_port()
            if port not in taken:
                taken.add(port)
                pair.append(port)
        chosen[n] = NodePorts(pair[0], pair[1])
    return chosen


def start(libs: Path, cluster: KafkaCluster, heap: str, timeout_s: float, secrets_dir: Path,
          ports: dict[int, NodePorts]) -> str:
    """Start every node of `cluster` that is not running, on its `ports`; return the bootstrap once every node is
    an unfenced broker of the cluster (a quorum needs a majority of voters, so all are started before any waits)."""
    cluster_id = str((cluster.recorded() or {})["cluster_id"])
    voters = {n: p.controller for n, p in ports.items()}
    started: dict[int, int] = {}
    for n in cluster.node_ids():
        if cluster.running(n):
            continue
        for port in (ports[n].client, ports[n].controller):
            if processes.port_in_use(port):
                raise ServiceStartError(
                    f"kafka-{n} is to start on port {port} again, but another process listens there: stop it, or "
                    "run `accord local down` so that new ports are chosen")
        started[n] = kafka_server.launch(libs, cluster.node(n), heap, secrets_dir, ports[n].client,
                                         ports[n].controller, Quorum(n, voters), cluster_id)
    bootstrap = bootstrap_of(ports)
    _wait_formed(cluster, started, local_access(secrets_dir, bootstrap), timeout_s)
    return bootstrap


def _wait_formed(cluster: KafkaCluster, started: dict[int, int], admin: KafkaAccess, timeout_s: float) -> None:
    deadline = time.monotonic() + timeout_s
    want = set(cluster.node_ids())
    while True:
        for n, pid in started.items():
            if not processes.alive(pid, kafka_server.MARKER):
                raise ServiceStartError(f"kafka-{n} exited during start-up", cluster.node(n).log_tail())
        try:
            if want <= set(describe_cluster(admin).broker_ids):
                return
        except ServiceError:
            pass
        if time.monotonic() > deadline:
            for pid in started.values():
                processes.stop(pid, kafka_server.MARKER)
            tails = "\n".join(f"-- kafka-{n}\n{cluster.node(n).log_tail()}" for n in started)
            raise ServiceStartError(f"the Kafka cluster did not form within {timeout_s:.0f}s", tails)
        time.sleep(0.5)
