"""Accord's own services (`accord registry serve`, `accord api serve`) as local processes beside Kafka."""

from __future__ import annotations

import os
import sys
import time
from dataclasses import dataclass
from pathlib import Path

from broker.errors import ServiceStartError
from broker.local import processes
from broker.local.opa_server import http_ok


@dataclass(frozen=True)
class PythonService:
    """One `accord <name> serve` process under `root`."""

    name: str
    root: Path

    @property
    def marker(self) -> str:
        return f"broker {self.name} serve"

    @property
    def log(self) -> Path:
        return self.root / "logs" / f"{self.name}.log"

    @property
    def pid_file(self) -> Path:
        return self.root / f"{self.name}.pid"

    def running(self) -> bool:
        return processes.alive(processes.read_pid(self.pid_file), self.marker)

    def start(self, env: dict[str, str], timeout_s: float, probe: str = "/", port: int | None = None) -> str:
        """Start on loopback `port` (default a free one) with `env` added; return the URL once `probe` answers 200."""
        self.root.mkdir(parents=True, exist_ok=True)
        port = port or processes.free_port()
        args = [sys.executable, "-m", "broker", self.name, "serve", "--host", "127.0.0.1", "--port", str(port)]
        pid = processes.start_detached(args, self.log, self.pid_file, env=dict(os.environ) | env)
        url = f"http://127.0.0.1:{port}"
        deadline = time.monotonic() + timeout_s
        while not http_ok(f"{url}{probe}"):
            if not processes.alive(pid, self.marker):
                raise ServiceStartError(f"accord {self.name} exited during start-up", processes.tail(self.log))
            if time.monotonic() > deadline:
                processes.stop(pid, self.marker)
                raise ServiceStartError(f"accord {self.name} did not answer within {timeout_s:.0f}s",
                                        processes.tail(self.log))
            time.sleep(0.1)
        return url

    def stop(self) -> bool:
        stopped = processes.stop(processes.read_pid(self.pid_file), self.marker)
        self.pid_file.unlink(missing_ok=True)
        return stopped
