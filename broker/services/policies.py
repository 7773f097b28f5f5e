"""Accord's Rego modules, read from policies/ and pushed to the policy engine."""

from __future__ import annotations

from pathlib import Path

from broker.local.toolchain import REPO_ROOT
from broker.ports import PolicyEngine

POLICY_DIR = REPO_ROOT / "policies"


def read_policies(policy_dir: Path = POLICY_DIR) -> dict[str, str]:
    """Every non-test Rego module under `policy_dir`, by module id (its path without `.rego`)."""
    return {
        path.relative_to(policy_dir).with_suffix("").as_posix(): path.read_text()
        for path in sorted(policy_dir.rglob("*.rego")) if not path.name.endswith("_test.rego")
    }


def load_policies(engine: PolicyEngine, policy_dir: Path = POLICY_DIR) -> list[str]:
    """Push every non-test module to the engine; returns their module ids."""
    modules = read_policies(policy_dir)
    for module_id, source in modules.items():
        engine.put_policy(module_id, source)
    return list(modules)
