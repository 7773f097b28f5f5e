"""In-memory stand-ins for the governance service's ports: the governance log, the control topic and the clock."""

from __future__ import annotations

import copy
import datetime as dt
import json
from collections.abc import Mapping, Sequence
from typing import Any

from broker.domain.control import CATALOG_KEY, PolicyState, apply
from broker.errors import ServiceError

START = dt.datetime(2026, 3, 2, 9, 0, tzinfo=dt.UTC)


class FakeClock:
    """A clock that moves only when told to."""

    def __init__(self, now: dt.datetime = START) -> None:
        self._now = now

    def now(self) -> dt.datetime:
        return self._now

    def __call__(self) -> dt.datetime:
        return self._now

    def advance(self, by: dt.timedelta) -> dt.datetime:
        self._now += by
        return self._now

    def to(self, moment: dt.datetime) -> dt.datetime:
        self._now = moment
        return self._now


class MemoryGovernanceLog:
    """Like the Kafka log: appends are atomic and get consecutive offsets, and `read_new` returns every event this
    reader has not read yet, including those its own writer appended. Events are stored as JSON, as on the topic."""

    def __init__(self) -> None:
        self.events: list[dict[str, Any]] = []
        self._read = 0
        self._fail_in: int | None = None

    def fail_append(self, after: int = 0) -> None:
        """Let `after` appends through, then fail the next one, as a crash before its transaction commits."""
        self._fail_in = after

    def append(self, events: Sequence[Mapping[str, Any]]) -> list[int]:
        if self._fail_in is not None:
            self._fail_in -= 1
            if self._fail_in < 0:
                self._fail_in = None
                raise ServiceError("appending to the governance topic failed, nothing was written (simulated)")
        first = len(self.events)
        self.events.extend(json.loads(json.dumps(event)) for event in events)
        return list(range(first, len(self.events)))

    def read_new(self, timeout_s: float = 10.0) -> list[tuple[int, dict[str, Any]]]:
        new = [(offset, copy.deepcopy(event)) for offset, event in enumerate(self.events) if offset >= self._read]
        self._read = len(self.events)
        return new

    def reader(self) -> MemoryGovernanceLog:
        """A second reader of the same events (a restarted service), starting from the beginning."""
        other = MemoryGovernanceLog()
        other.events = self.events
        return other

    def types(self, dispute: str | None = None) -> list[str]:
        return [str(e["type"]) for e in self.events if dispute is None or e.get("dispute") == dispute]


class FakeControl:
    """The control topic: records keyed writes and folds them, with the applied catalog, into a PolicyState."""

    def __init__(self, catalog: Mapping[str, Any] | None = None) -> None:
        self.records: list[tuple[str, dict[str, Any] | None]] = []
        self.failures = 0      # appends still to fail, as a broker outage or a crash before the write
        if catalog is not None:
            self.records.append((CATALOG_KEY, {"document": copy.deepcopy(dict(catalog))}))

    def append(self, key: str, value: dict[str, Any] | None, topic: str = "_accord.control",
               timeout_s: float = 10.0) -> tuple[int, int]:
        if self.failures:
            self.failures -= 1
            raise ServiceError(f"writing {key} to the control topic failed (simulated)")
        self.records.append((key, None if value is None else json.loads(json.dumps(value))))
        offset = len(self.records) - 1
        return offset, 1_700_000_000_000 + offset

    def current(self) -> PolicyState:
        state = PolicyState()
        for offset, (key, value) in enumerate(self.records):
            state = apply(state, offset, key, value)
        return state

    def writes(self, prefix: str = "") -> list[tuple[str, dict[str, Any] | None]]:
        """Every write but the catalog's, in order, whose key starts with `prefix`."""
        return [(k, v) for k, v in self.records if k != CATALOG_KEY and k.startswith(prefix)]
