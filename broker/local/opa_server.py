"""The OPA server (`opa run --server`) on loopback."""

from __future__ import annotations

import time
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path

from broker.errors import ServiceStartError
from broker.local import processes

MARKER = "opa"


@dataclass(frozen=True)
class OpaLayout:
    root: Path

    @property
    def log(self) -> Path:
        return self.root / "logs" / "opa.log"

    @property
    def pid_file(self) -> Path:
        return self.root / "opa.pid"


def http_ok(url: str) -> bool:
    """True if a GET of `url` answers 200 within two seconds."""
    try:
        with urllib.request.urlopen(url, timeout=2) as resp:
            return bool(resp.status == 200)
    except (urllib.error.URLError, OSError):
        return False


def healthy(url: str) -> bool:
    return http_ok(f"{url}/health")


def start(binary: Path, layout: OpaLayout, timeout_s: float) -> tuple[int, str]:
    """Start OPA on a free loopback port; return (pid, url) once /health answers 200."""
    layout.root.mkdir(parents=True, exist_ok=True)
    port = processes.free_port()
    args = [
        str(binary), "run", "--server", f"--addr=127.0.0.1:{port}",
        "--skip-version-check", "--log-level=info", "--log-format=json",
    ]
    pid = processes.start_detached(args, layout.log, layout.pid_file)
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + timeout_s
    while not healthy(url):
        if not processes.alive(pid, MARKER):
            raise ServiceStartError("OPA exited during start-up", processes.tail(layout.log))
        if time.monotonic() > deadline:
            processes.stop(pid, MARKER)
            raise ServiceStartError(f"OPA did not become healthy within {timeout_s:.0f}s",
                                    processes.tail(layout.log))
        time.sleep(0.1)
    return pid, url
