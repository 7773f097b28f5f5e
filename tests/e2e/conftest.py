"""Fixtures for the dispute scenarios: a gate worker, a governance service on a fake clock, a subscriber's view."""

from __future__ import annotations

import json
import threading
import uuid
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from secrets import token_bytes
from typing import Any, ClassVar

import pytest

from broker.domain.audit import new_signing_key
from broker.domain.webhooks import parse_allow
from broker.local.stack import Endpoints
from broker.runtime.gate import GateThread
from broker.runtime.governance import GovernanceService
from tests.conftest import SCHEMAS, control_writer, governance_service
from tests.e2e.scenario_support import Cleanup, FakeClock
from tests.integration.gate_support import start_gate

# The scenarios' webhook receivers are on loopback, which only an operator's allow-list lets webhooks reach.
LOOPBACK = parse_allow("127.0.0.1/32")


@pytest.fixture(scope="package")
def gate(services: Endpoints, applied_catalog: dict[str, Any], tmp_path_factory: pytest.TempPathFactory
         ) -> Iterator[GateThread]:
    runner = start_gate(services, "e2e-gate", "e2e-worker")
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
    service = governance_service(services, audit_key=new_signing_key(), schemas_dir=SCHEMAS,
                                webhook_secret=token_bytes(32), webhook_allow=LOOPBACK, clock=clock,
                                tick_s=3600.0, transactional_id=f"e2e-governance-{run}",
                                topic=f"_accord.governance.e2e-{run}",
                                audit_topic=f"_accord.audit.e2e-{run}", webhook_backoff_s=0.05).start()
    yield service
    service.stop()


@pytest.fixture
def cleanup(services: Endpoints) -> Iterator[Cleanup]:
    """Undo on the shared control topic what a scenario put there (grants, levels, revocations)."""
    writer = control_writer(services.kafka, client_id="e2e-cleanup")
    undo = Cleanup(writer)
    yield undo
    undo.run()
    writer.close()



class _Inbox(BaseHTTPRequestHandler):
    received: ClassVar[list[tuple[str, dict[str, Any]]]] = []
    lock = threading.Lock()

    def do_POST(self) -> None:
        payload = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        with self.lock:
            self.received.append((self.path, payload))
        self.send_response(204)
        self.end_headers()

    def log_message(self, *_: Any) -> None:
        pass


@pytest.fixture
def inbox() -> Iterator[tuple[str, list[tuple[str, dict[str, Any]]]]]:
    """A webhook receiver on loopback: its URL, and every (path, payload) POSTed to it."""
    _Inbox.received = []
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Inbox)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}", _Inbox.received
    server.shutdown()
    server.server_close()
    thread.join()
