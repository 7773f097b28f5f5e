"""A single-node KRaft Kafka (combined broker and controller, static voter) on loopback."""

from __future__ import annotations

import base64
import subprocess
import time
import uuid
from dataclasses import dataclass
from pathlib import Path

from broker.adapters.kafka_admin import describe_cluster
from broker.errors import ServiceError, ServiceStartError
from broker.local import processes
from broker.local.toolchain import DEPLOY_LOCAL, require_tool

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


def server_properties(layout: KafkaLayout, port: int, controller_port: int) -> str:
    # Replication factors of 1 because there is one broker; the dedupe buffer is lowered so the
    # log cleaner (used by compacted topics) fits a small heap.
    return "\n".join([
        "process.roles=broker,controller",
        "node.id=1",
        f"controller.quorum.voters=1@127.0.0.1:{controller_port}",
        f"listeners=PLAINTEXT://127.0.0.1:{port},CONTROLLER://127.0.0.1:{controller_port}",
        f"advertised.listeners=PLAINTEXT://127.0.0.1:{port}",
        "controller.listener.names=CONTROLLER",
        "inter.broker.listener.name=PLAINTEXT",
        "listener.security.protocol.map=PLAINTEXT:PLAINTEXT,CONTROLLER:PLAINTEXT",
        f"log.dirs={layout.data}",
        "num.partitions=1",
        "auto.create.topics.enable=false",
        "offsets.topic.replication.factor=1",
        "offsets.topic.num.partitions=4",
        "transaction.state.log.replication.factor=1",
        "transaction.state.log.min.isr=1",
        "transaction.state.log.num.partitions=4",
        "share.coordinator.state.topic.replication.factor=1",
        "share.coordinator.state.topic.min.isr=1",
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


def _format(libs: Path, layout: KafkaLayout) -> None:
    """Format the storage once; a formatted directory keeps its cluster id across restarts."""
    if (layout.data / "meta.properties").is_file():
        return
    cluster_id = new_cluster_id()
    args = _java_args(libs, layout, "256m", [
        "kafka.tools.StorageTool", "format", "-t", cluster_id, "-c", str(layout.config),
    ])
    proc = subprocess.run(args, capture_output=True, text=True, check=False)
    if proc.returncode != 0:
        raise ServiceStartError("formatting Kafka storage failed", (proc.stdout + proc.stderr)[-3000:])


def start(libs: Path, layout: KafkaLayout, heap: str, timeout_s: float) -> tuple[int, str]:
    """Start Kafka on free loopback ports; return (pid, bootstrap) once a broker answers."""
    layout.log.parent.mkdir(parents=True, exist_ok=True)
    port, controller_port = processes.free_port(), processes.free_port()
    while controller_port == port:
        controller_port = processes.free_port()
    layout.config.write_text(server_properties(layout, port, controller_port))
    _format(libs, layout)
    pid = processes.start_detached(
        _java_args(libs, layout, heap, ["kafka.Kafka", str(layout.config)]),
        layout.out, layout.pid_file,
    )
    bootstrap = f"127.0.0.1:{port}"
    wait_ready(pid, bootstrap, layout, timeout_s)
    return pid, bootstrap


def wait_ready(pid: int, bootstrap: str, layout: KafkaLayout, timeout_s: float) -> None:
    deadline = time.monotonic() + timeout_s
    while True:
        if not processes.alive(pid, MARKER):
            raise ServiceStartError("Kafka exited during start-up", layout.log_tail())
        if processes.port_in_use(int(bootstrap.rsplit(":", 1)[1])):
            try:
                describe_cluster(bootstrap)
                return
            except ServiceError:
                pass
        if time.monotonic() > deadline:
            processes.stop(pid, MARKER)
            raise ServiceStartError(f"Kafka did not become ready within {timeout_s:.0f}s", layout.log_tail())
        time.sleep(0.5)
