"""The schema registry use cases: state from the changelog, compatibility-checked writes appended to it."""

from __future__ import annotations

import random
import threading
import time
from collections.abc import Callable
from typing import Any, Protocol, TypeVar

from broker.domain.registry import Change, RegistryState, SchemaVersion, parse_mode
from broker.errors import RegistryError, WriterFenced

# Enough for a writer to win against another that keeps writing (each pause doubles), few enough to answer quickly.
WRITE_ATTEMPTS = 8
T = TypeVar("T")


class ChangeSink(Protocol):
    """The registry's log (a compacted Kafka topic), written by one registry instance at a time."""

    def catch_up(self) -> None:
        """Become the log's writer (fencing any other), then apply every record committed so far."""

    def append(self, changes: list[Change]) -> None:
        """Commit the records and apply them; WriterFenced (nothing written) if another writer took over."""


class Registry:
    """Reads are served from memory; each write is planned against the state and appended to the log.

    The state changes only when the log is applied, so a restarted or second instance that replays the same log has
    the same subjects, versions and ids. Every instance may take writes: a write catches up with the log as its
    one writer before it is planned, and is planned again if another instance took over before it was committed.
    So two instances never both commit version N of a subject, and a registration is acknowledged only once its
    record is committed and applied as that version.
    """

    def __init__(self, pause: Callable[[int], None] | None = None) -> None:
        self.state = RegistryState()
        self._state_lock = threading.RLock()
        self._write_lock = threading.Lock()
        self._sink: ChangeSink | None = None
        self._pause = pause or _jittered_backoff

    def bind(self, sink: ChangeSink) -> None:
        self._sink = sink

    def apply(self, key: str, value: dict[str, Any] | None) -> None:
        with self._state_lock:
            self.state.apply(key, value)

    def read(self, query: Callable[[RegistryState], T]) -> T:
        with self._state_lock:
            return query(self.state)

    def _write(self, plan: Callable[[RegistryState], tuple[T, list[Change]]]) -> T:
        """Plan against the caught-up state and commit; again, after a pause, each time another writer took over."""
        if self._sink is None:
            raise RuntimeError("registry has no changelog bound")
        with self._write_lock:
            for attempt in range(WRITE_ATTEMPTS):
                self._sink.catch_up()
                result, changes = self.read(plan)
                if not changes:
                    return result
                try:
                    self._sink.append(changes)
                except WriterFenced:
                    self._pause(attempt)
                    continue
                return result
        raise RegistryError(500, 50001, f"Error in the backend datastore: another registry instance took over "
                            f"writing each of {WRITE_ATTEMPTS} times; nothing was written, try again")

    def register(self, subject: str, schema: str) -> SchemaVersion:
        entry = self._write(lambda s: s.plan_register(subject, schema))
        # Read our own log: acknowledge only the version the applied log holds (the fence makes this always so).
        held = self.read(lambda s: s.version(subject, str(entry.version), deleted=True))
        if held.schema_id != entry.schema_id:
            raise RegistryError(500, 50001, f"Error in the backend datastore: version {entry.version} of {subject} "
                                f"holds schema {held.schema_id}, not {entry.schema_id}; try again")
        return entry

    def delete_version(self, subject: str, spec: str, permanent: bool) -> int:
        return self._write(lambda s: s.plan_delete_version(subject, spec, permanent))

    def delete_subject(self, subject: str, permanent: bool) -> list[int]:
        return self._write(lambda s: s.plan_delete_subject(subject, permanent))

    def set_config(self, subject: str | None, level: str) -> str:
        return self._write(lambda s: (parse_mode(level).value, s.plan_config(subject, level)))

    def delete_config(self, subject: str | None) -> str:
        return self._write(lambda s: (s.mode(subject).value, s.plan_config(subject, None)))


def _jittered_backoff(attempt: int) -> None:
    # Two instances that keep taking the writer id from each other would otherwise fence each other in lockstep.
    time.sleep(random.uniform(0, 0.02 * 2**attempt))


class MemoryChangeSink:
    """Applies changes straight to a registry: the in-memory changelog for unit tests (always the writer)."""

    def __init__(self, registry: Registry) -> None:
        self.registry = registry
        self.records: list[Change] = []

    def catch_up(self) -> None:
        """Nothing to do: every record was applied when it was appended."""

    def append(self, changes: list[Change]) -> None:
        for key, value in changes:
            self.records.append((key, value))
            self.registry.apply(key, value)
