"""deploy/compose/compose.yaml is a valid Compose file (the Compose Specification's JSON schema, kept in
deploy/schemas), runs Accord's image as its non-root user, and exposes metrics and services on loopback only."""

from __future__ import annotations

import copy
import json
from pathlib import Path
from typing import Any

import jsonschema
import yaml

DEPLOY = Path(__file__).resolve().parents[2] / "deploy"
COMPOSE = DEPLOY / "compose" / "compose.yaml"
SCHEMA = DEPLOY / "schemas" / "compose-spec.json"
ACCORD_SERVICES = {"registry", "api", "governance", "console", "gate"}


def _compose() -> dict[str, Any]:
    found: dict[str, Any] = yaml.safe_load(COMPOSE.read_text())
    return found


def _errors(document: dict[str, Any]) -> list[str]:
    validator = jsonschema.Draft201909Validator(json.loads(SCHEMA.read_text()))
    return [f"{'/'.join(map(str, e.absolute_path))}: {e.message}" for e in validator.iter_errors(document)]


def test_the_compose_file_is_valid_under_the_compose_specification() -> None:
    assert _errors(_compose()) == []


def test_the_schema_catches_a_misspelt_field() -> None:
    broken = copy.deepcopy(_compose())
    broken["services"]["api"]["helthcheck"] = broken["services"]["api"].pop("healthcheck")
    assert any("helthcheck" in error for error in _errors(broken))


def test_every_accord_service_runs_the_image_as_its_non_root_user_with_a_metrics_port() -> None:
    services = _compose()["services"]
    assert set(services) >= ACCORD_SERVICES
    for name in ACCORD_SERVICES:
        service = services[name]
        assert service["image"] == "accord:0.1.0", name
        assert service["user"] == "10001:10001", name
        assert service["environment"]["ACCORD_METRICS_PORT"] == "9100", name
        assert service["command"][:2] == [name, "serve"], name


def test_published_ports_are_on_loopback_only() -> None:
    for name, service in _compose()["services"].items():
        for port in service.get("ports", ()):
            assert str(port).startswith("127.0.0.1:"), f"{name} publishes {port} beyond this host"


def test_prometheus_scrapes_each_accord_service_and_opa() -> None:
    config = yaml.safe_load((DEPLOY / "compose" / "prometheus.yml").read_text())
    jobs = {job["job_name"]: job for job in config["scrape_configs"]}
    assert set(jobs) == {f"accord-{name}" for name in ACCORD_SERVICES} | {"opa"}
    assert jobs["opa"]["authorization"]["credentials_file"].endswith("opa-scraper.token")
    for name in ACCORD_SERVICES:
        assert jobs[f"accord-{name}"]["static_configs"] == [{"targets": [f"{name}:9100"]}]
