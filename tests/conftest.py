"""Marks every test under tests/integration and tests/e2e as needing the real services, and starts those services
(Kafka, OPA, the registry; through `accord local` code or named by ACCORD_ variables) once per session."""

from __future__ import annotations

import re
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from broker.adapters.kafka_admin import create_topics
from broker.adapters.kafka_control import ControlWriter, ensure_control_topics
from broker.adapters.opa import OpaPolicyEngine
from broker.catalog import load_and_compile
from broker.config import Settings
from broker.local.stack import Endpoints, LocalStack
from broker.local.toolchain import REPO_ROOT
from broker.services import policy_changes
from broker.services.policies import load_policies
from tests.integration.gate_support import make_test_catalog

_REAL = {"integration", "e2e"}


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        if _REAL & set(Path(str(item.path)).parts):
            item.add_marker(pytest.mark.integration)


@pytest.fixture(scope="session")
def services(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Endpoints]:
    """Kafka and OPA for the whole session; external ones when ACCORD_KAFKA_BOOTSTRAP/ACCORD_OPA_URL are set.

    Local services run from a temporary state directory (the jar and binary cache is shared), so a
    developer's own `accord local up` is never touched, and are stopped and wiped at the end.
    """
    settings = Settings(state_dir=tmp_path_factory.mktemp("accord-local"))
    stack = LocalStack(settings)
    try:
        endpoints = stack.up()
        # Gate tests run their own workers (threads or processes) in their own consumer groups; the stack's
        # worker would deliver the same records a second time to the same topics.
        stack.gate.stop()
        # Governance tests run their own service with a fake clock; the stack's would fire deadlines on real time.
        stack.governance.stop()
        yield endpoints
    finally:
        stack.down(wipe=True)


@pytest.fixture(scope="session")
def applied_catalog(services: Endpoints, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """The shipped catalog plus the gate tests' agreements, compiled, pushed to OPA and announced to gates."""
    document = load_and_compile(make_test_catalog(tmp_path_factory.mktemp("catalog")), REPO_ROOT / "schemas")
    ensure_control_topics(services.kafka_bootstrap)
    engine, writer = OpaPolicyEngine(services.opa_url), ControlWriter(services.kafka_bootstrap)
    try:
        load_policies(engine)
        policy_changes.apply_catalog(writer, engine, document, by="test")
    finally:
        engine.close()
        writer.close()
    return document


@pytest.fixture
def topic(services: Endpoints, request: pytest.FixtureRequest) -> str:
    """A fresh topic whose name says which test made it."""
    slug = re.sub(r"[^A-Za-z0-9._-]", "-", request.node.name)[:80]
    name = f"test.{slug}.{uuid.uuid4().hex[:8]}"
    create_topics(services.kafka_bootstrap, [name])
    return name
