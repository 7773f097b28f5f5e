"""Revocation is a hard fence, proven by repetition under load: a record published after a revocation was
acknowledged is never delivered under the revoked agreement, while two other processes keep both cores busy.

Each round revokes Leicester's T1 agreement, publishes cases once the revocation is acknowledged, waits until the
gate has committed past them (so a later reinstatement cannot cover them), reinstates, publishes cases that must be
delivered and waits for those too (so the next round's revocation cannot cover them). The gate is a real worker
thread on the real Kafka and OPA.
"""

from __future__ import annotations

import subprocess
import sys
import uuid
from collections.abc import Iterator
from typing import Any

import pytest

from broker.adapters.kafka_admin import end_positions, wait_consumed
from broker.config import Settings
from broker.demo.synthetic import positive_tests
from broker.domain.topics import ingest_topic
from broker.local.stack import Endpoints
from broker.runtime.api import open_ingest
from broker.runtime.gate import GateThread
from broker.services import policy_changes
from tests.conftest import TEST_OPERATOR, control_writer
from tests.integration.gate_support import T1, Receiver, end_offsets, specimen_day, start_gate, topic_for

ROUNDS = 50
AGREEMENT = "t1-leicester"
LEICESTER_DPH = topic_for("leicester-city-council", "dph")
# Two busy loops, one per core, for as long as the rounds take (and never longer than this).
BURN_LIMIT_S = 600


@pytest.fixture
def busy_cores() -> Iterator[None]:
    burners = [subprocess.Popen([sys.executable, "-c", f"import time\nend = time.time() + {BURN_LIMIT_S}\n"
                                 "while time.time() < end: pass"]) for _ in range(2)]
    try:
        yield
    finally:
        for burner in burners:
            burner.kill()
            burner.wait()


@pytest.fixture
def gate(services: Endpoints, applied_catalog: dict[str, Any], tmp_path_factory: pytest.TempPathFactory
         ) -> Iterator[GateThread]:
    runner = start_gate(services, "test-fence", "fence-worker")
    yield runner
    runner.stop()
    assert runner.failure is None, runner.failure


def test_no_record_published_after_a_revocation_is_delivered_in_fifty_rounds_on_busy_cores(
        services: Endpoints, gate: GateThread, receiver: Receiver, busy_cores: None) -> None:
    prefix = f"F{uuid.uuid4().hex[:6].upper()}"
    start = end_offsets(services.kafka, [LEICESTER_DPH])[LEICESTER_DPH]
    since = end_positions(services.kafka, [ingest_topic(T1)])  # the gate started at the end before this
    fenced: set[str] = set()     # published after a revocation was acknowledged
    allowed: set[str] = set()    # published after the reinstatement was acknowledged
    writer = control_writer(services.kafka)
    try:
        with open_ingest(services.kafka, services.registry_url, Settings()) as (ingest, _):
            for n in range(ROUNDS):
                policy_changes.revoke(writer, AGREEMENT, reason=f"fence round {n}", by=TEST_OPERATOR)
                cases = positive_tests(specimen_day(), {"leicester": 5}, prefix=f"{prefix}-R{n:02d}-")
                assert all(o.status == "accepted" for o in ingest.publish(T1, cases, source="test"))
                fenced |= {c["specimen_id"] for c in cases}
                wait_consumed(services.kafka, gate.settings.gate_group, since)
                policy_changes.reinstate(writer, AGREEMENT, by=TEST_OPERATOR)
                cases = positive_tests(specimen_day(), {"leicester": 2}, prefix=f"{prefix}-A{n:02d}-")
                assert all(o.status == "accepted" for o in ingest.publish(T1, cases, source="test"))
                allowed |= {c["specimen_id"] for c in cases}
                # Consumed before the next round's revocation, or the fence (rightly) holds them back too.
                wait_consumed(services.kafka, gate.settings.gate_group, since)
    finally:
        policy_changes.reinstate(writer, AGREEMENT, by=TEST_OPERATOR)
        writer.close()
    delivered = {r["specimen_id"] for r, _ in receiver.records(
        LEICESTER_DPH, start, lambda r, h: r["specimen_id"].startswith(prefix), want=len(allowed), timeout_s=60)}
    leaked = sorted(delivered & fenced)
    assert leaked == [], f"{len(leaked)} of {len(fenced)} records published after a revocation were delivered"
    assert allowed <= delivered, f"{len(allowed - delivered)} records published after reinstatement never arrived"
