"""The gate's ports: what a gate worker consumes from, produces to and reports through (adapters implement them;
tests use the fakes in tests/unit/gate_fakes.py)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any, Protocol

from broker.domain.messages import ControlRecord, Record
from broker.services.batch_audit import Placement


class Stage(Protocol):
    """Consume-transform-produce in transactions (adapters.kafka_transactions.TransactionalStage on kafka-python,
    adapters.rdkafka_transactions.RdkafkaTransactionalStage on librdkafka)."""

    def poll(self, timeout_s: float, max_records: int | None = None) -> list[Record]: ...

    def subscribe(self, topics: Sequence[str], from_start: Sequence[str] = ()) -> None:
        """Consume `topics` from the next poll on (between transactions); a partition of a topic in `from_start`
        that the group has no committed offset for starts at its beginning (a stream added at runtime)."""

    def begin(self) -> None: ...
    def send(self, topic: str, value: bytes | None, key: bytes | None = None,
             headers: Sequence[tuple[str, bytes]] = ()) -> Placement: ...
    def flush(self) -> None: ...
    def positions(self) -> Mapping[tuple[str, int], int]: ...
    def commit(self, consumed: Sequence[Record], fenced: bool = False) -> None: ...
    def abort(self) -> None: ...


class ControlSource(Protocol):
    def end_offset(self) -> int: ...
    def read_to(self, end: int, timeout_s: float = 10.0) -> list[ControlRecord]: ...


class OptOutSource(Protocol):
    """The National Data Opt-out list's topic (keyed hashes; a null value takes one off): the control reader's shape."""

    def end_offset(self) -> int: ...
    def read_to(self, end: int, timeout_s: float = 10.0) -> list[ControlRecord]: ...


class WithheldCounter(Protocol):
    """Counts rows lawfully withheld from a subscriber (the opt-out), apart from quarantine: nothing was wrong."""

    def __call__(self, subscriber: str, role: str, stream: str, reason: str, n: int) -> None: ...


class StatusSink(Protocol):
    def __call__(self, worker: str, status: dict[str, Any]) -> None: ...


class AuditAppender(Protocol):
    """Writes one raw audit record (`kind` is its key) to the audit topic now, outside any batch transaction."""

    def __call__(self, kind: str, record: dict[str, Any]) -> None: ...


class GateCounters(Protocol):
    def records(self, stream: str, outcome: str, n: int) -> None: ...
    def enforced(self, seconds: float) -> None: ...
    def control_refused(self, reason: str) -> None: ...


class NoCounters:
    def records(self, stream: str, outcome: str, n: int) -> None:
        pass

    def enforced(self, seconds: float) -> None:
        pass

    def control_refused(self, reason: str) -> None:
        pass
