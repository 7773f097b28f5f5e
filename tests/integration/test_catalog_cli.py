"""`accord catalog validate|apply` and `accord agreement revoke|reinstate` as a user runs them: the changes go
through a real governance service, with the acting person's token."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from broker.local.python_service import PythonService
from broker.local.stack import Endpoints
from tests.conftest import bearer, kafka_env, opa_as
from tests.integration.gate_support import make_test_catalog


def _accord(args: list[str], env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "broker", *args], capture_output=True, text=True, env=env,
                          timeout=120, check=False)


def _env(services: Endpoints, tmp_path: Path) -> dict[str, str]:
    return {**{k: v for k, v in os.environ.items() if not k.startswith("ACCORD_")},
            "ACCORD_STATE_DIR": str(tmp_path / "state"), **dict(line.split("=", 1) for line in services.env_lines())}


def test_validate_names_file_line_and_field(tmp_path: Path) -> None:
    catalog = make_test_catalog(tmp_path)
    ok = _accord(["catalog", "validate", str(catalog)], dict(os.environ))
    assert ok.returncode == 0 and "valid, revision c-" in ok.stdout, ok.stderr
    agreement = catalog / "agreements" / "t1-leicester.yaml"
    agreement.write_text(agreement.read_text().replace("template: t1-positive-tests",
                                                       "template: t1-positive-tests\nlegal_basis: [a-hunch]"))
    bad = _accord(["catalog", "validate", str(catalog)], dict(os.environ))
    assert bad.returncode == 1
    assert "t1-leicester.yaml:3" in bad.stderr and "legal_basis" in bad.stderr and "a-hunch" in bad.stderr


@pytest.fixture(scope="module")
def governance_url(services: Endpoints, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A real `accord governance serve` (the session stopped its own), signing with the session's control key."""
    process = PythonService("governance", tmp_path_factory.mktemp("governance"))
    yield process.start(kafka_env(services.kafka) | {"ACCORD_OPA_URL": services.opa_url}, 90, probe="/health")
    process.stop()


def _token(body: str, role: str, person: str = "tests") -> str:
    return bearer(body, role, person)["Authorization"].removeprefix("Bearer ")


def test_apply_is_the_operators_pushes_to_opa_and_announces(
        services: Endpoints, applied_catalog: dict[str, Any], governance_url: str, tmp_path: Path) -> None:
    env = _env(services, tmp_path) | {"ACCORD_GOVERNANCE_URL": governance_url}
    catalog = str(make_test_catalog(tmp_path))
    anonymous = _accord(["catalog", "apply", catalog], env)
    assert anonymous.returncode == 1 and "--token" in anonymous.stderr
    board = _accord(["catalog", "apply", catalog, "--token", _token("dhsc", "governance-board")], env)
    assert board.returncode == 1 and "forbidden" in board.stderr
    applied = _accord(["catalog", "apply", catalog, "--token", _token("accord", "operator", "Ops on call")], env)
    assert applied.returncode == 0, applied.stderr
    assert f"applied catalog {applied_catalog['revision']}" in applied.stdout and "control offset" in applied.stdout
    assert "by Ops on call (operator, accord)" in applied.stdout
    engine = opa_as(services.opa_url)
    try:
        assert engine.evaluate("accord.catalog.revision", {}) == applied_catalog["revision"]
    finally:
        engine.close()


def test_revoke_needs_a_token_and_a_reason_and_reinstate_lifts_it(
        services: Endpoints, applied_catalog: dict[str, Any], governance_url: str, tmp_path: Path) -> None:
    env = _env(services, tmp_path) | {"ACCORD_GOVERNANCE_URL": governance_url}
    ig_lead = ["--token", _token("ukhsa", "ig-lead", "UKHSA IG Lead")]
    anonymous = _accord(["agreement", "revoke", "t1-cornwall", "--reason", "test"], env)
    assert anonymous.returncode == 1 and "--token" in anonymous.stderr
    subscriber = _accord(["agreement", "revoke", "t1-cornwall", "--reason", "test",
                          "--token", _token("cornwall-council", "dph")], env)
    assert subscriber.returncode == 1 and "forbidden" in subscriber.stderr
    refused = _accord(["agreement", "revoke", "t1-cornwall", "--reason", " ", *ig_lead], env)
    assert refused.returncode == 1 and "needs a reason" in refused.stderr
    revoked = _accord(["agreement", "revoke", "t1-cornwall", "--reason", "test", *ig_lead], env)
    assert revoked.returncode == 0 and "revoked t1-cornwall at control offset" in revoked.stdout, revoked.stderr
    assert "by UKHSA IG Lead (ig-lead, ukhsa)" in revoked.stdout
    reinstated = _accord(["agreement", "reinstate", "t1-cornwall", *ig_lead], env)
    assert reinstated.returncode == 0 and "reinstated t1-cornwall" in reinstated.stdout, reinstated.stderr
