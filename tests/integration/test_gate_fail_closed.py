"""The gate fails closed on real Kafka and OPA: with OPA stopped nothing new is delivered, and once OPA is back with
its signed bundle every record published meanwhile is delivered exactly once."""

from __future__ import annotations

import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest

from broker.config import Settings
from broker.demo.synthetic import positive_tests
from broker.local import opa_server, processes, toolchain
from broker.local.stack import Endpoints
from broker.runtime.gate import GateEndpoints, GateThread
from broker.security import opa_tokens
from broker.security.bundles import SignedBundle, build_bundle
from tests.conftest import POLICIES
from tests.integration.gate_support import T1, Receiver, end_offsets, publish, specimen_day, topic_for

LEICESTER_DPH = topic_for("leicester-city-council", "dph")


class OwnOpa:
    """An OPA of this test's own, so stopping it leaves the session's OPA to the other tests."""

    def __init__(self, root: Path) -> None:
        self.binary = toolchain.ensure_opa(Settings())
        self.layout = opa_server.OpaLayout(root / "opa")
        self.bundle: SignedBundle = build_bundle(self.binary, root / "bundle.tar.gz", root / "secrets", POLICIES)
        self.pid, self.url = opa_server.start(self.binary, self.layout, 30, self.bundle)

    def stop(self) -> None:
        processes.stop(self.pid, opa_server.MARKER)

    def restart(self) -> None:
        self.pid, _ = opa_server.start(self.binary, self.layout, 30, self.bundle, port=urlsplit(self.url).port)


@pytest.fixture
def opa(tmp_path: Path) -> Iterator[OwnOpa]:
    own = OwnOpa(tmp_path)
    yield own
    own.stop()


@pytest.fixture(params=["kafka-python", "librdkafka"])
def gate(services: Endpoints, applied_catalog: dict[str, Any], opa: OwnOpa, tmp_path: Path,
         request: pytest.FixtureRequest) -> Iterator[GateThread]:
    # Both data-path transports: an aborted batch is consumed again from the committed offsets by either.
    settings = Settings(gate_group=f"test-fail-closed-{uuid.uuid4().hex[:8]}",
                        gate_start_from="latest", gate_transport=request.param,
                        opa_token_file=opa_tokens.token_file(tmp_path / "secrets", opa_tokens.WRITER))
    runner = GateThread(GateEndpoints(services.kafka, opa.url, services.registry_url), settings,
                        "test-fail-closed").start()
    yield runner
    runner.stop()
    assert runner.failure is None, runner.failure



def _wait_for(condition: Any, timeout_s: float = 10.0) -> None:
    deadline = time.monotonic() + timeout_s
    while not condition():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.1)


def test_nothing_is_delivered_while_opa_is_down_and_nothing_is_lost(
        services: Endpoints, gate: GateThread, opa: OwnOpa, receiver: Receiver) -> None:
    prefix = f"F{uuid.uuid4().hex[:6].upper()}"
    start = end_offsets(services.kafka, [LEICESTER_DPH])[LEICESTER_DPH]

    def ours(record: dict[str, Any], _: dict[str, bytes]) -> bool:
        return str(record.get("specimen_id", "")).startswith(prefix)

    before = publish(services, T1, positive_tests(specimen_day(), {"leicester": 2}, prefix=f"{prefix}-A"))
    assert len(receiver.records(LEICESTER_DPH, start, ours, want=2)) == 2

    opa.stop()
    assert gate.gate is not None
    _wait_for(lambda: gate.gate is not None and gate.gate.held)
    during = publish(services, T1, positive_tests(specimen_day(), {"leicester": 3}, prefix=f"{prefix}-B"))
    held = receiver.records(LEICESTER_DPH, start, ours, want=3, timeout_s=5, settle_s=0)
    assert {h["accord.source"] for _, h in held} == set(before)  # nothing published during the outage left

    opa.restart()
    delivered = receiver.records(LEICESTER_DPH, start, ours, want=5, timeout_s=30)
    sources = [h["accord.source"] for _, h in delivered]
    assert sorted(sources) == sorted([*before, *during])  # every record, each exactly once
    assert not gate.gate.held and gate.alive()
