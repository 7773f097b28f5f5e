"""An in-memory DeliveryLog (services/deliveries.py's port): partitions of framed Avro records, some of them not yet
committed (an open transaction), so the read_committed rule can be seen."""

from __future__ import annotations

import threading
from dataclasses import dataclass, field

from broker.domain.cursors import Positions
from broker.domain.messages import Record
from broker.errors import DeliveryRefused


@dataclass
class MemoryDeliveryLog:
    topics: dict[str, list[list[tuple[bytes | None, bool]]]] = field(default_factory=dict)  # (value, committed)
    fenced: set[str] = field(default_factory=set)
    log_start: dict[tuple[str, int], int] = field(default_factory=dict)  # records below it deleted (retention)
    reads: list[tuple[str, dict[int, int], int, float]] = field(default_factory=list)
    changed: threading.Condition = field(default_factory=threading.Condition)

    def append(self, topic: str, value: bytes | None, partition: int = 0, committed: bool = True) -> None:
        with self.changed:
            partitions = self.topics.setdefault(topic, [[]])
            while len(partitions) <= partition:
                partitions.append([])
            partitions[partition].append((value, committed))
            self.changed.notify_all()

    def commit(self, topic: str) -> None:
        with self.changed:
            self.topics[topic] = [[(v, True) for v, _ in p] for p in self.topics[topic]]
            self.changed.notify_all()

    def partitions(self, topic: str) -> list[int] | None:
        return list(range(len(self.topics[topic]))) if topic in self.topics else None

    def ends(self, topic: str) -> dict[int, int]:
        return {p: self._stable_end(topic, p) for p in range(len(self.topics.get(topic, [])))}

    def _stable_end(self, topic: str, partition: int) -> int:
        records = self.topics[topic][partition]
        return next((n for n, (_, committed) in enumerate(records) if not committed), len(records))

    def read(self, topic: str, positions: Positions, limit: int, wait_s: float) -> list[Record]:
        if topic in self.fenced:
            raise DeliveryRefused("Kafka refuses this delivery topic's readers: its right has ended (fenced)")
        self.reads.append((topic, dict(positions), limit, wait_s))
        with self.changed:
            found = self._committed(topic, positions)
            if not found and wait_s > 0:  # as Kafka's long poll: wait for a first record, not for a full page
                self.changed.wait(wait_s)
                found = self._committed(topic, positions)
        return found[:limit]

    def _committed(self, topic: str, positions: Positions) -> list[Record]:
        found: list[Record] = []
        for partition, records in enumerate(self.topics.get(topic, [])):
            start = max(positions.get(partition, 0), self.log_start.get((topic, partition), 0))
            for offset in range(start, self._stable_end(topic, partition)):
                found.append(Record(topic, partition, offset, None, records[offset][0], ()))
        return found
