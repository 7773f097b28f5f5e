"""How many partitions a stream's topics have, and the key that keeps one area's records in order on them.

Kafka orders records within a partition only, and its default partitioners (Java's, kafka-python's and
librdkafka's `murmur2_random`) send every record of one key to one partition. So a stream's records are keyed by
the value of its first jurisdiction field (the area they belong to), at ingest and again on every delivery topic:
one area's records, and so one case's or one person's, keep their publish order end to end, while different areas
spread over the partitions that let gate workers (and a subscriber's own consumers) share the work.

Growing a topic changes which partition a key hashes to, so records of one key published before and after could
be read out of order: topics get their partition count when created, and are grown only when an operator asks
(`accord kafka partitions --grow`), never shrunk (Kafka cannot).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from broker.domain.topics import delivered_stream, ingest_topic

# Gate workers share an ingest topic's partitions, so its count bounds how many of them can work at once.
DEFAULT_INGEST_PARTITIONS = 12
# One delivery topic per subscriber role and stream, and a subscriber usually receives one area (one key): a
# partition more would sit empty, while each costs every broker a file, memory and replication work.
DEFAULT_DELIVERY_PARTITIONS = 1
MAX_PARTITIONS = 1000


@dataclass(frozen=True)
class StreamPartitions:
    """The partition counts a stream's topics are created with."""

    ingest: int = DEFAULT_INGEST_PARTITIONS
    delivery: int = DEFAULT_DELIVERY_PARTITIONS


def stream_key(schema: Mapping[str, Any], record: Mapping[str, Any]) -> bytes | None:
    """The record's key: its first jurisdiction field that has a value (`accord.jurisdiction`); None when none has
    one (such a record is quarantined as unresolved, or spread by the partitioner)."""
    for name in schema.get("accord.jurisdiction", []):
        if record.get(name):
            return str(record[name]).encode()
    return None


def partitions_of(document: Mapping[str, Any] | None, stream: str) -> StreamPartitions:
    """A stream's counts as a compiled catalog states them (the defaults for a catalog compiled before they were
    stated, or a stream it does not name)."""
    entry = ((document or {}).get("streams") or {}).get(stream) or {}
    return StreamPartitions(int(entry.get("partitions", DEFAULT_INGEST_PARTITIONS)),
                            int(entry.get("delivery_partitions", DEFAULT_DELIVERY_PARTITIONS)))


@dataclass(frozen=True)
class Resize:
    """One existing topic whose partition count differs from the catalog's."""

    topic: str
    current: int
    wanted: int

    @property
    def grows(self) -> bool:
        return self.wanted > self.current

    def describe(self) -> str:
        if self.grows:
            return (f"{self.topic} has {self.current} partitions, the catalog asks for {self.wanted}: growing it "
                    "moves keys to other partitions, so records of one area published before and after may be read "
                    "out of order; grow it with `accord kafka partitions --grow` when that is acceptable")
        return (f"{self.topic} has {self.current} partitions, more than the {self.wanted} the catalog asks for; "
                "Kafka cannot take partitions away, so it keeps them (recreate the topic to shrink it)")


def wanted_counts(streams: Mapping[str, StreamPartitions], existing: Iterable[str]) -> dict[str, int]:
    """topic → the count the catalog asks for: each stream's ingest topic, and each delivery topic among `existing`
    (they are made when a plan first needs one) of a stream the catalog names."""
    wanted = {ingest_topic(stream): counts.ingest for stream, counts in streams.items()}
    for topic in existing:
        stream = delivered_stream(topic)
        if stream is not None and stream in streams:
            wanted[topic] = streams[stream].delivery
    return wanted


def resizes(current: Mapping[str, int], wanted: Mapping[str, int]) -> list[Resize]:
    """Every topic of `wanted` that exists (`current`: topic → partitions now) with another count, by name."""
    return [Resize(topic, current[topic], count) for topic, count in sorted(wanted.items())
            if topic in current and current[topic] != count]


def growth(found: Sequence[Resize]) -> dict[str, int]:
    """The topics to grow and their new counts: never a shrink."""
    return {r.topic: r.wanted for r in found if r.grows}
