"""In-memory stand-ins for ingest's ports: the record log and the ledger of keyed requests."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

from broker.domain.messages import Outgoing


class MemoryLog:
    """The ingest's RecordLog in memory: what was published where, with offsets counted per topic."""

    def __init__(self) -> None:
        self.sent: dict[str, list[Outgoing]] = {}

    def publish(self, topic: str, value: bytes, key: bytes | None = None,
                headers: Sequence[tuple[str, bytes]] = ()) -> tuple[int, int]:
        self.sent.setdefault(topic, []).append(Outgoing(topic, value, key, tuple(headers)))
        return 0, len(self.sent[topic]) - 1

    def publish_all(self, records: Sequence[Outgoing]) -> list[tuple[int, int]]:
        return [self.publish(r.topic, r.value, r.key, r.headers) for r in records]


class MemoryRequestLedger:
    """The RequestLedger in memory: one process, so "at most once" needs no fencing here."""

    def __init__(self, log: MemoryLog) -> None:
        self.log = log
        self.entries: dict[str, tuple[str, dict[str, Any]]] = {}

    def publish_once(self, key: str, digest: str, records: Sequence[Outgoing],
                     answer: Callable[[list[tuple[int, int]]], dict[str, Any]]) -> tuple[str, dict[str, Any], bool]:
        if key in self.entries:
            return (*self.entries[key], False)
        self.entries[key] = (digest, answer(self.log.publish_all(records)))
        return (*self.entries[key], True)
