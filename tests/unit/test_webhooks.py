"""Webhook notifications: what each body's endpoint receives (signed), where they may go, how failures are
retried, what the log says, and what a stop leaves pending."""

from __future__ import annotations

import ipaddress
import json
import threading
import time
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import httpx
import pytest

from broker.adapters.webhooks import LOG_LIMIT, WebhookDelivery, WebhookNotifier
from broker.domain.webhooks import Address, Webhook, parse_allow, signing_secret, verify
from broker.errors import GovernanceError
from tests.unit.notifier_fakes import RecordingNotifier

Handler = Callable[[httpx.Request], httpx.Response]
HOOKS = {"nhs-leeds": "https://leeds.example/accord", "ukhsa": "https://ukhsa.example/hooks/accord"}
# Public addresses the fake resolver gives; nothing connects to them (the transport is a MockTransport).
ADDRESSES = {"leeds.example": "93.184.215.14", "ukhsa.example": "151.101.0.81", "ons.example": "151.101.64.81"}
MASTER = b"unit-test-master-secret-32-bytes"
WAIT_S = 5.0


def hook(url: str, registration: str = "reg-1") -> Webhook:
    return Webhook(url, registration)


class Resolver:
    """Answers from `ADDRESSES` (an IP literal is itself), or from `override` when a test changes the answer."""

    def __init__(self) -> None:
        self.override: dict[str, list[str]] = {}
        self.asked: list[str] = []

    def __call__(self, host: str, port: int) -> list[Address]:
        self.asked.append(host)
        if host in self.override:
            return [ipaddress.ip_address(a) for a in self.override[host]]
        try:
            return [ipaddress.ip_address(host)]
        except ValueError:
            pass
        if host not in ADDRESSES:
            raise OSError(f"[Errno -2] Name or service not known: {host!r}")
        return [ipaddress.ip_address(ADDRESSES[host])]


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
        self.hooks = {body: hook(url) for body, url in HOOKS.items()}
        self.resolver = Resolver()
        self.finished: list[WebhookDelivery] = []
        self._made: list[WebhookNotifier] = []

    def notifier(self, handler: Handler, **options: Any) -> WebhookNotifier:
        def recording(request: httpx.Request) -> httpx.Response:
            self.requests.append(request)
            return handler(request)

        options = {"sleep": self.delays.append, **options}
        made = WebhookNotifier(self.hooks.get, MASTER, resolve=self.resolver, on_finished=self.finished.append,
                               clock=Ticks(), transport=httpx.MockTransport(recording), **options)
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
    # Sent to the address that was checked, under the URL's own host name.
    assert (request.method, str(request.url)) == ("POST", "https://151.101.0.81/hooks/accord")
    assert request.headers["Host"] == "ukhsa.example"
    assert request.extensions["sni_hostname"] == "ukhsa.example"
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

    harness.hooks["ons"] = hook("https://ons.example/hook")
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
        if request.headers["Host"] == "ukhsa.example":
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

    def lookup(body: str) -> Webhook | None:
        if body == "ukhsa" and not looked_up:
            looked_up.append(body)
            raise KeyError(body)
        return hook(HOOKS[body]) if body in HOOKS else None

    notifier = WebhookNotifier(lookup, MASTER, resolve=Resolver(), sleep=lambda _: None,
                               transport=httpx.MockTransport(answers(200)))
    notifier.notify("ukhsa", event(1))
    notifier.notify("ukhsa", event(2))
    assert notifier.wait_idle(WAIT_S)
    assert [(e.outcome, e.error) for e in notifier.log()] == [("failed", "KeyError: 'ukhsa'"), ("delivered", None)]
    assert notifier.close(WAIT_S)


def test_close_ends_a_backoff_at_once_and_leaves_what_is_unfinished_pending(harness: Harness) -> None:
    """A stop must not hold the service for minutes of retries: the governance outbox keeps what is owed."""
    retrying = threading.Event()

    def down(request: httpx.Request) -> httpx.Response:
        retrying.set()
        return httpx.Response(503)

    notifier = harness.notifier(down, sleep=None, first_backoff_s=60.0, max_backoff_s=60.0)
    for n in range(3):
        notifier.notify("ukhsa", event(n), delivery_id=f"w-{n}")
    assert retrying.wait(WAIT_S)
    started = time.monotonic()
    assert notifier.close(WAIT_S)
    assert time.monotonic() - started < 30.0        # far below the 60 s backoff it was waiting out
    notifier.notify("ukhsa", event(3), delivery_id="w-3")
    assert [(e.delivery_id, e.outcome) for e in notifier.log()] == [
        ("w-0", "pending"), ("w-1", "pending"), ("w-2", "pending"), ("w-3", "pending")]
    assert len(harness.requests) == 1 and harness.finished == []


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
    notifier = WebhookNotifier({"ukhsa": hook(url)}.get, MASTER, allow=parse_allow("127.0.0.1/32"))
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
    verify(signing_secret(MASTER, "ukhsa", "reg-1"), headers["X-Accord-Signature"], body, time.time())


def test_the_recording_fake_keeps_what_was_sent_as_it_was() -> None:
    fake = RecordingNotifier()
    notification = event(1)
    fake.notify("ukhsa", notification)
    notification["type"] = "changed"
    fake.notify("ons", event(2, "dispute.resolved"))
    assert fake.to("ukhsa") == [event(1)]
    assert [body for body, _ in fake.sent] == ["ukhsa", "ons"]


# -- signing, addresses, ends ---------------------------------------------------------------------------------------

def test_every_attempt_is_signed_with_the_bodys_secret_over_its_time_and_body(harness: Harness) -> None:
    notifier = harness.notifier(answers(503, 200))
    notifier.notify("ukhsa", event(1))
    only_entry(notifier)
    secret = notifier.signing_secret("ukhsa", "reg-1")
    assert secret == signing_secret(MASTER, "ukhsa", "reg-1") != signing_secret(MASTER, "ukhsa", "reg-2")
    stamps = []
    for request in harness.requests:
        header = request.headers["X-Accord-Signature"]
        stamp = int(header.split(",")[0].removeprefix("t="))
        verify(secret, header, request.content, now=stamp)
        with pytest.raises(GovernanceError, match="does not match"):
            verify(signing_secret(MASTER, "nhs-leeds", "reg-1"), header, request.content, now=stamp)
        stamps.append(stamp)
    assert stamps == [1_001, 1_002]         # signed anew at each attempt


@pytest.mark.parametrize("address", ["127.0.0.1", "10.0.0.7", "169.254.169.254", "::1", "::ffff:192.168.1.1",
                                     "0.0.0.0", "224.0.0.251", "100.64.0.1"])
def test_a_host_resolving_to_an_internal_address_is_refused_without_a_request(harness: Harness,
                                                                                address: str) -> None:
    harness.resolver.override["ukhsa.example"] = [address]
    notifier = harness.notifier(answers(200))
    notifier.notify("ukhsa", event(1))
    entry = only_entry(notifier)
    assert entry.outcome == "failed" and entry.attempts == 1
    assert entry.error is not None and "not sent to private or internal addresses" in entry.error
    assert harness.requests == [] and harness.delays == []
    with pytest.raises(GovernanceError, match="ACCORD_WEBHOOK_ALLOW"):
        notifier.check_url(HOOKS["ukhsa"])


def test_one_internal_address_among_public_ones_is_enough_to_refuse(harness: Harness) -> None:
    harness.resolver.override["ukhsa.example"] = ["151.101.0.81", "192.168.0.10"]
    notifier = harness.notifier(answers(200))
    with pytest.raises(GovernanceError, match=r"192\.168\.0\.10 is a private address"):
        notifier.check_url(HOOKS["ukhsa"])


def test_a_name_that_changes_its_answer_after_registration_is_checked_again_at_each_attempt(
        harness: Harness) -> None:
    notifier = harness.notifier(answers(200))
    notifier.check_url(HOOKS["ukhsa"])              # public when registered
    harness.resolver.override["ukhsa.example"] = ["127.0.0.1"]
    notifier.notify("ukhsa", event(1))
    assert only_entry(notifier).outcome == "failed"
    assert harness.requests == []


def test_an_allow_listed_network_is_reached(harness: Harness) -> None:
    harness.hooks["ukhsa"] = hook("http://127.0.0.1:8125/hook")
    notifier = harness.notifier(answers(204), allow=parse_allow("127.0.0.1/32"))
    notifier.check_url("http://127.0.0.1:8125/hook")
    notifier.notify("ukhsa", event(1))
    assert only_entry(notifier).outcome == "delivered"
    [request] = harness.requests
    assert str(request.url) == "http://127.0.0.1:8125/hook" and "sni_hostname" not in request.extensions
    with pytest.raises(GovernanceError, match="loopback"):
        notifier.check_url("http://127.0.0.2/hook")       # only what the operator listed


def test_an_unresolvable_host_is_refused_at_registration_and_retried_at_delivery(harness: Harness) -> None:
    harness.hooks["ukhsa"] = hook("https://nowhere.example/hook")
    notifier = harness.notifier(answers(200), max_attempts=2)
    with pytest.raises(GovernanceError, match="does not resolve"):
        notifier.check_url("https://nowhere.example/hook")
    notifier.notify("ukhsa", event(1))
    entry = only_entry(notifier)
    assert (entry.outcome, entry.attempts) == ("gave-up", 2)


def test_each_ended_delivery_is_reported_once_with_its_id(harness: Harness) -> None:
    notifier = harness.notifier(answers(200))
    notifier.notify("ukhsa", event(1), delivery_id="w-1")
    notifier.notify("ons", event(2), delivery_id="w-2")       # ons has no webhook
    assert notifier.wait_idle(WAIT_S)
    assert sorted((d.delivery_id, d.outcome) for d in harness.finished) == [("w-1", "delivered"),
                                                                            ("w-2", "no-webhook")]
