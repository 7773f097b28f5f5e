"""Webhook notifications: what each body's endpoint receives, how failures are retried, and what the log says."""

from __future__ import annotations

import json
import threading
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import httpx
import pytest

from broker.adapters.webhooks import LOG_LIMIT, WebhookDelivery, WebhookNotifier
from tests.unit.notifier_fakes import RecordingNotifier

Handler = Callable[[httpx.Request], httpx.Response]
HOOKS = {"nhs-leeds": "https://leeds.example/accord", "ukhsa": "https://ukhsa.example/hooks/accord"}
WAIT_S = 5.0


class Ticks:
    """A clock that advances one second per reading, so attempt times are predictable."""

    def __init__(self) -> None:
        self.now = 1_000.0

    def __call__(self) -> float:
        self.now += 1.0
        return self.now


class Harness:
    """Builds notifiers over a MockTransport, recording the backoff delays and every request sent."""

    def __init__(self) -> None:
        self.delays: list[float] = []
        self.requests: list[httpx.Request] = []
        self.hooks = dict(HOOKS)
        self._made: list[WebhookNotifier] = []

    def notifier(self, handler: Handler, **options: Any) -> WebhookNotifier:
        def recording(request: httpx.Request) -> httpx.Response:
            self.requests.append(request)
            return handler(request)

        made = WebhookNotifier(self.hooks.get, sleep=self.delays.append, clock=Ticks(),
                               transport=httpx.MockTransport(recording), **options)
        self._made.append(made)
        return made

    def close(self) -> None:
        for made in self._made:
            assert made.close(WAIT_S)


@pytest.fixture
def harness() -> Iterator[Harness]:
    made = Harness()
    yield made
    made.close()


def answers(*codes: int) -> Handler:
    """Answers each request with the next status code; the last one repeats."""
    pending = list(codes)

    def handler(request: httpx.Request) -> httpx.Response:
        return httpx.Response(pending.pop(0) if len(pending) > 1 else pending[0])

    return handler


def event(n: int, kind: str = "dispute.opened") -> dict[str, Any]:
    return {"event_id": f"ev-{n}", "type": kind, "dispute": {"id": f"d-{n}", "topic": "ukhsa.positive-tests"}}


def only_entry(notifier: WebhookNotifier) -> WebhookDelivery:
    assert notifier.wait_idle(WAIT_S)
    [entry] = notifier.log()
    return entry


def test_a_notification_is_posted_as_json_with_its_headers(harness: Harness) -> None:
    notifier = harness.notifier(answers(204))
    notifier.notify("ukhsa", event(1))
    entry = only_entry(notifier)
    assert (entry.outcome, entry.attempts, entry.status_code, entry.error) == ("delivered", 1, 204, None)
    assert (entry.body, entry.url, entry.event_id, entry.type) == ("ukhsa", HOOKS["ukhsa"], "ev-1", "dispute.opened")
    assert entry.first_attempt_at == entry.last_attempt_at == 1_001.0
    [request] = harness.requests
    assert (request.method, str(request.url)) == ("POST", HOOKS["ukhsa"])
    assert json.loads(request.content) == event(1)
    assert request.headers["Content-Type"] == "application/json"
    assert request.headers["X-Accord-Event"] == "ev-1"
    assert request.headers["X-Accord-Delivery"] == entry.delivery_id
    assert request.headers["X-Accord-Attempt"] == "1"


@pytest.mark.parametrize("busy", [503, 429])
def test_a_busy_endpoint_is_retried_after_a_backoff(harness: Harness, busy: int) -> None:
    notifier = harness.notifier(answers(busy, 200))
    notifier.notify("ukhsa", event(1))
    entry = only_entry(notifier)
    assert (entry.outcome, entry.attempts, entry.status_code) == ("delivered", 2, 200)
    assert harness.delays == [0.2]
    assert [r.headers["X-Accord-Attempt"] for r in harness.requests] == ["1", "2"]
    assert len({r.headers["X-Accord-Delivery"] for r in harness.requests}) == 1
    assert (entry.first_attempt_at, entry.last_attempt_at) == (1_001.0, 1_002.0)


def test_an_endpoint_that_keeps_failing_is_given_up_with_doubling_capped_delays(harness: Harness) -> None:
    notifier = harness.notifier(answers(500), max_backoff_s=1.0)
    notifier.notify("ukhsa", event(1))
    entry = only_entry(notifier)
    assert (entry.outcome, entry.attempts, entry.status_code) == ("gave-up", 6, 500)
    assert entry.error is not None and "500" in entry.error
    assert harness.delays == [0.2, 0.4, 0.8, 1.0, 1.0]
    assert len(harness.requests) == 6


def test_a_client_error_fails_at_once(harness: Harness) -> None:
    notifier = harness.notifier(answers(404, 200))
    notifier.notify("ukhsa", event(1))
    entry = only_entry(notifier)
    assert (entry.outcome, entry.attempts, entry.status_code) == ("failed", 1, 404)
    assert harness.delays == []


def test_a_refused_connection_is_retried(harness: Harness) -> None:
    calls = 0

    def refuse_once(request: httpx.Request) -> httpx.Response:
        nonlocal calls
        calls += 1
        if calls == 1:
            raise httpx.ConnectError("connection refused", request=request)
        return httpx.Response(200)

    notifier = harness.notifier(refuse_once)
    notifier.notify("ukhsa", event(1))
    entry = only_entry(notifier)
    assert (entry.outcome, entry.attempts, entry.status_code) == ("delivered", 2, 200)
    assert harness.delays == [0.2]


def test_an_unreachable_endpoint_is_given_up_with_the_connection_error(harness: Harness) -> None:
    def refuse(request: httpx.Request) -> httpx.Response:
        raise httpx.ConnectTimeout("timed out", request=request)

    notifier = harness.notifier(refuse, max_attempts=3)
    notifier.notify("ukhsa", event(1))
    entry = only_entry(notifier)
    assert (entry.outcome, entry.attempts, entry.status_code) == ("gave-up", 3, None)
    assert entry.error == "ConnectTimeout: timed out"
    assert harness.delays == [0.2, 0.4]


def test_a_body_without_a_webhook_is_logged_and_a_later_registration_applies(harness: Harness) -> None:
    notifier = harness.notifier(answers(200))
    notifier.notify("ons", event(1))
    entry = only_entry(notifier)
    assert (entry.outcome, entry.url, entry.attempts, entry.error) == ("no-webhook", None, 0, None)
    assert harness.requests == []

    harness.hooks["ons"] = "https://ons.example/hook"
    notifier.notify("ons", event(2))
    assert notifier.wait_idle(WAIT_S)
    assert [(e.event_id, e.outcome, e.url) for e in notifier.log()] == [
        ("ev-1", "no-webhook", None), ("ev-2", "delivered", "https://ons.example/hook")]


def test_each_body_receives_its_notifications_in_order_even_across_retries(harness: Harness) -> None:
    accepted: list[str] = []

    def refuse_ev3_once(request: httpx.Request) -> httpx.Response:
        event_id = request.headers["X-Accord-Event"]
        if event_id == "ev-3" and request.headers["X-Accord-Attempt"] == "1":
            return httpx.Response(503)
        accepted.append(event_id)
        return httpx.Response(200)

    notifier = harness.notifier(refuse_ev3_once)
    for n in range(20):
        notifier.notify("ukhsa", event(n))
    assert notifier.wait_idle(WAIT_S)
    assert accepted == [f"ev-{n}" for n in range(20)]
    assert {e.outcome for e in notifier.log()} == {"delivered"}


def test_a_stalled_body_does_not_hold_up_another(harness: Harness) -> None:
    release, leeds_reached = threading.Event(), threading.Event()

    def stall_ukhsa(request: httpx.Request) -> httpx.Response:
        if request.url.host == "ukhsa.example":
            release.wait(WAIT_S)
            return httpx.Response(503)
        leeds_reached.set()
        return httpx.Response(200)

    notifier = harness.notifier(stall_ukhsa, max_attempts=2)
    try:
        notifier.notify("ukhsa", event(1))
        notifier.notify("nhs-leeds", event(2))
        assert leeds_reached.wait(WAIT_S)
        assert not notifier.wait_idle(0.05)
    finally:
        release.set()
    assert notifier.wait_idle(WAIT_S)
    assert {e.body: e.outcome for e in notifier.log()} == {"ukhsa": "gave-up", "nhs-leeds": "delivered"}


def test_the_log_keeps_only_the_newest_deliveries(harness: Harness) -> None:
    notifier = harness.notifier(answers(200))
    for n in range(LOG_LIMIT + 5):
        notifier.notify("ons", event(n))
    assert notifier.wait_idle(WAIT_S)
    log = notifier.log()
    assert len(log) == LOG_LIMIT
    assert (log[0].event_id, log[-1].event_id) == ("ev-5", f"ev-{LOG_LIMIT + 4}")


@pytest.mark.parametrize(("notification", "problem"), [
    ({"type": "dispute.opened"}, "notification has no event_id"),
    ({"event_id": "ev-1", "type": "dispute.opened", "at": object()}, "notification is not JSON-able"),
])
def test_a_malformed_notification_is_logged_as_failed_not_raised(
        harness: Harness, notification: dict[str, Any], problem: str) -> None:
    notifier = harness.notifier(answers(200))
    notifier.notify("ukhsa", notification)
    entry = only_entry(notifier)
    assert entry.outcome == "failed" and entry.error is not None and entry.error.startswith(problem)
    assert harness.requests == []


def test_a_failing_lookup_is_logged_and_the_worker_carries_on() -> None:
    looked_up: list[str] = []

    def lookup(body: str) -> str | None:
        if body == "ukhsa" and not looked_up:
            looked_up.append(body)
            raise KeyError(body)
        return HOOKS.get(body)

    notifier = WebhookNotifier(lookup, sleep=lambda _: None, transport=httpx.MockTransport(answers(200)))
    notifier.notify("ukhsa", event(1))
    notifier.notify("ukhsa", event(2))
    assert notifier.wait_idle(WAIT_S)
    assert [(e.outcome, e.error) for e in notifier.log()] == [("failed", "KeyError: 'ukhsa'"), ("delivered", None)]
    assert notifier.close(WAIT_S)


def test_close_delivers_what_is_queued_then_refuses_more(harness: Harness) -> None:
    notifier = harness.notifier(answers(200))
    for n in range(3):
        notifier.notify("ukhsa", event(n))
    assert notifier.close(WAIT_S)
    notifier.notify("ukhsa", event(3))
    assert [(e.event_id, e.outcome) for e in notifier.log()] == [
        ("ev-0", "delivered"), ("ev-1", "delivered"), ("ev-2", "delivered"), ("ev-3", "failed")]
    assert notifier.log()[-1].error == "the notifier is closed"


def test_a_real_endpoint_receives_the_headers_and_json() -> None:
    received: list[tuple[dict[str, str], bytes]] = []

    class Endpoint(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            body = self.rfile.read(int(self.headers["Content-Length"]))
            received.append((dict(self.headers.items()), body))
            self.send_response(202)
            self.send_header("Content-Length", "0")
            self.end_headers()

        def log_message(self, format: str, *args: Any) -> None:  # keep test output quiet
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Endpoint)
    serving = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.02}, daemon=True)
    serving.start()
    url = f"http://127.0.0.1:{server.server_address[1]}/accord"
    notifier = WebhookNotifier({"ukhsa": url}.get)
    try:
        notifier.notify("ukhsa", event(7))
        entry = only_entry(notifier)
    finally:
        assert notifier.close(WAIT_S)
        server.shutdown()
        server.server_close()
        serving.join(WAIT_S)
    assert (entry.outcome, entry.status_code) == ("delivered", 202)
    [(headers, body)] = received
    assert json.loads(body) == event(7)
    assert headers["Content-Type"] == "application/json"
    assert headers["X-Accord-Event"] == "ev-7"
    assert headers["X-Accord-Delivery"] == entry.delivery_id
    assert headers["X-Accord-Attempt"] == "1"


def test_the_recording_fake_keeps_what_was_sent_as_it_was() -> None:
    fake = RecordingNotifier()
    notification = event(1)
    fake.notify("ukhsa", notification)
    notification["type"] = "changed"
    fake.notify("ons", event(2, "dispute.resolved"))
    assert fake.to("ukhsa") == [event(1)]
    assert [body for body, _ in fake.sent] == ["ukhsa", "ons"]
