"""What one gate batch sent, gathered while it is routed and written to the audit topic inside the batch's own
transaction: one delivery-batch record per delivery topic-partition, one quarantine-batch record per quarantine
topic-partition. A committed batch always has its audit records; an aborted one leaves none."""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Callable, Sequence
from typing import Any, Protocol

from broker.domain.audit_records import (
    DELIVERY_BATCH,
    QUARANTINE_BATCH,
    WITHHELD_BATCH,
    Delivered,
    Source,
    batch_record,
    quarantine_batch_record,
    withheld_batch_record,
)
from broker.domain.messages import Record
from broker.domain.plans import Plan
from broker.domain.topics import quarantine_topic

Placement = Callable[[], tuple[int, int]]  # (partition, offset) of a sent record, once the stage was flushed


class AuditSink(Protocol):
    """Where the batch's audit records go: the gate's transactional stage."""

    def flush(self) -> None: ...

    def send(self, topic: str, value: bytes | None, key: bytes | None = None,
             headers: Sequence[tuple[str, bytes]] = ()) -> Placement: ...


class BatchAudit:
    """The deliveries and quarantined rows of the batch being routed."""

    def __init__(self) -> None:
        self._sent: list[tuple[str, Plan, Record, bytes | None, Placement]] = []
        self._quarantined: list[tuple[str, Record, bytes, str, Placement]] = []  # (stream, source, body, rule, where)
        self._withheld: list[tuple[str, Plan, Record, str]] = []  # (delivery topic, plan, source, reason)

    def delivered(self, topic: str, plan: Plan, source: Record, payload: bytes | None, placed: Placement) -> None:
        self._sent.append((topic, plan, source, payload, placed))

    def quarantined(self, stream: str, source: Record, body: bytes, rule: str, placed: Placement) -> None:
        self._quarantined.append((stream, source, body, rule, placed))

    def withheld(self, topic: str, plan: Plan, source: Record, reason: str) -> None:
        self._withheld.append((topic, plan, source, reason))

    def clear(self) -> None:
        """Forget the batch (it was aborted: it is consumed, and audited, again later)."""
        self._sent.clear()
        self._quarantined.clear()
        self._withheld.clear()

    def write(self, sink: AuditSink, audit_topic: str, worker: str, at: str) -> None:
        """Send the batch's audit records through `sink`, after one flush that makes every offset known (none when
        only withheld rows are audited: they name no offset on a topic the gate wrote)."""
        if not self._sent and not self._quarantined and not self._withheld:
            return
        if self._sent or self._quarantined:
            sink.flush()
        for body, key in [*self._quarantine_records(worker, at), *self._delivery_records(worker, at),
                          *self._withheld_records(worker, at)]:
            sink.send(audit_topic, json.dumps(body, sort_keys=True).encode(), key=key)
        self.clear()

    def _delivery_records(self, worker: str, at: str) -> list[tuple[dict[str, Any], bytes]]:
        landed: dict[tuple[str, int], list[Delivered]] = {}
        plans: dict[str, Plan] = {}
        sources: dict[int, Source] = {}  # one per ingest record, however many deliveries it made (by id: the
        # batch's records are all alive while it is audited)
        for topic, plan, record, payload, placed in self._sent:
            partition, offset = placed()
            source = sources.get(id(record))
            if source is None:
                source = sources[id(record)] = Source(record.topic, record.partition, record.offset)
            landed.setdefault((topic, partition), []).append(Delivered(offset, record.key, payload, source))
            plans[topic] = plan
        return [(batch_record(topic, partition, delivered, plans[topic], worker, at), DELIVERY_BATCH.encode())
                for (topic, partition), delivered in sorted(landed.items())]

    def _quarantine_records(self, worker: str, at: str) -> list[tuple[dict[str, Any], bytes]]:
        landed: dict[tuple[str, int], tuple[str, list[Delivered], Counter[str]]] = {}
        for stream, record, body, rule, placed in self._quarantined:
            partition, offset = placed()
            _, entries, rules = landed.setdefault((quarantine_topic(stream), partition), (stream, [], Counter()))
            entries.append(Delivered(offset, record.key, body, Source(record.topic, record.partition, record.offset)))
            rules[rule] += 1
        return [(quarantine_batch_record(topic, partition, entries, rules, stream, worker, at),
                 QUARANTINE_BATCH.encode()) for (topic, partition), (stream, entries, rules) in sorted(landed.items())]

    def _withheld_records(self, worker: str, at: str) -> list[tuple[dict[str, Any], bytes]]:
        by_topic: dict[str, tuple[Plan, list[Source], Counter[str]]] = {}
        for topic, plan, record, reason in self._withheld:
            _, sources, reasons = by_topic.setdefault(topic, (plan, [], Counter()))
            sources.append(Source(record.topic, record.partition, record.offset))
            reasons[reason] += 1
        return [(withheld_batch_record(topic, plan, sources, reasons, worker, at), WITHHELD_BATCH.encode())
                for topic, (plan, sources, reasons) in sorted(by_topic.items())]
