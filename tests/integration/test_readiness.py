"""Truthful health: `/health` says the process answers, `/ready` whether what it needs answers too. An API whose
OPA is stopped stays alive but is not ready, naming OPA, and is ready again once OPA is back."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import httpx

from broker.config import Settings
from broker.local import opa_server, processes, toolchain
from broker.local.python_service import PythonService
from broker.local.stack import Endpoints, LocalStack
from broker.security.bundles import ensure_bundle
from tests.conftest import kafka_env


def _get(url: str) -> tuple[int, dict[str, Any]]:
    answer = httpx.get(url, timeout=30)
    return answer.status_code, answer.json()


def _until(url: str, status: int, deadline_s: float = 60.0) -> dict[str, Any]:
    deadline = time.monotonic() + deadline_s
    while True:
        code, body = _get(url)
        if code == status:
            return body
        assert time.monotonic() < deadline, f"{url} answered {code} {body}, not {status}"
        time.sleep(0.5)


def test_an_api_without_its_opa_is_alive_but_not_ready_and_says_why(
        services: Endpoints, local_settings: Settings, tmp_path: Path) -> None:
    # A private OPA with the session's signed bundle (the session's own OPA serves the other tests).
    binary = toolchain.ensure_opa(local_settings)
    bundle, _ = ensure_bundle(binary, LocalStack(local_settings).opa.bundle, local_settings.secrets_dir,
                              local_settings.policies_dir)
    layout = opa_server.OpaLayout(tmp_path / "opa")
    pid, opa_url = opa_server.start(binary, layout, 90, bundle)
    port = int(opa_url.rsplit(":", 1)[1])
    api = PythonService("api", tmp_path / "api")
    try:
        url = api.start({**kafka_env(services.kafka), "ACCORD_OPA_URL": opa_url,
                         "ACCORD_REGISTRY_URL": services.registry_url}, timeout_s=90, probe="/health")
        ready = _until(f"{url}/ready", 200)
        assert ready["status"] == "ready" and set(ready["checks"]) == {"kafka", "opa", "registry"}, ready

        processes.stop(pid, opa_server.MARKER)
        not_ready = _until(f"{url}/ready", 503)
        assert not_ready["failing"] == ["opa"], not_ready
        assert opa_url in not_ready["checks"]["opa"] and not_ready["checks"]["kafka"] == "ok", not_ready
        assert _get(f"{url}/health") == (200, {"status": "ok"})  # alive all along

        pid, _ = opa_server.start(binary, layout, 90, bundle, port)
        assert _until(f"{url}/ready", 200)["failing"] == []
    finally:
        api.stop()
        processes.stop(pid, opa_server.MARKER)
