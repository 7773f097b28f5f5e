"""OPA restarted on its address: a call made while it comes back connects again and succeeds; one made while it
stays away fails closed with a clear error (a real loopback HTTP server stands in for OPA's REST API)."""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from broker.adapters.opa import OpaPolicyEngine
from broker.errors import PolicyEngineError
from broker.local.processes import free_port


class _Answers(BaseHTTPRequestHandler):
    def do_POST(self) -> None:
        self.rfile.read(int(self.headers.get("Content-Length", "0")))
        body = json.dumps({"result": True, "decision_id": "d-1"}).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *_: object) -> None:
        return None


@contextmanager
def _opa_after(port: int, delay_s: float) -> Iterator[None]:
    """An OPA stand-in that starts listening on `port` after `delay_s`."""
    listening = threading.Event()
    stopping = threading.Event()
    servers: list[ThreadingHTTPServer] = []

    def serve() -> None:
        if stopping.wait(delay_s):
            return
        server = ThreadingHTTPServer(("127.0.0.1", port), _Answers)
        servers.append(server)
        listening.set()
        server.serve_forever(poll_interval=0.05)

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    try:
        yield
    finally:
        stopping.set()
        if listening.is_set():
            servers[0].shutdown()
            servers[0].server_close()
        thread.join(timeout=10)


def test_a_call_while_opa_comes_back_on_its_address_succeeds() -> None:
    port = free_port()
    engine = OpaPolicyEngine(f"http://127.0.0.1:{port}")
    try:
        with _opa_after(port, 0.1):
            assert engine.evaluate("accord.authz.decision", {"x": 1}) is True
    finally:
        engine.close()


def test_a_call_while_opa_stays_away_fails_closed_naming_it() -> None:
    port = free_port()
    engine = OpaPolicyEngine(f"http://127.0.0.1:{port}")
    try:
        with pytest.raises(PolicyEngineError, match=f"OPA at http://127.0.0.1:{port} unreachable"):
            engine.evaluate("accord.authz.decision", {"x": 1})
    finally:
        engine.close()
