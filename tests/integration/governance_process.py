"""The governance service as users run it (`accord governance serve`, its own process, its own Kafka user) on the
session's Kafka and OPA, and a webhook receiver on loopback that verifies what it gets as a body would."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

from broker.adapters.governance_http import GovernanceClient
from broker.config import Settings
from broker.domain.webhooks import verify
from broker.local.python_service import PythonService
from broker.local.stack import Endpoints
from broker.security.kafka_identities import service_env
from tests.conftest import bearer

WAIT_S = 120.0      # a bound for failing, never a measurement: every wait ends as soon as its condition holds


def wait_for(condition: Callable[[], bool], what: str, timeout_s: float = WAIT_S) -> None:
    deadline = time.monotonic() + timeout_s
    while not condition():
        assert time.monotonic() < deadline, f"gave up waiting for {what}"
        time.sleep(0.1)


class GovernanceProcess:
    """Starts, stops and restarts one `accord governance serve` process; `url` is where the running one answers."""

    def __init__(self, services: Endpoints, settings: Settings, root: Path) -> None:
        self._service = PythonService("governance", root)
        # The process reads the session's secrets directory (ACCORD_STATE_DIR is inherited) and may reach the
        # tests' receivers on loopback only because the operator setting allows it.
        self._env = {"ACCORD_KAFKA_BOOTSTRAP": services.kafka.bootstrap, "ACCORD_OPA_URL": services.opa_url,
                     "ACCORD_WEBHOOK_ALLOW": "127.0.0.1/32"} | service_env(settings, "governance")
        # No delivery fences here: a keeper acts on every delivery topic of the shared cluster by the real clock,
        # and would fence other tests' topics whose agreements a test has revoked or a fake clock has ended.
        self._env["ACCORD_FENCES_KAFKA_USERNAME"] = ""
        self._timeout_s = settings.start_timeout_s
        self.url = ""

    def start(self) -> str:
        self.url = self._service.start(self._env, self._timeout_s, probe="/health")
        return self.url

    def stop(self) -> None:
        self._service.stop()

    def log(self) -> str:
        return self._service.log.read_text(errors="replace") if self._service.log.exists() else ""


@dataclass
class Received:
    headers: dict[str, str]
    body: bytes

    @property
    def payload(self) -> dict[str, Any]:
        return dict(json.loads(self.body))


@dataclass
class Receiver:
    """A body's webhook endpoint on 127.0.0.1 that can go down and come back on the same port."""

    port: int = 0
    received: list[Received] = field(default_factory=list)
    _server: ThreadingHTTPServer | None = None
    _thread: threading.Thread | None = None
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def up(self) -> str:
        inbox, lock = self.received, self._lock

        class Endpoint(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers["Content-Length"]))
                with lock:
                    inbox.append(Received(dict(self.headers.items()), body))
                self.send_response(204)
                self.end_headers()

            def log_message(self, *_: Any) -> None:
                pass

        self._server = ThreadingHTTPServer(("127.0.0.1", self.port), Endpoint)
        self.port = self._server.server_address[1]
        self._thread = threading.Thread(target=self._server.serve_forever, kwargs={"poll_interval": 0.05},
                                        daemon=True)
        self._thread.start()
        return f"http://127.0.0.1:{self.port}"

    def down(self) -> None:
        if self._server is not None and self._thread is not None:
            self._server.shutdown()
            self._server.server_close()
            self._thread.join()
        self._server = self._thread = None

    def all(self) -> list[Received]:
        with self._lock:
            return list(self.received)

    def verified(self, secret: str) -> list[dict[str, Any]]:
        """Every payload received, each checked as a receiver must: the signature over its raw body with the
        secret it was given, within the replay window of this machine's clock."""
        found = []
        for got in self.all():
            verify(secret, got.headers["X-Accord-Signature"], got.body, time.time())
            found.append({**got.payload, "_delivery": got.headers["X-Accord-Delivery"]})
        return found


def withdraw_grant(governance_url: str, catalog: Mapping[str, Any], ident: str, grant: Mapping[str, Any]) -> None:
    """End grant `ident` as the governance service's users would: its publisher contests it and the deciders of the
    tier the dispute opens at withdraw it. Tombstoning the grant on the control topic alone does not last: the next
    governance service on the same governance topic writes again every grant its log still holds in force."""
    def token(body: str, role: str) -> str:
        return bearer(body, role, f"{role}@{body}")["Authorization"].removeprefix("Bearer ")

    stream, subscriber = str(grant["stream"]), str(grant["subscriber"])
    publisher = str(((catalog.get("streams") or {}).get(stream) or {}).get("owner") or stream.split(".")[0])
    role = sorted({str(r) for tier in grant.get("tiers") or () for r in tier.get("roles") or ()})[0]
    with GovernanceClient(governance_url) as api:
        raised = api.call("POST", "/disputes", token(publisher, "ig-lead"), {
            "kind": "grant-contested", "stream": stream, "subscriber": subscriber, "role": role,
            "purpose": grant.get("purpose"), "decision_id": ident, "justification": "The test is over."})
        tier = ((catalog.get("ladder") or {}).get("tiers") or [])[int(raised.get("tier", 0))]
        deciders = tier.get("deciders") or {}
        bodies = sorted(set(deciders.get("bodies") or []) - {publisher, subscriber})
        decider_role = str((deciders.get("roles") or ["governance-board"])[0])
        answer: dict[str, Any] = {}
        for body in bodies[: int(tier.get("approvals", 1))]:
            answer = api.call("POST", f"/disputes/{raised['id']}/approvals", token(body, decider_role),
                              {"outcome": "granted", "reason": "The test is over: withdrawn."})
    timeline = (answer.get("dispute") or answer).get("timeline", [])
    assert any(ident in ((e.get("data") or {}).get("revoke_grants") or ()) for e in timeline), (
        f"grant {ident} was not withdrawn: {answer}")
