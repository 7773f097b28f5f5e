"""`accord catalog validate|apply` and `accord agreement revoke|reinstate` as a user runs them."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path
from typing import Any

from broker.local.stack import Endpoints
from tests.conftest import opa_as
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


def test_apply_pushes_to_opa_and_announces(services: Endpoints, applied_catalog: dict[str, Any],
                                           tmp_path: Path) -> None:
    applied = _accord(["catalog", "apply", str(make_test_catalog(tmp_path))], _env(services, tmp_path))
    assert applied.returncode == 0, applied.stderr
    assert f"applied catalog {applied_catalog['revision']}" in applied.stdout and "control offset" in applied.stdout
    engine = opa_as(services.opa_url)
    try:
        assert engine.evaluate("accord.catalog.revision", {}) == applied_catalog["revision"]
    finally:
        engine.close()


def test_revoke_needs_a_reason_and_reinstate_lifts_it(services: Endpoints, applied_catalog: dict[str, Any],
                                                      tmp_path: Path) -> None:
    env = _env(services, tmp_path)
    refused = _accord(["agreement", "revoke", "t1-cornwall", "--reason", " ", "--by", "test"], env)
    assert refused.returncode == 1 and "needs a reason" in refused.stderr
    revoked = _accord(["agreement", "revoke", "t1-cornwall", "--reason", "test", "--by", "test"], env)
    assert revoked.returncode == 0 and "revoked t1-cornwall at control offset" in revoked.stdout
    reinstated = _accord(["agreement", "reinstate", "t1-cornwall"], env)
    assert reinstated.returncode == 0 and "reinstated t1-cornwall" in reinstated.stdout
