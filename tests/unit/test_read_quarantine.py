"""Reading a stream's quarantine: one stray record on the topic (not an entry Accord wrote) is skipped, not fatal."""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any

from broker.domain.messages import Record
from broker.services.ingest import read_quarantine


class _Topic:
    def __init__(self, values: list[bytes]) -> None:
        self.values = values
        self.asked: dict[str, Any] = {}

    def read(self, topic: str, max_records: int, timeout_s: float = 10.0, start_offset: int = 0,
             partitions: Sequence[int] | None = None) -> list[Record]:
        self.asked = {"topic": topic, "start_offset": start_offset}
        return [Record(topic, 0, offset, None, value, ()) for offset, value in enumerate(self.values)
                if offset >= start_offset][:max_records]


def test_a_record_that_is_not_a_quarantine_entry_is_skipped() -> None:
    entry = {"source": {"kind": "http", "index": 0}, "reasons": [{"rule": "required"}]}
    topic = _Topic([b"written by another client", json.dumps(entry).encode(), b"[1, 2]",
                    json.dumps({"source": "not an object"}).encode()])
    assert read_quarantine(topic, "ukhsa.positive-tests", 100) == [{"partition": 0, "offset": 1, **entry}]


def test_it_reads_from_the_offset_asked() -> None:
    entries = [json.dumps({"source": {"kind": "gate"}, "n": n}).encode() for n in range(5)]
    topic = _Topic(entries)
    found = read_quarantine(topic, "ukhsa.positive-tests", 100, start_offset=3)
    assert [e["n"] for e in found] == [3, 4] and topic.asked == {"topic": "quarantine.ukhsa.positive-tests",
                                                                 "start_offset": 3}
