"""The schema registry use cases: state from the changelog, compatibility-checked writes appended to it."""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Any, Protocol, TypeVar

from broker.domain.registry import Change, RegistryState, SchemaVersion

T = TypeVar("T")


class ChangeSink(Protocol):
    def append(self, changes: list[Change]) -> None: ...


class Registry:
    """Reads are served from memory; each write is planned against the state and appended to the log.

    Writes within one instance are serialised; the state changes only when the log is applied, so a restarted
    or second instance that replays the same log has the same subjects, versions and ids.
    """

    def __init__(self) -> None:
        self.state = RegistryState()
        self._state_lock = threading.RLock()
        self._write_lock = threading.Lock()
        self._sink: ChangeSink | None = None

    def bind(self, sink: ChangeSink) -> None:
        self._sink = sink

    def apply(self, key: str, value: dict[str, Any] | None) -> None:
        with self._state_lock:
            self.state.apply(key, value)

    def read(self, query: Callable[[RegistryState], T]) -> T:
        with self._state_lock:
            return query(self.state)

    def _append(self, changes: list[Change]) -> None:
        if self._sink is None:
            raise RuntimeError("registry has no changelog bound")
        self._sink.append(changes)

    def register(self, subject: str, schema: str) -> SchemaVersion:
        with self._write_lock:
            planned = self.read(lambda s: s.plan_register(subject, schema))
            if isinstance(planned, SchemaVersion):
                return planned
            self._append(planned)
            return self.read(lambda s: s.lookup(subject, schema))

    def delete_version(self, subject: str, spec: str, permanent: bool) -> int:
        with self._write_lock:
            version, changes = self.read(lambda s: s.plan_delete_version(subject, spec, permanent))
            self._append(changes)
            return version

    def delete_subject(self, subject: str, permanent: bool) -> list[int]:
        with self._write_lock:
            versions, changes = self.read(lambda s: s.plan_delete_subject(subject, permanent))
            self._append(changes)
            return versions

    def set_config(self, subject: str | None, level: str) -> str:
        with self._write_lock:
            self._append(self.read(lambda s: s.plan_config(subject, level)))
            return self.read(lambda s: s.mode(subject).value)

    def delete_config(self, subject: str | None) -> str:
        with self._write_lock:
            previous = self.read(lambda s: s.mode(subject).value)
            self._append(self.read(lambda s: s.plan_config(subject, None)))
            return previous


class MemoryChangeSink:
    """Applies changes straight to a registry: the in-memory changelog for unit tests."""

    def __init__(self, registry: Registry) -> None:
        self.registry = registry
        self.records: list[Change] = []

    def append(self, changes: list[Change]) -> None:
        for key, value in changes:
            self.records.append((key, value))
            self.registry.apply(key, value)
