"""A KRaft Kafka node (combined broker and controller, static voters) on loopback: a single node by default; the
nodes of a local cluster (broker/local/kafka_cluster.py) are started one by one with the same code."""

from __future__ import annotations

import base64
import subprocess
import time
import uuid
from dataclasses import dataclass
from pathlib import Path

from broker.adapters.kafka_access import SCRAM_MECHANISM, KafkaAccess
from broker.adapters.kafka_admin import describe_cluster
from broker.domain.kafka_acls import ADMIN_USER, BROKER_USER, CONTROLLER_USER
from broker.domain.replication import Durability, durability
from broker.errors import ServiceError, ServiceStartError
from broker.local import processes
from broker.local.toolchain import DEPLOY_LOCAL, require_tool
from broker.security.kafka_identities import ensure_password, local_access, password_path
from broker.security.secrets import write_private

MARKER = "kafka.Kafka"


@dataclass(frozen=True)
class KafkaLayout:
    """Where one local Kafka keeps its config, data and logs."""

    root: Path

    @property
    def data(self) -> Path:
        return self.root / "data"

    @property
    def config(self) -> Path:
        return self.root / "server.properties"

    @property
    def log(self) -> Path:
        return self.root / "logs" / "kafka.log"

    @property
    def out(self) -> Path:
        return self.root / "logs" / "kafka.out"

    @property
    def pid_file(self) -> Path:
        return self.root / "kafka.pid"

    def log_tail(self) -> str:
        return processes.tail(self.log) + "\n" + processes.tail(self.out, 10)


@dataclass(frozen=True)
class KafkaSecrets:
    """The passwords the broker itself needs: its inter-broker SCRAM user and the controller listener's PLAIN
    user (SCRAM credentials live in the metadata log, so the KRaft controller listener cannot use them)."""

    broker: str
    controller: str


def _jaas(module: str, user: str, password: str, extra: str = "") -> str:
    return f'{module} required username="{user}" password="{password}"{extra};'


@dataclass(frozen=True)
class Quorum:
    """Which node this is and who votes: node ids by their controller ports (all on loopback)."""

    node_id: int
    voters: dict[int, int]

    @property
    def copies(self) -> Durability:
        """How many copies Kafka's own topics keep (consumer offsets, transaction state): Accord's rule for its
        topics (domain/replication.py), by the size of the cluster."""
        return durability(len(self.voters))


def server_properties(layout: KafkaLayout, port: int, controller_port: int, secrets: KafkaSecrets,
                      quorum: Quorum | None = None) -> str:
    # One SASL_PLAINTEXT listener for clients and the broker itself (SCRAM-SHA-512 users that Accord creates),
    # a controller listener that only the broker's own PLAIN user can use, and the StandardAuthorizer: whatever
    # no ACL allows is refused. Kafka's own topics are replicated as Accord's are (one copy on a single node);
    # the dedupe buffer is lowered so the log cleaner (used by compacted topics) fits a small heap.
    quorum = quorum or Quorum(1, {1: controller_port})
    copies = quorum.copies
    voters = ",".join(f"{node}@127.0.0.1:{cport}" for node, cport in sorted(quorum.voters.items()))
    scram = "org.apache.kafka.common.security.scram.ScramLoginModule"
    plain = "org.apache.kafka.common.security.plain.PlainLoginModule"
    # A cluster's defaults for a topic made without Accord (Accord names its own replication on every topic).
    cluster = [f"default.replication.factor={copies.replication_factor}",
               f"min.insync.replicas={copies.min_insync_replicas}"] if len(quorum.voters) > 1 else []
    return "\n".join([
        "process.roles=broker,controller",
        f"node.id={quorum.node_id}",
        f"controller.quorum.voters={voters}",
        f"listeners=SASL_PLAINTEXT://127.0.0.1:{port},CONTROLLER://127.0.0.1:{controller_port}",
        f"advertised.listeners=SASL_PLAINTEXT://127.0.0.1:{port}",
        "controller.listener.names=CONTROLLER",
        "inter.broker.listener.name=SASL_PLAINTEXT",
        "listener.security.protocol.map=SASL_PLAINTEXT:SASL_PLAINTEXT,CONTROLLER:SASL_PLAINTEXT",
        f"sasl.enabled.mechanisms={SCRAM_MECHANISM}",
        f"sasl.mechanism.inter.broker.protocol={SCRAM_MECHANISM}",
        f"listener.name.sasl_plaintext.scram-sha-512.sasl.jaas.config={_jaas(scram, BROKER_USER, secrets.broker)}",
        "sasl.mechanism.controller.protocol=PLAIN",
        "listener.name.controller.sasl.enabled.mechanisms=PLAIN",
        "listener.name.controller.plain.sasl.jaas.config=" + _jaas(
            plain, CONTROLLER_USER, secrets.controller, f' user_{CONTROLLER_USER}="{secrets.controller}"'),
        "authorizer.class.name=org.apache.kafka.metadata.authorizer.StandardAuthorizer",
        f"super.users=User:{ADMIN_USER};User:{BROKER_USER};User:{CONTROLLER_USER}",
        "allow.everyone.if.no.acl.found=false",
        f"log.dirs={layout.data}",
        "num.partitions=1",
        "auto.create.topics.enable=false",
        *cluster,
        f"offsets.topic.replication.factor={copies.replication_factor}",
        "offsets.topic.num.partitions=4",
        f"transaction.state.log.replication.factor={copies.replication_factor}",
        f"transaction.state.log.min.isr={copies.min_insync_replicas}",
        "transaction.state.log.num.partitions=4",
        f"share.coordinator.state.topic.replication.factor={copies.replication_factor}",
        f"share.coordinator.state.topic.min.isr={copies.min_insync_replicas}",
        "group.initial.rebalance.delay.ms=0",
        "log.cleaner.dedupe.buffer.size=16777216",
        "",
    ])


def _java_args(libs: Path, layout: KafkaLayout, heap: str, main: list[str]) -> list[str]:
    return [
        require_tool("java"), f"-Xms{heap}", f"-Xmx{heap}", "-XX:+UseG1GC", "-XX:MaxGCPauseMillis=20",
        "-Djava.awt.headless=true",
        f"-Dlog4j2.configurationFile={DEPLOY_LOCAL / 'log4j2.properties'}",
        f"-Daccord.kafka.log={layout.log}",
        "-cp", f"{libs}/*", *main,
    ]


def new_cluster_id() -> str:
    """A random Kafka cluster id (base64url of 16 bytes) that does not start with '-'.

    The storage tool would read an id starting with '-' as an option, as Kafka's own generator also avoids.
    """
    while True:
        cluster_id = base64.urlsafe_b64encode(uuid.uuid4().bytes).rstrip(b"=").decode()
        if not cluster_id.startswith("-"):
            return cluster_id


def _format(libs: Path, layout: KafkaLayout, admin_password: str, secrets: KafkaSecrets,
            cluster_id: str | None = None) -> None:
    """Format the storage once, with the admin's and the broker's SCRAM credentials in the first metadata (no
    one could create them later: creating a user needs a user); a formatted directory keeps its cluster id. The
    nodes of one cluster are formatted with the same `cluster_id`."""
    if (layout.data / "meta.properties").is_file():
        return
    args = _java_args(libs, layout, "256m", [
        "kafka.tools.StorageTool", "format", "-t", cluster_id or new_cluster_id(), "-c", str(layout.config),
        "--add-scram", f"{SCRAM_MECHANISM}=[name={ADMIN_USER},password={admin_password}]",
        "--add-scram", f"{SCRAM_MECHANISM}=[name={BROKER_USER},password={secrets.broker}]",
    ])
    proc = subprocess.run(args, capture_output=True, text=True, check=False)
    if proc.returncode != 0:
        raise ServiceStartError("formatting Kafka storage failed", (proc.stdout + proc.stderr)[-3000:])


def launch(libs: Path, layout: KafkaLayout, heap: str, secrets_dir: Path, port: int, controller_port: int,
           quorum: Quorum | None = None, cluster_id: str | None = None) -> int:
    """Write the node's config, format its storage if new, and start it detached; its pid (not yet ready)."""
    layout.log.parent.mkdir(parents=True, exist_ok=True)
    if (layout.data / "meta.properties").is_file() and not password_path(secrets_dir, ADMIN_USER).is_file():
        raise ServiceStartError(
            f"Kafka's data in {layout.data} was made without Accord's admin user (an older `accord local`, or the "
            "secrets were deleted); stop the services and wipe them with `accord local down --wipe`", "")
    admin_password = ensure_password(secrets_dir, ADMIN_USER)
    secrets = KafkaSecrets(ensure_password(secrets_dir, BROKER_USER), ensure_password(secrets_dir, CONTROLLER_USER))
    # The config holds the broker's passwords: readable by its owner only.
    write_private(layout.config, server_properties(layout, port, controller_port, secrets, quorum))
    _format(libs, layout, admin_password, secrets, cluster_id)
    return processes.start_detached(
        _java_args(libs, layout, heap, ["kafka.Kafka", str(layout.config)]),
        layout.out, layout.pid_file,
    )


def start(libs: Path, layout: KafkaLayout, heap: str, timeout_s: float, secrets_dir: Path,
          port: int | None = None) -> tuple[int, str]:
    """Start a single node on loopback (clients on `port`, default a free one; the controller on a free one);
    return (pid, bootstrap) once a broker answers the local admin."""
    port, controller_port = port or processes.free_port(), processes.free_port()
    while controller_port == port:
        controller_port = processes.free_port()
    pid = launch(libs, layout, heap, secrets_dir, port, controller_port)
    bootstrap = f"127.0.0.1:{port}"
    wait_ready(pid, local_access(secrets_dir, bootstrap), layout, timeout_s)
    return pid, bootstrap


def wait_ready(pid: int, admin: KafkaAccess, layout: KafkaLayout, timeout_s: float) -> None:
    deadline = time.monotonic() + timeout_s
    while True:
        if not processes.alive(pid, MARKER):
            raise ServiceStartError("Kafka exited during start-up", layout.log_tail())
        if processes.port_in_use(int(admin.bootstrap.rsplit(":", 1)[1])):
            try:
                describe_cluster(admin)
                return
            except ServiceError:
                pass
        if time.monotonic() > deadline:
            processes.stop(pid, MARKER)
            raise ServiceStartError(f"Kafka did not become ready within {timeout_s:.0f}s", layout.log_tail())
        time.sleep(0.5)
