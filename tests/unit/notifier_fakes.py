"""An in-memory stand-in for the Notifier port: it records what would have been sent, to whom."""

from __future__ import annotations

import copy
import ipaddress
import threading
from collections.abc import Mapping
from typing import Any

from broker.domain import webhooks

MASTER = b"recording-notifier-master-secret"


class RecordingNotifier:
    """Records each (body, notification) pair in `sent`, in order (and each delivery id in `deliveries`); `notify`
    never blocks and never raises. URLs are checked as the real notifier checks them, with hosts "resolving" through
    `hosts` (an IP literal is itself; any other name is a public address unless listed)."""

    def __init__(self, hosts: Mapping[str, str] | None = None) -> None:
        self.sent: list[tuple[str, dict[str, Any]]] = []
        self.deliveries: list[str | None] = []
        self.hosts = dict(hosts or {})
        self._lock = threading.Lock()

    def notify(self, body: str, notification: Mapping[str, Any], delivery_id: str | None = None) -> None:
        # A deep copy, as the real notifier serialises at once: later changes to the caller's dict are not sent.
        entry = (body, copy.deepcopy(dict(notification)))
        with self._lock:
            self.sent.append(entry)
            self.deliveries.append(delivery_id)

    def check_url(self, url: str) -> None:
        _, host, _ = webhooks.check_url(url)
        webhooks.first_allowed([ipaddress.ip_address(self.hosts.get(host, _literal_or_public(host)))], ())

    def signing_secret(self, body: str, registration: str) -> str:
        return webhooks.signing_secret(MASTER, body, registration)

    def deliver_all(self, governance: Any) -> None:
        """Report every delivery so far as delivered to `governance`, as the real notifier does when each ends."""
        with self._lock:
            delivered = [d for d in self.deliveries if d is not None]
        for delivery in delivered:
            governance.webhook_finished(delivery, "delivered", 1, 204, None)

    def to(self, body: str) -> list[dict[str, Any]]:
        """The notifications sent to `body`, in order."""
        with self._lock:
            return [notification for target, notification in self.sent if target == body]


def _literal_or_public(host: str) -> str:
    try:
        return str(ipaddress.ip_address(host))
    except ValueError:
        return "93.184.215.14"
