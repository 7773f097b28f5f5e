"""An in-memory stand-in for the Notifier port: it records what would have been sent, to whom."""

from __future__ import annotations

import copy
import threading
from collections.abc import Mapping
from typing import Any


class RecordingNotifier:
    """Records each (body, notification) pair in `sent`, in order; `notify` never blocks and never raises."""

    def __init__(self) -> None:
        self.sent: list[tuple[str, dict[str, Any]]] = []
        self._lock = threading.Lock()

    def notify(self, body: str, notification: Mapping[str, Any]) -> None:
        # A deep copy, as the real notifier serialises at once: later changes to the caller's dict are not sent.
        entry = (body, copy.deepcopy(dict(notification)))
        with self._lock:
            self.sent.append(entry)

    def to(self, body: str) -> list[dict[str, Any]]:
        """The notifications sent to `body`, in order."""
        with self._lock:
            return [notification for target, notification in self.sent if target == body]
