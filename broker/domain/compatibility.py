"""Avro schema compatibility, decided by the Apache `avro` library's reader/writer checker."""

from __future__ import annotations

from collections.abc import Sequence
from enum import StrEnum

from avro.compatibility import ReaderWriterCompatibilityChecker, SchemaCompatibilityType
from avro.schema import Schema


class CompatibilityMode(StrEnum):
    BACKWARD = "BACKWARD"
    BACKWARD_TRANSITIVE = "BACKWARD_TRANSITIVE"
    FORWARD = "FORWARD"
    FORWARD_TRANSITIVE = "FORWARD_TRANSITIVE"
    FULL = "FULL"
    FULL_TRANSITIVE = "FULL_TRANSITIVE"
    NONE = "NONE"

    @property
    def transitive(self) -> bool:
        return self.value.endswith("_TRANSITIVE")

    @property
    def needs_backward(self) -> bool:
        return self.value.startswith(("BACKWARD", "FULL"))

    @property
    def needs_forward(self) -> bool:
        return self.value.startswith(("FORWARD", "FULL"))


def _reader_reads_writer(reader: Schema, writer: Schema, label: str) -> list[str]:
    result = ReaderWriterCompatibilityChecker().get_compatibility(reader, writer)  # type: ignore[no-untyped-call]
    if result.compatibility is SchemaCompatibilityType.compatible:
        return []
    kinds = ", ".join(sorted(k.value.upper() for k in result.incompatibilities))
    where = ", ".join(sorted(result.locations))
    details = "; ".join(sorted(result.messages))
    return [f"{label}: {kinds} at {where}: {details}"]


def incompatibilities(mode: CompatibilityMode, candidate: Schema, earlier: Sequence[tuple[int, Schema]]) -> list[str]:
    """Why `candidate` may not follow `earlier` (version, schema; oldest first) under `mode`; empty if it may.

    BACKWARD: the new schema reads data written with the old; FORWARD: the old reads the new; FULL: both.
    Non-transitive modes compare with the latest earlier version only.
    """
    if mode is CompatibilityMode.NONE or not earlier:
        return []
    against = earlier if mode.transitive else earlier[-1:]
    problems: list[str] = []
    for version, old in against:
        if mode.needs_backward:
            problems += _reader_reads_writer(candidate, old, f"new schema cannot read version {version}")
        if mode.needs_forward:
            problems += _reader_reads_writer(old, candidate, f"version {version} cannot read the new schema")
    return problems
