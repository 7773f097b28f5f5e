"""The OPA server (`opa run --server`) on loopback, serving Accord's signed policy bundle to token holders only."""

from __future__ import annotations

import json
import time
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from broker.errors import ServiceStartError
from broker.local import processes
from broker.security.bundles import SIGNING_ALG, SignedBundle

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

    @property
    def bundle(self) -> Path:
        return self.root / "bundle.tar.gz"


def http_ok(url: str) -> bool:
    """True if a GET of `url` answers 200 within two seconds."""
    try:
        with urllib.request.urlopen(url, timeout=2) as resp:
            return bool(resp.status == 200)
    except (urllib.error.URLError, OSError):
        return False


def http_json(url: str) -> tuple[int, dict[str, Any]] | None:
    """(status, JSON object) of a GET of `url` (any status, a non-object body as {}), or None if nothing answers."""
    try:
        with urllib.request.urlopen(url, timeout=5) as resp:
            status, raw = int(resp.status), resp.read()
    except urllib.error.HTTPError as exc:
        status, raw = exc.code, exc.read()
        exc.close()
    except (urllib.error.URLError, OSError):
        return None
    try:
        body = json.loads(raw)
    except ValueError:
        body = {}
    return status, body if isinstance(body, dict) else {}


def healthy(url: str) -> bool:
    """True once OPA answers and has activated its bundles (`/health?bundles` is 503 until then)."""
    return http_ok(f"{url}/health?bundles")


def bundle_args(bundle: SignedBundle) -> list[str]:
    """`opa run` flags that load `bundle` and refuse it unless its signature verifies with its public key."""
    return ["--bundle", str(bundle.path), f"--verification-key={bundle.public_key}", f"--signing-alg={SIGNING_ALG}"]


def start(binary: Path, layout: OpaLayout, timeout_s: float, bundle: SignedBundle,
          port: int | None = None) -> tuple[int, str]:
    """Start OPA with `bundle` on loopback (`port`, default a free one); return (pid, url) once it serves it.

    OPA exits at start-up when the bundle is unsigned, signed by another key or altered after signing.
    """
    layout.root.mkdir(parents=True, exist_ok=True)
    port = port or processes.free_port()
    args = [
        str(binary), "run", "--server", f"--addr=127.0.0.1:{port}",
        "--skip-version-check", "--log-level=info", "--log-format=json", *bundle_args(bundle),
        # Every REST call but /health needs a token the bundle's system policy knows (services/opa_tokens.py).
        "--authentication=token", "--authorization=basic",
        "--set=decision_logs.console=true",  # decision ids in answers, for the audit trail (and OPA's log)
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
