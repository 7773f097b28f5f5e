"""Accord's real policies for unit tests: one `opa run --server` per test session, loaded from policies/ and asked
with each caller's own data, so a test double of the policy engine cannot drift from the policies it stands for.

Each query carries its data (`with data.accord.catalog as ...`): tests share the process, never the data. OPA listens
on a Unix socket in a private directory rather than a loopback port: no other process can take the address between
choosing it and OPA binding it, and none can answer in OPA's place.
"""

from __future__ import annotations

import copy
import http.client
import json
import socket
import subprocess
import tempfile
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from broker.config import Settings
from broker.errors import PolicyEngineError
from broker.local.toolchain import ensure_opa

_START_S = 30.0  # a cold OPA loads the policies in well under a second; this only bounds a broken start


class _UnixConnection(http.client.HTTPConnection):
    def __init__(self, path: str) -> None:
        super().__init__("localhost", timeout=10)
        self._path = path

    def connect(self) -> None:
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        sock.settimeout(self.timeout)
        try:
            sock.connect(self._path)
        except OSError:
            sock.close()
            raise
        self.sock = sock


class PolicyServer:
    """A local OPA without authentication, serving policies/ (tests excluded) and no data of its own."""

    def __init__(self, binary: Path, policies: Path) -> None:
        self._directory = tempfile.TemporaryDirectory(prefix="accord-unit-opa-")
        self.socket = str(Path(self._directory.name) / "opa.sock")
        self._log = Path(self._directory.name) / "opa.log"
        with self._log.open("wb") as log:  # the child keeps its own copy of the descriptor
            self._process = subprocess.Popen(
                [str(binary), "run", "--server", f"--addr=unix://{self.socket}", "--skip-version-check",
                 "--log-level=error", "--ignore=*_test.rego", str(policies)],
                stdout=log, stderr=subprocess.STDOUT)
        self._connection = _UnixConnection(self.socket)
        # The policies never change during a session and use no clock of their own, so one question always gets
        # one answer: tests ask the same few hundreds of times (every gate start re-plans the same catalog).
        self._answers: dict[str, Any] = {}
        try:
            self._wait_until_healthy()
        except BaseException:
            self.stop()
            raise

    def _wait_until_healthy(self) -> None:
        deadline = time.monotonic() + _START_S
        while not self._healthy():
            if self._process.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"OPA did not start on {self.socket}: {self._log.read_text()[-2000:]}")
            time.sleep(0.02)

    def _healthy(self) -> bool:
        try:
            return self._request("GET", "/health")[0] == 200
        except OSError:
            return False

    def evaluate(self, rule: str, input_doc: Mapping[str, Any], data: Mapping[str, Mapping[str, Any]]) -> Any:
        """`data.<rule>` for `input_doc`, with OPA's data at each path of `data` (e.g. "accord/catalog") replaced by
        its document; None when the rule is undefined, as OPA's data API answers."""
        question = json.dumps([rule, input_doc, data], sort_keys=True)
        if question not in self._answers:
            self._answers[question] = self._ask(rule, input_doc, data)
        return copy.deepcopy(self._answers[question])

    def _ask(self, rule: str, input_doc: Mapping[str, Any], data: Mapping[str, Mapping[str, Any]]) -> Any:
        replaced = " ".join(f"with data.{path.strip('/').replace('/', '.')} as input.data[{json.dumps(path)}]"
                            for path in data)
        query = f"x := data.{rule} {replaced} with input as input.request"
        status, body = self._request("POST", "/v1/query", {"query": query,
                                                           "input": {"request": input_doc, "data": data}})
        if status != 200:
            raise PolicyEngineError(f"OPA could not evaluate {rule!r}: {body}")
        results = body.get("result") or []
        return results[0]["x"] if results else None

    def _request(self, method: str, path: str, body: object = None) -> tuple[int, Any]:
        payload = None if body is None else json.dumps(body)
        for attempt in (1, 2):  # once more on a fresh connection if OPA closed the kept-alive one
            try:
                self._connection.request(method, path, payload, {"Content-Type": "application/json"})
                response = self._connection.getresponse()
                return response.status, json.loads(response.read() or b"{}")
            except (http.client.HTTPException, ConnectionError):
                self._connection.close()
                if attempt == 2:
                    raise
        raise AssertionError("unreachable")

    def stop(self) -> None:
        self._connection.close()
        if self._process.poll() is None:
            self._process.terminate()
            try:
                self._process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self._process.kill()
                self._process.wait()
        self._directory.cleanup()


_server: PolicyServer | None = None


def policy_server() -> PolicyServer:
    """The session's OPA, started on first use (a unit-test run that never asks for a plan starts none)."""
    global _server
    if _server is None:
        settings = Settings()
        _server = PolicyServer(ensure_opa(settings), settings.policies_dir)
    return _server


def stop_policy_server() -> None:
    global _server
    if _server is not None:
        _server.stop()
        _server = None
