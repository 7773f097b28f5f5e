"""A real Prometheus (Debian's `prometheus` package) on loopback scraping the local stack's /metrics with
credentials that do not expire, and its `promtool`, which checks and unit-tests the alert rules in deploy/prometheus."""

from __future__ import annotations

import json
import shutil
import time
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from broker.errors import ServiceStartError, SetupError
from broker.local import processes, toolchain

MARKER = "prometheus"
PACKAGE = "prometheus"      # Debian's package: both `prometheus` and `promtool`
RULES = Path(__file__).resolve().parents[2] / "deploy" / "prometheus" / "alerts.yml"


@dataclass(frozen=True)
class PrometheusLayout:
    root: Path

    @property
    def log(self) -> Path:
        return self.root / "logs" / "prometheus.log"

    @property
    def pid_file(self) -> Path:
        return self.root / "prometheus.pid"

    @property
    def config(self) -> Path:
        return self.root / "prometheus.yml"

    @property
    def data(self) -> Path:
        return self.root / "data"


def ensure_binaries() -> tuple[Path, Path]:
    """(prometheus, promtool), installing Debian's `prometheus` package first when missing (as root only)."""
    found = _which()
    if found is not None:
        return found
    toolchain.apt_install(PACKAGE, "Prometheus is not installed (no `prometheus` and `promtool` on PATH): install "
                                   "Debian's `prometheus` package (apt-get install prometheus) and try again")
    found = _which()
    if found is None:
        raise SetupError("apt-get installed prometheus but `prometheus` or `promtool` is still not on PATH")
    return found


def _which() -> tuple[Path, Path] | None:
    server, tool = shutil.which("prometheus"), shutil.which("promtool")
    return (Path(server), Path(tool)) if server and tool else None


def scrape_config(targets: dict[str, str], opa_token_file: Path, interval_s: float = 1.0,
                  rules: Path | None = RULES) -> dict[str, Any]:
    """A Prometheus configuration scraping each job's host:port at /metrics, with Accord's alert rules loaded.

    Accord's processes are scraped without credentials (their metrics ports are on loopback, ACCORD_METRICS_PORT);
    OPA with its `scraper` token, read from `opa_token_file` at each scrape. Neither expires."""
    jobs = []
    for name, address in sorted(targets.items()):
        job: dict[str, Any] = {"job_name": "opa" if name == "opa" else f"accord-{name}",
                               "static_configs": [{"targets": [address]}]}
        if name == "opa":
            job["authorization"] = {"type": "Bearer", "credentials_file": str(opa_token_file)}
        jobs.append(job)
    return {"global": {"scrape_interval": f"{interval_s:g}s", "evaluation_interval": f"{interval_s:g}s"},
            **({"rule_files": [str(rules)]} if rules is not None else {}), "scrape_configs": jobs}


def start(binary: Path, layout: PrometheusLayout, targets: dict[str, str], opa_token_file: Path,
          timeout_s: float) -> tuple[int, str]:
    """Prometheus on a free loopback port with its own data directory, scraping `targets`; (pid, url) once ready."""
    layout.root.mkdir(parents=True, exist_ok=True)
    layout.data.mkdir(parents=True, exist_ok=True)
    # JSON is YAML: no YAML writer needed.
    layout.config.write_text(json.dumps(scrape_config(targets, opa_token_file), indent=2))
    port = processes.free_port()
    args = [str(binary), f"--config.file={layout.config}", f"--storage.tsdb.path={layout.data}",
            f"--web.listen-address=127.0.0.1:{port}", "--log.level=warn"]
    pid = processes.start_detached(args, layout.log, layout.pid_file)
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + timeout_s
    while not _ready(url):
        if not processes.alive(pid, MARKER):
            raise ServiceStartError("Prometheus exited during start-up", processes.tail(layout.log))
        if time.monotonic() > deadline:
            processes.stop(pid, MARKER)
            raise ServiceStartError(f"Prometheus was not ready within {timeout_s:.0f}s", processes.tail(layout.log))
        time.sleep(0.1)
    return pid, url


def _ready(url: str) -> bool:
    try:
        with urllib.request.urlopen(f"{url}/-/ready", timeout=2) as resp:
            return bool(resp.status == 200)
    except (urllib.error.URLError, OSError):
        return False


def stop(layout: PrometheusLayout) -> bool:
    stopped = processes.stop(processes.read_pid(layout.pid_file), MARKER)
    layout.pid_file.unlink(missing_ok=True)
    return stopped
