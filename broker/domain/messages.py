"""What the outside world hands the use cases: a record read from a log, a control-topic entry, a policy answer.

Adapters build these from their libraries' types so that no use case ever sees kafka-python's or OPA's objects.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from broker.domain.topics import CONTROL_TOPIC
from broker.errors import PolicyEngineError


@dataclass(frozen=True)
class Record:
    """One record consumed from a topic-partition (value None: a tombstone)."""

    topic: str
    partition: int
    offset: int
    key: bytes | None
    value: bytes | None
    headers: tuple[tuple[str, bytes], ...]
    timestamp_ms: int | None = None  # read only where it matters (history on a new grant)


@dataclass(frozen=True)
class Outgoing:
    """One record to append to a topic (what ingest hands its log to publish in a batch)."""

    topic: str
    value: bytes
    key: bytes | None = None
    headers: tuple[tuple[str, bytes], ...] = ()


@dataclass(frozen=True)
class ControlRecord:
    """One entry of the control topic as the broker holds it: the value's bytes (None: the key was tombstoned),
    its headers (the signature, domain/control_signing.py) and its timestamp, which is the broker's append time
    when `broker_stamped`."""

    offset: int
    key: str
    payload: bytes | None
    timestamp_ms: int
    topic: str = CONTROL_TOPIC
    headers: tuple[tuple[str, bytes], ...] = ()
    broker_stamped: bool = False

    @property
    def value(self) -> dict[str, Any] | None:
        """The value decoded from JSON; PolicyEngineError when it is not a JSON object. Decoded only once the
        record's signature is verified, so an unsigned record is never even parsed."""
        if self.payload is None:
            return None
        try:
            decoded = json.loads(self.payload)
        except ValueError:
            raise PolicyEngineError(f"control record {self.offset} ({self.key}) is not JSON") from None
        if not isinstance(decoded, dict):
            raise PolicyEngineError(f"control record {self.offset} ({self.key}) is not a JSON object")
        return decoded


@dataclass(frozen=True)
class Evaluation:
    """A rule's value and the engine's id for the decision (OPA's `decision_id`; None when it keeps no log)."""

    result: Any
    decision_id: str | None
