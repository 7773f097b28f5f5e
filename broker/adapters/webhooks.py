"""The Notifier port over HTTP webhooks: each notification is queued, signed, POSTed as JSON, retried, and logged.

Each body gets its own worker thread with its own FIFO queue, created on first use. A body whose webhook is
slow or down (and so retrying with backoff) then holds up only its own later notifications, never another
body's, and every body receives its notifications in the order they were queued. Bodies number in the tens
to hundreds, so a thread each is cheap; the threads are daemons, and `close` stops them after the attempt in
flight (what is still queued stays in the governance outbox, which the next start sends).

Every attempt resolves the webhook's host, refuses it unless every address is public or allow-listed
(broker/domain/webhooks.py), and connects to the address it checked, so a name that changes its answer between
the check and the connection (DNS rebinding) cannot steer a notification inside the network. Redirects are not
followed and proxies from the environment are not used, for the same reason.
"""

from __future__ import annotations

import ipaddress
import json
import logging
import queue
import socket
import threading
import time
import uuid
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Any, Literal

import httpx

from broker.domain import webhooks
from broker.domain.webhooks import SIGNATURE_HEADER, Address, Network, Webhook
from broker.errors import ConfigError, GovernanceError

LOG_LIMIT = 10_000
Outcome = Literal["delivered", "gave-up", "failed", "no-webhook", "pending"]
Resolver = Callable[[str, int], Sequence[Address]]

_logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class WebhookDelivery:
    """One notification's delivery to one body, as it stands; attempt times are None until the first attempt."""

    delivery_id: str
    body: str
    url: str | None
    event_id: str
    type: str
    attempts: int
    outcome: Outcome
    status_code: int | None
    error: str | None
    first_attempt_at: float | None
    last_attempt_at: float | None


@dataclass(frozen=True)
class _Job:
    delivery: WebhookDelivery
    payload: bytes


@dataclass(frozen=True)
class _Attempt:
    status_code: int | None
    error: str | None
    retryable: bool

    @property
    def delivered(self) -> bool:
        return self.status_code is not None and 200 <= self.status_code < 300


@dataclass
class _Worker:
    jobs: queue.Queue[_Job | None] = field(default_factory=queue.Queue)
    thread: threading.Thread | None = None


def system_resolver(host: str, port: int) -> list[Address]:
    """Every address `host` resolves to (an IP literal is itself)."""
    try:
        return [ipaddress.ip_address(host)]
    except ValueError:
        pass
    found = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    return [ipaddress.ip_address(str(info[4][0]).split("%")[0]) for info in found]


class WebhookNotifier:
    """POSTs notifications to the webhook `targets(body)` names (None: the body has none), looked up per attempt,
    signed with the secret derived from `master_secret` and the webhook's registration.

    Retries connection errors, timeouts, 429 and 5xx with backoff doubling from `first_backoff_s` up to
    `max_backoff_s`, for `max_attempts` attempts in all; any other non-2xx answer, or an address that may not be
    reached, fails the delivery at once. `on_finished` hears of every delivery that ended (not of one left pending
    by `close`).
    """

    def __init__(
        self,
        targets: Callable[[str], Webhook | None],
        master_secret: bytes,
        *,
        allow: Sequence[Network] = (),
        resolve: Resolver = system_resolver,
        on_finished: Callable[[WebhookDelivery], None] | None = None,
        max_attempts: int = 6,
        first_backoff_s: float = 0.2,
        max_backoff_s: float = 10.0,
        timeout_s: float = 5.0,
        sleep: Callable[[float], None] | None = None,
        clock: Callable[[], float] = time.time,
        transport: httpx.BaseTransport | None = None,
    ) -> None:
        if max_attempts < 1 or first_backoff_s < 0 or max_backoff_s < first_backoff_s:
            raise ConfigError(
                f"webhook retries need max_attempts >= 1 and 0 <= first_backoff_s <= max_backoff_s; got "
                f"max_attempts={max_attempts}, first_backoff_s={first_backoff_s}, max_backoff_s={max_backoff_s}"
            )
        if len(master_secret) < 16:
            raise ConfigError("the webhook master secret must be at least 16 bytes")
        self._targets, self._master, self._allow, self._resolve = targets, master_secret, tuple(allow), resolve
        self._on_finished = on_finished
        self._max_attempts = max_attempts
        self._first_backoff_s = first_backoff_s
        self._max_backoff_s = max_backoff_s
        self._stopping = threading.Event()
        self._sleep = sleep if sleep is not None else self._stopping.wait
        self._clock = clock
        self._client = httpx.Client(timeout=timeout_s, transport=transport, trust_env=False, follow_redirects=False)
        # One lock (re-entrant) guards the workers, the log and the count of unfinished deliveries.
        self._state = threading.Condition()
        self._workers: dict[str, _Worker] = {}
        self._log: dict[str, WebhookDelivery] = {}
        self._unfinished = 0
        self._closed = False

    def notify(self, body: str, notification: Mapping[str, Any], delivery_id: str | None = None) -> None:
        """Queue `notification` (JSON-able, with "event_id" and "type") for `body`; never blocks, never raises."""
        try:
            self._enqueue(body, notification, delivery_id or str(uuid.uuid4()))
        except Exception:
            _logger.exception("could not queue a webhook notification for body %r", body)

    def check_url(self, url: str) -> None:
        """GovernanceError unless `url` is an http(s) URL whose host resolves only to addresses it may reach."""
        _, host, port = webhooks.check_url(url)
        try:
            addresses = self._resolve(host, port)
        except OSError as exc:
            raise GovernanceError(f"webhook host {host!r} does not resolve ({_describe(exc)}); "
                                  "register a URL whose host resolves") from None
        webhooks.first_allowed(addresses, self._allow)

    def signing_secret(self, body: str, registration: str) -> str:
        return webhooks.signing_secret(self._master, body, registration)

    def log(self) -> list[WebhookDelivery]:
        """The newest deliveries (at most LOG_LIMIT), oldest first, each as it stands now."""
        with self._state:
            return list(self._log.values())

    def wait_idle(self, timeout_s: float) -> bool:
        """True once every queued delivery has finished; False if some are still going after `timeout_s`."""
        with self._state:
            return self._state.wait_for(lambda: self._unfinished == 0, timeout=timeout_s)

    def close(self, timeout_s: float = 5.0) -> bool:
        """Refuse new notifications and stop the workers after the attempt each has in flight (a backoff wait ends
        at once); deliveries not finished stay pending. False if a worker outlasts `timeout_s`."""
        deadline = time.monotonic() + timeout_s
        with self._state:
            workers = list(self._workers.values())
            if not self._closed:
                for worker in workers:
                    worker.jobs.put(None)       # wakes an idle worker
            self._closed = True
            self._stopping.set()
        for worker in workers:
            if worker.thread is not None:
                worker.thread.join(max(0.0, deadline - time.monotonic()))
        running = [w for w in workers if w.thread is not None and w.thread.is_alive()]
        if running:
            # The client stays open for the workers still delivering; they are daemons and end with the process.
            _logger.warning("%d webhook worker(s) still delivering after %.1fs", len(running), timeout_s)
            return False
        self._client.close()
        return True

    def _enqueue(self, body: str, notification: Mapping[str, Any], delivery_id: str) -> None:
        delivery = WebhookDelivery(
            delivery_id=delivery_id, body=body, url=None,
            event_id=str(notification.get("event_id", "")), type=str(notification.get("type", "")),
            attempts=0, outcome="pending", status_code=None, error=None, first_attempt_at=None, last_attempt_at=None,
        )
        payload, problem = _payload(notification)
        with self._state:
            if problem is None and self._closed:
                # Not an end: the outbox still owes it, and the next start sends it.
                self._record(replace(delivery, error="the notifier is closed; sent after the next start"))
                return
            if problem is not None:
                _logger.warning("webhook notification for body %r not queued: %s", body, problem)
                self._finish(replace(delivery, outcome="failed", error=problem))
                return
            worker = self._worker(body)
            self._unfinished += 1
            self._record(delivery)
            worker.jobs.put(_Job(delivery, payload))

    def _worker(self, body: str) -> _Worker:
        worker = self._workers.get(body)
        if worker is None:
            worker = _Worker()
            worker.thread = threading.Thread(
                target=self._work, args=(worker.jobs,), name=f"webhook-{body}", daemon=True)
            worker.thread.start()  # before registering, so a thread that failed to start is never queued to
            self._workers[body] = worker
        return worker

    def _work(self, jobs: queue.Queue[_Job | None]) -> None:
        while (job := jobs.get()) is not None and not self._stopping.is_set():
            try:
                self._deliver(job)
            except Exception as exc:
                _logger.exception("webhook delivery %s to body %r failed", job.delivery.delivery_id, job.delivery.body)
                with self._state:
                    latest = self._log.get(job.delivery.delivery_id, job.delivery)
                self._finish(replace(latest, outcome="failed", error=_describe(exc)))
            finally:
                with self._state:
                    self._unfinished -= 1
                    self._state.notify_all()

    def _deliver(self, job: _Job) -> None:
        delivery = job.delivery
        for attempt in range(1, self._max_attempts + 1):
            target = self._targets(delivery.body)
            now = self._clock()
            first = now if delivery.first_attempt_at is None else delivery.first_attempt_at
            if target is None:
                self._finish(replace(delivery, url=None, outcome="no-webhook", first_attempt_at=first,
                                     last_attempt_at=now))
                return
            result = self._post(target, job, attempt, now)
            delivery = replace(delivery, url=target.url, attempts=attempt, status_code=result.status_code,
                               error=result.error, first_attempt_at=first, last_attempt_at=now)
            if result.delivered:
                self._finish(replace(delivery, outcome="delivered"))
                return
            if not result.retryable:
                _logger.warning("webhook for body %r refused event %s: %s", delivery.body, delivery.event_id,
                                result.error)
                self._finish(replace(delivery, outcome="failed"))
                return
            if attempt < self._max_attempts:
                self._record(delivery)
                self._sleep(self._backoff(attempt))
                if self._stopping.is_set():
                    return      # closing: left pending, for the next start
        _logger.warning("gave up on webhook for body %r, event %s, after %d attempts: %s", delivery.body,
                        delivery.event_id, delivery.attempts, delivery.error)
        self._finish(replace(delivery, outcome="gave-up"))

    def _post(self, target: Webhook, job: _Job, attempt: int, now: float) -> _Attempt:
        try:
            url = httpx.URL(target.url)
            scheme, host, port = webhooks.check_url(target.url)
        except (httpx.InvalidURL, GovernanceError) as exc:
            return _Attempt(None, f"webhook URL {target.url!r} is not usable: {_describe(exc)}", retryable=False)
        try:
            address = webhooks.first_allowed(self._resolve(host, port), self._allow)
        except OSError as exc:
            return _Attempt(None, f"{host} does not resolve: {_describe(exc)}", retryable=True)
        except GovernanceError as exc:
            return _Attempt(None, str(exc), retryable=False)
        headers = {
            "Host": url.netloc.decode("ascii"),
            "Content-Type": "application/json",
            "X-Accord-Event": job.delivery.event_id,
            "X-Accord-Delivery": job.delivery.delivery_id,
            "X-Accord-Attempt": str(attempt),
            SIGNATURE_HEADER: webhooks.signature(self.signing_secret(job.delivery.body, target.registration),
                                                 int(now), job.payload),
        }
        # TLS still checks the certificate against the host name, while the connection goes to the checked address.
        extensions = {"sni_hostname": host} if scheme == "https" else {}
        try:
            response = self._client.post(url.copy_with(host=str(address)), content=job.payload, headers=headers,
                                         extensions=extensions)
        except (httpx.UnsupportedProtocol, httpx.InvalidURL) as exc:
            return _Attempt(None, f"webhook URL {target.url!r} is not usable: {_describe(exc)}", retryable=False)
        except httpx.TransportError as exc:
            return _Attempt(None, _describe(exc), retryable=True)
        code = response.status_code
        if 200 <= code < 300:
            return _Attempt(code, None, retryable=False)
        return _Attempt(code, f"HTTP {code} {response.reason_phrase}".rstrip(), retryable=code == 429 or code >= 500)

    def _backoff(self, attempt: int) -> float:
        # The exponent is capped so a very large max_attempts cannot overflow the float.
        return min(self._first_backoff_s * 2.0 ** min(attempt - 1, 64), self._max_backoff_s)

    def _finish(self, delivery: WebhookDelivery) -> None:
        self._record(delivery)
        if self._on_finished is not None:
            try:
                self._on_finished(delivery)
            except Exception:
                _logger.exception("recording the end of webhook delivery %s failed", delivery.delivery_id)

    def _record(self, delivery: WebhookDelivery) -> None:
        with self._state:
            self._log[delivery.delivery_id] = delivery  # an update keeps the delivery's place in the log
            while len(self._log) > LOG_LIMIT:
                del self._log[next(iter(self._log))]


def _payload(notification: Mapping[str, Any]) -> tuple[bytes, str | None]:
    """The JSON to send, or what is wrong with the notification."""
    missing = [key for key in ("event_id", "type") if not notification.get(key)]
    if missing:
        return b"", f"notification has no {' or '.join(missing)}"
    try:
        # Serialised when queued, so a caller changing its dict afterwards cannot change what is sent.
        return json.dumps(notification).encode("utf-8"), None
    except (TypeError, ValueError) as exc:
        return b"", f"notification is not JSON-able: {exc}"


def _describe(exc: BaseException) -> str:
    return f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__
