"""What the outside world hands the use cases: a record read from a log, a control-topic entry, a policy answer.

Adapters build these from their libraries' types so that no use case ever sees kafka-python's or OPA's objects.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class Record:
    """One record consumed from a topic-partition (value None: a tombstone)."""

    topic: str
    partition: int
    offset: int
    key: bytes | None
    value: bytes | None
    headers: tuple[tuple[str, bytes], ...]


@dataclass(frozen=True)
class ControlRecord:
    """One entry of the control topic, its value decoded from JSON (None: the key was tombstoned)."""

    offset: int
    key: str
    value: dict[str, Any] | None
    timestamp_ms: int


@dataclass(frozen=True)
class Evaluation:
    """A rule's value and the engine's id for the decision (OPA's `decision_id`; None when it keeps no log)."""

    result: Any
    decision_id: str | None
