"""A real Prometheus (Debian's package) scrapes the local stack's token-free metrics ports and OPA's /metrics with the
scraper token, finds every target up, and evaluates Accord's alert rules against what it scraped."""

from __future__ import annotations

import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from broker.config import Settings
from broker.local import prometheus_server
from broker.local.python_service import PythonService
from broker.local.stack import Endpoints, LocalStack
from broker.security.opa_tokens import SCRAPER, token_file
from tests.conftest import kafka_env

DEADLINE_S = 120.0


@pytest.fixture
def gate(services: Endpoints, applied_catalog: dict[str, Any], tmp_path: Path) -> Iterator[PythonService]:
    """A gate worker process of its own group (the session's stack runs none), started as `accord local up` starts
    one: with a token-free metrics port on loopback."""
    env = {**kafka_env(services.kafka), "ACCORD_OPA_URL": services.opa_url,
           "ACCORD_REGISTRY_URL": services.registry_url, "ACCORD_GATE_WORKER_ID": "prometheus-test",
           "ACCORD_GATE_GROUP": f"test-prometheus-{uuid.uuid4().hex[:8]}", "ACCORD_GATE_START_FROM": "latest"}
    worker = PythonService("gate", tmp_path / "gate")
    try:
        worker.start(env, timeout_s=120, probe="/health")
        yield worker
    finally:
        worker.stop()


@pytest.fixture
def prometheus(services: Endpoints, local_settings: Settings, gate: PythonService,
               tmp_path: Path) -> Iterator[tuple[str, dict[str, str]]]:
    server, _ = prometheus_server.ensure_binaries()
    address = gate.metrics_address()
    assert address is not None
    targets = LocalStack(local_settings).scrape_targets() | {"gate": address}
    layout = prometheus_server.PrometheusLayout(tmp_path / "prometheus")
    _, url = prometheus_server.start(server, layout, targets, token_file(local_settings.secrets_dir, SCRAPER),
                                    local_settings.start_timeout_s)
    try:
        yield url, targets
    finally:
        prometheus_server.stop(layout)


def _get(client: httpx.Client, path: str, **params: str) -> Any:
    answer = client.get(path, params=params)
    answer.raise_for_status()
    body = answer.json()
    assert body["status"] == "success", body
    return body["data"]


def _wait_for(client: httpx.Client, check: Any, seen: Any = None) -> Any:
    deadline = time.monotonic() + DEADLINE_S
    while time.monotonic() < deadline:
        found = check(client)
        if found is not None:
            return found
        time.sleep(0.5)
    pytest.fail(f"Prometheus did not get there within {DEADLINE_S:.0f}s; last seen: {seen(client) if seen else ''}")


def _targets(client: httpx.Client) -> dict[str, tuple[str, str]]:
    active = _get(client, "/api/v1/targets")["activeTargets"]
    return {target["labels"]["job"]: (target["health"], target["lastError"]) for target in active}


def _all_up(client: httpx.Client) -> dict[str, tuple[str, str]] | None:
    health = _targets(client)
    return health if health and all(state == "up" for state, _ in health.values()) else None


def test_prometheus_scrapes_every_local_service_without_a_token(prometheus: tuple[str, dict[str, str]]) -> None:
    url, targets = prometheus
    # The session's stack runs OPA, the registry, the API and the console (its gate and governance are stopped so
    # that tests run their own); each of them must be a target, and so must this test's gate worker.
    assert set(targets) >= {"opa", "registry", "api", "console", "gate"}
    with httpx.Client(base_url=url, timeout=10) as client:
        health = _wait_for(client, _all_up, _targets)
        assert set(health) == {"opa" if name == "opa" else f"accord-{name}" for name in targets}
        # What the API and the console export reaches Prometheus (the console reads the gate lag from Kafka).
        readable = _wait_for(client, lambda c: _get(c, "/api/v1/query", query="accord_gate_lag_readable")["result"]
                             or None)
        assert [sample["metric"]["job"] for sample in readable] == ["accord-console"]
        assert readable[0]["value"][1] == "1"
        # The gate worker's own series (its enforcement histogram) come from its metrics port.
        enforcement = _wait_for(client, lambda c: _get(c, "/api/v1/query", query=(
            'accord_gate_enforcement_seconds_count{job="accord-gate"}'))["result"] or None)
        assert enforcement[0]["metric"]["instance"] == targets["gate"]
        # The alert rules are loaded, and on a healthy stack none about reachability fires.
        rules = _get(client, "/api/v1/rules")["groups"]
        assert {rule["name"] for group in rules for rule in group["rules"]} >= {
            "AccordOpaUnreachable", "AccordServiceDown", "AccordGateLag", "AccordAuditChainStalled"}
        firing = {alert["labels"]["alertname"] for alert in _get(client, "/api/v1/alerts")["alerts"]}
        assert not firing & {"AccordOpaUnreachable", "AccordServiceDown"}


def test_the_services_own_metrics_routes_still_need_a_token(services: Endpoints) -> None:
    with httpx.Client(timeout=10) as client:
        assert client.get(f"{services.api_url}/metrics").status_code == 401
        assert client.get(f"{services.opa_url}/metrics").status_code == 401
