"""The webhook sink on the real Kafka, OPA and registry: a real gate delivers T1 records to Leicester's DPH; the
sink, a subprocess acting as that role's own Kafka login, POSTs them to a real HTTP receiver on loopback, which
checks every signature with the README's snippet.

1. The receiver refuses connections, then answers 500, for 30 s in all, then takes everything: this test's records
   all arrive, each at least once, repeats recognisable by their delivery id, and a key's versions in order.
2. A receiver answering 500 for longer than the retry budget: the batches go to the dead letter, `accord connect
   status` counts them, and `accord connect redeliver` (one by --id, then --all) delivers them.
"""

from __future__ import annotations

import datetime as dt
import json
import secrets
import signal
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler, HTTPServer
from pathlib import Path
from typing import Any

import httpx
import pytest

from broker.config import Settings
from broker.demo.synthetic import spread
from broker.domain.kafka_acls import subscriber_user
from broker.local.processes import free_port
from broker.local.stack import Endpoints
from broker.runtime.gate import GateThread
from broker.security.api_tokens import issue, signing_key, write_token
from broker.security.kafka_identities import password_path
from tests.integration.gate_support import T1, publish, specimen_day, start_gate, topic_for
from tests.unit.sink_fakes import readme_check

BODY = "leicester-city-council"
LOGIN = subscriber_user(BODY, "dph")
TOPIC = topic_for(BODY, "dph")
SECRET = secrets.token_hex(32)


class WebhookReceiver:
    """A subscriber's endpoint on loopback. Until `listen`, its port is bound but not listening (connections are
    refused); then it answers 500 while `failing`, else verifies the signature (401 if it does not) and keeps the
    batch. It keeps every accepted batch in arrival order."""

    def __init__(self) -> None:
        self.failing = False
        self.accepted: list[tuple[str, dict[str, Any]]] = []  # (Accord-Delivery-Id, body)
        self.failed = self.bad_signatures = 0
        self._lock, self._check = threading.Lock(), readme_check()
        self._server = HTTPServer(("127.0.0.1", 0), self._handler(), bind_and_activate=False)
        self._server.server_bind()
        self._thread: threading.Thread | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self._server.server_address[1]}/accord"

    def listen(self, failing: bool) -> None:
        self.failing = failing
        self._server.server_activate()
        self._thread = threading.Thread(target=self._server.serve_forever, name="webhook-receiver", daemon=True)
        self._thread.start()

    def close(self) -> None:
        if self._thread is not None:
            self._server.shutdown()
            self._thread.join()
        self._server.server_close()

    def mine(self, prefix: str) -> list[tuple[str, int, int, dict[str, Any]]]:
        """This test's records in arrival order: (delivery id, partition, offset, value)."""
        with self._lock:
            return [(delivery, body["partition"], r["offset"], r["value"]) for delivery, body in self.accepted
                    for r in body["records"] if str(r["value"].get("specimen_id", "")).startswith(prefix + "-")]

    def _answer(self, body: bytes, headers: dict[str, str]) -> int:
        with self._lock:
            if self.failing:
                self.failed += 1
                return 500
            if not self._check(SECRET, headers.get("Accord-Signature", ""), body):
                self.bad_signatures += 1
                return 401
            self.accepted.append((headers["Accord-Delivery-Id"], json.loads(body)))
            return 204

    def _handler(self) -> type[BaseHTTPRequestHandler]:
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
                self.send_response(receiver._answer(body, dict(self.headers.items())))
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, format: str, *args: Any) -> None:
                pass

        return Handler


@pytest.fixture(scope="module")
def gate(services: Endpoints, applied_catalog: dict[str, Any]) -> Iterator[GateThread]:
    runner = start_gate(services, "test-webhook-gate", "test-webhook-worker")
    yield runner
    runner.stop()
    assert runner.failure is None, runner.failure


@pytest.fixture
def hook() -> Iterator[WebhookReceiver]:
    hook = WebhookReceiver()
    try:
        yield hook
    finally:
        hook.close()


def write_config(directory: Path, services: Endpoints, url: str, retry: str) -> Path:
    secrets_dir = Settings().secrets_dir
    write_token(directory / "registry.token", issue(signing_key(secrets_dir), BODY, "dph", "webhook-test",
                                                    dt.timedelta(hours=2), dt.datetime.now(dt.UTC)))
    (directory / "webhook.secret").write_text(SECRET + "\n")
    config = directory / "webhook.yaml"
    config.write_text(f"""sink: webhook
body: {BODY}
role: dph
kafka: {{bootstrap: "{services.kafka.bootstrap}", password_file: "{password_path(secrets_dir, LOGIN)}"}}
registry: {{url: "{services.registry_url}", token_file: registry.token}}
webhook:
  url: {url}
  secret_file: webhook.secret
  state_dir: state
  batch: 250
  retry: {retry}
deliveries:
  - {{stream: {T1}}}
""")
    return config


def start_sink(config: Path, log: Path, metrics_port: int | None = None) -> subprocess.Popen[bytes]:
    extra = [] if metrics_port is None else ["--metrics-port", str(metrics_port)]
    with log.open("ab") as out:
        return subprocess.Popen([sys.executable, "-m", "broker", "connect", "run", str(config), *extra],
                                stdout=out, stderr=subprocess.STDOUT)


def scrape(port: int) -> dict[str, float]:
    """The sink's Prometheus samples for the test's topic, by name and labels."""
    try:
        text = httpx.get(f"http://127.0.0.1:{port}/metrics", timeout=5).text
    except httpx.TransportError:
        return {}
    return {line.rsplit(" ", 1)[0]: float(line.rsplit(" ", 1)[1]) for line in text.splitlines()
            if not line.startswith("#") and TOPIC in line}


def stop_sink(sink: subprocess.Popen[bytes], log: Path) -> None:
    sink.send_signal(signal.SIGTERM)
    assert sink.wait(timeout=60) == 0, log.read_text()[-3000:]


def connect(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "broker", "connect", *args], capture_output=True, text=True,
                          timeout=300)


def wait_for(condition: Callable[[], bool], what: str, log: Path, timeout_s: float = 300.0) -> None:
    deadline = time.monotonic() + timeout_s
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"{what} did not happen within {timeout_s:.0f}s; sink log:\n{log.read_text()[-3000:]}")
        time.sleep(0.2)


def dead_letters(config: Path) -> list[dict[str, Any]]:
    return [json.loads(p.read_text()) for p in sorted((config.parent / "state" / "dead-letter").glob("*.json"))]


def lag(config: Path) -> int | None:
    """The lag `accord connect status` shows (None: it could not tell, e.g. Kafka was busy)."""
    status = connect("status", str(config))
    return int(topic_line(status.stdout)[-2]) if status.returncode == 0 else None


def topic_line(status: str) -> list[str]:
    """The status columns of the delivery topic's one partition: topic, part, stored, end, lag, dead."""
    (line,) = [line for line in status.splitlines() if line.startswith(TOPIC + " ")]
    return line.split()


def test_a_receiver_down_for_30_s_then_up_receives_everything_signed_and_in_order_per_key(
        services: Endpoints, gate: GateThread, hook: WebhookReceiver, tmp_path: Path) -> None:
    prefix = f"W{uuid.uuid4().hex[:6].upper()}"
    cases = spread(specimen_day(), 400, ["leicester"], prefix=prefix)
    corrected = [{**c, "name": f"{c['name']} Corrected"} for c in cases[:150]]  # later versions of the same keys
    config, log = write_config(tmp_path, services, hook.url, "{max_attempts: 60, max_backoff_s: 2}"), \
        tmp_path / "sink.log"
    publish(services, T1, cases)
    sink = start_sink(config, log)
    try:
        publish(services, T1, corrected)
        wait_for(lambda: "Connection refused" in log.read_text(), "a refused POST", log)
        time.sleep(15)  # refused for 15 s
        hook.listen(failing=True)
        wait_for(lambda: hook.failed > 0, "a POST answered 500", log)
        time.sleep(15)  # answering 500 for 15 s more
        hook.failing = False
        wait_for(lambda: len({(p, o) for _, p, o, _ in hook.mine(prefix)}) >= len(cases) + len(corrected),
                 f"all {len(cases) + len(corrected)} records of this test", log)
        wait_for(lambda: lag(config) == 0, "lag 0 in accord connect status", log)
        stop_sink(sink, log)
    finally:
        if sink.poll() is None:
            sink.kill()
            sink.wait()

    assert hook.bad_signatures == 0 and hook.failed > 0
    mine = hook.mine(prefix)
    # Each record at least once; a repeat carries the same record at the same (partition, offset).
    by_position: dict[tuple[int, int], dict[str, Any]] = {}
    for _, partition, offset, value in mine:
        assert by_position.setdefault((partition, offset), value) == value
    assert sorted(v["name"] for v in by_position.values()) == sorted(
        [c["name"] for c in cases] + [c["name"] for c in corrected])
    # Every delivery id names the offset range of the batch it came with, so it identifies the batch's records.
    for delivery, body in hook.accepted:
        offsets = [r["offset"] for r in body["records"]]
        assert delivery == f"{TOPIC}/{body['partition']}/{offsets[0]}-{offsets[-1]}" == body["delivery_id"]
        assert offsets == sorted(offsets)
    # In order per key: at first arrival, each specimen's original comes before its correction.
    first_seen: dict[str, list[str]] = {}
    seen: set[tuple[int, int]] = set()
    for _, partition, offset, value in mine:
        if (partition, offset) not in seen:
            seen.add((partition, offset))
            first_seen.setdefault(value["specimen_id"], []).append(value["name"])
    fixed = {c["specimen_id"] for c in corrected}
    for case in cases:
        expected = [case["name"], f"{case['name']} Corrected"] if case["specimen_id"] in fixed else [case["name"]]
        assert first_seen[case["specimen_id"]] == expected
    assert dead_letters(config) == []  # the retry budget outlasted the 30 s
    status = connect("status", str(config))
    assert status.returncode == 0, status.stderr
    assert topic_line(status.stdout)[-1] == "0", status.stdout  # no dead letter


def test_a_batch_refused_past_the_retry_budget_is_dead_lettered_then_redelivered(
        services: Endpoints, gate: GateThread, hook: WebhookReceiver, tmp_path: Path) -> None:
    prefix = f"D{uuid.uuid4().hex[:6].upper()}"
    cases = spread(specimen_day(), 60, ["leicester"], prefix=prefix)
    config = write_config(tmp_path, services, hook.url, "{max_attempts: 3, first_backoff_s: 0.1, max_backoff_s: 0.2}")
    log = tmp_path / "sink.log"
    hook.listen(failing=True)
    publish(services, T1, cases)
    port = free_port()
    sink = start_sink(config, log, port)

    def letters_with_mine() -> list[dict[str, Any]]:
        return [d for d in dead_letters(config)
                if any(r["value"].get("specimen_id", "").startswith(prefix + "-") for r in d["batch"]["records"])]

    def mine_dead_lettered() -> set[str]:
        # Only this test's records count: a batch may also hold earlier tests' rows of the shared topic.
        return {r["value"]["specimen_id"] for d in letters_with_mine() for r in d["batch"]["records"]
                if r["value"].get("specimen_id", "").startswith(prefix + "-")}
    try:
        wait_for(lambda: mine_dead_lettered() == {c["specimen_id"] for c in cases},
                 "every one of this test's records in the dead letter", log)
        # The metrics count the dead-lettered records as rejected, none as stored.
        rejected = f'accord_sink_rejected_total{{sink="webhook",topic="{TOPIC}"}}'
        wait_for(lambda: scrape(port).get(rejected, 0) >= len(cases), "dead letters in the sink's metrics", log)
        assert scrape(port).get(f'accord_sink_records_total{{sink="webhook",topic="{TOPIC}"}}', 0) == 0
        stop_sink(sink, log)
    finally:
        if sink.poll() is None:
            sink.kill()
            sink.wait()

    assert hook.accepted == [] and hook.failed >= 3
    ours = letters_with_mine()
    assert all(len(d["attempts"]) == 3 and d["reason"].startswith("HTTP 500") for d in ours)
    status = connect("status", str(config))
    assert status.returncode == 0, status.stderr
    dead = len(dead_letters(config))
    assert topic_line(status.stdout)[-1] == str(dead) and f"dead letter {ours[0]['id']}:" in status.stdout

    hook.failing = False
    one = connect("redeliver", str(config), "--id", ours[0]["id"])
    assert one.returncode == 0 and f"{ours[0]['id']} (" in one.stdout and "delivered" in one.stdout, one
    assert [delivery for delivery, _ in hook.accepted] == [ours[0]["id"]]
    assert len(dead_letters(config)) == dead - 1
    every = connect("redeliver", str(config), "--all")
    assert every.returncode == 0, every
    assert dead_letters(config) == [] and hook.bad_signatures == 0
    assert {v["specimen_id"] for _, _, _, v in hook.mine(prefix)} == {c["specimen_id"] for c in cases}
    again = connect("status", str(config))
    assert topic_line(again.stdout)[-1] == "0", again.stdout
