"""Fixtures for the dispute scenarios: a gate worker, a governance service on a fake clock, a subscriber's view."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from typing import Any

import pytest

from broker.adapters.kafka_control import ControlWriter
from broker.local.stack import Endpoints
from broker.services.gate_runtime import GateThread
from broker.services.governance_runtime import GovernanceService
from tests.e2e.scenario_support import Cleanup, FakeClock
from tests.integration.gate_support import Receiver, start_gate


@pytest.fixture(scope="package")
def gate(services: Endpoints, applied_catalog: dict[str, Any], tmp_path_factory: pytest.TempPathFactory
         ) -> Iterator[GateThread]:
    runner = start_gate(services, tmp_path_factory.mktemp("gate"), "e2e-gate", "e2e-worker")
    yield runner
    runner.stop()
    assert runner.failure is None, runner.failure


@pytest.fixture
def clock() -> FakeClock:
    """Starts half a day in the past, so a dispute can climb every emergency tier and still be decided before
    the real time the gate checks grants against."""
    return FakeClock.hours_ago(12)


@pytest.fixture
def governance(services: Endpoints, applied_catalog: dict[str, Any], clock: FakeClock) -> Iterator[GovernanceService]:
    run = uuid.uuid4().hex[:8]
    service = GovernanceService(services.kafka_bootstrap, clock=clock, tick_s=3600.0,
                                transactional_id=f"e2e-governance-{run}", topic=f"_accord.governance.e2e-{run}",
                                audit_topic=f"_accord.audit.e2e-{run}", webhook_backoff_s=0.05).start()
    yield service
    service.stop()


@pytest.fixture
def cleanup(services: Endpoints) -> Iterator[Cleanup]:
    """Undo on the shared control topic what a scenario put there (grants, levels, revocations)."""
    writer = ControlWriter(services.kafka_bootstrap, client_id="e2e-cleanup")
    undo = Cleanup(writer)
    yield undo
    undo.run()
    writer.close()


@pytest.fixture
def receiver(services: Endpoints) -> Iterator[Receiver]:
    r = Receiver(services.kafka_bootstrap, services.registry_url)
    yield r
    r.close()
