"""Accord's schema registry as a local service (`accord registry serve`) beside Kafka."""

from __future__ import annotations

import os
import sys
import time
from dataclasses import dataclass
from pathlib import Path

from broker.errors import ServiceStartError
from broker.local import processes
from broker.local.opa_server import http_ok

MARKER = "registry serve"


@dataclass(frozen=True)
class RegistryLayout:
    root: Path

    @property
    def log(self) -> Path:
        return self.root / "logs" / "registry.log"

    @property
    def pid_file(self) -> Path:
        return self.root / "registry.pid"


def start(kafka_bootstrap: str, layout: RegistryLayout, timeout_s: float) -> tuple[int, str]:
    """Start the registry on a free loopback port; return (pid, url) once it answers."""
    layout.root.mkdir(parents=True, exist_ok=True)
    port = processes.free_port()
    args = [sys.executable, "-m", "broker", "registry", "serve", "--host", "127.0.0.1", "--port", str(port)]
    env = dict(os.environ, ACCORD_KAFKA_BOOTSTRAP=kafka_bootstrap)
    pid = processes.start_detached(args, layout.log, layout.pid_file, env=env)
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + timeout_s
    while not http_ok(f"{url}/"):
        if not processes.alive(pid, MARKER):
            raise ServiceStartError("the schema registry exited during start-up", processes.tail(layout.log))
        if time.monotonic() > deadline:
            processes.stop(pid, MARKER)
            raise ServiceStartError(f"the schema registry did not answer within {timeout_s:.0f}s",
                                    processes.tail(layout.log))
        time.sleep(0.1)
    return pid, url
