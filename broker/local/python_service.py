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

    @property
    def metrics_file(self) -> Path:
        """Where the address of its token-free /metrics (ACCORD_METRICS_PORT, loopback) is kept while it runs."""
        return self.root / "metrics-address"

    def metrics_address(self) -> str | None:
        """host:port of its token-free /metrics, if it is running."""
        if not self.running():
            return None
        try:
            return self.metrics_file.read_text().strip() or None
        except FileNotFoundError:
            return None

    def running(self) -> bool:
        return processes.alive(processes.read_pid(self.pid_file), self.marker)

    def start(self, env: dict[str, str], timeout_s: float, probe: str = "/", port: int | None = None) -> str:
        """Start on loopback `port` (default a free one) with `env` added; return the URL once `probe` answers 200."""
        self.root.mkdir(parents=True, exist_ok=True)
        port, metrics_port = port or processes.free_port(), processes.free_port()
        args = [sys.executable, "-m", "broker", self.name, "serve", "--host", "127.0.0.1", "--port", str(port)]
        # Prometheus scrapes a loopback port without a token (a bearer token would expire under it).
        scrape = {"ACCORD_METRICS_HOST": "127.0.0.1", "ACCORD_METRICS_PORT": str(metrics_port)}
        pid = processes.start_detached(args, self.log, self.pid_file, env=dict(os.environ) | env | scrape)
        self.metrics_file.write_text(f"127.0.0.1:{metrics_port}\n")
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
        self.metrics_file.unlink(missing_ok=True)
        return stopped
