"""Prometheus metrics of this process (prometheus-client), and the ASGI app that exposes them."""

from __future__ import annotations

from typing import Any

from prometheus_client import CONTENT_TYPE_LATEST, Counter, Gauge, Histogram, generate_latest, make_asgi_app

PROMETHEUS_TEXT: str = CONTENT_TYPE_LATEST

INGEST_RECORDS = Counter(
    "accord_ingest_records_total", "Records offered for ingest, by stream and outcome (accepted or quarantined).",
    ["stream", "outcome"],
)


def count_ingest(stream: str, outcome: str) -> None:
    INGEST_RECORDS.labels(stream=stream, outcome=outcome).inc()


def ingest_count(stream: str, outcome: str) -> float:
    return float(INGEST_RECORDS.labels(stream=stream, outcome=outcome)._value.get())


def metrics_app() -> Any:
    return make_asgi_app()


GATE_RECORDS = Counter(
    "accord_gate_records_total",
    "Records the gate consumed, by stream and outcome (delivered, no-subscriber, quarantined).",
    ["stream", "outcome"],
)
GATE_ENFORCEMENT = Histogram(
    "accord_gate_enforcement_seconds", "Time from a policy change on the control topic to a worker enforcing it.",
    buckets=(0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0),
)


CONTROL_REFUSED = Counter(
    "accord_control_records_refused_total",
    "Control records not applied because no trusted key signed them, or they were replays; by reader (gate or "
    "governance) and reason. Any increase means someone wrote the control topic without the signing key: alert.",
    ["reader", "reason"],
)


def count_control_refused(reader: str, reason: str) -> None:
    CONTROL_REFUSED.labels(reader=reader, reason=reason).inc()


def control_refused_count(reader: str, reason: str) -> float:
    return float(CONTROL_REFUSED.labels(reader=reader, reason=reason)._value.get())


BACKFILL_RECORDS = Counter(
    "accord_backfill_records_total",
    "History on a new grant: ingest records replayed, by delivery topic and outcome (read, delivered).",
    ["topic", "outcome"],
)
BACKFILL_REMAINING = Gauge(
    "accord_backfill_remaining_records",
    "History on a new grant: ingest records still to replay for a delivery topic, as this worker last saw it.",
    ["topic"],
)


class PrometheusBackfillCounters:
    def replayed(self, topic: str, delivered: int, read: int) -> None:
        BACKFILL_RECORDS.labels(topic=topic, outcome="read").inc(read)
        BACKFILL_RECORDS.labels(topic=topic, outcome="delivered").inc(delivered)

    def remaining(self, topic: str, records: int) -> None:
        BACKFILL_REMAINING.labels(topic=topic).set(records)


class PrometheusGateCounters:
    def records(self, stream: str, outcome: str, n: int) -> None:
        GATE_RECORDS.labels(stream=stream, outcome=outcome).inc(n)

    def enforced(self, seconds: float) -> None:
        GATE_ENFORCEMENT.observe(seconds)

    def control_refused(self, reason: str) -> None:
        count_control_refused("gate", reason)


DISPUTE_DECISION = Histogram(
    "accord_dispute_time_to_decision_seconds",
    "Time from a dispute being raised to its decision or decisive default (governance clock), by how it ended.",
    ["how", "outcome"],
    buckets=(60, 600, 3600, 2 * 3600, 4 * 3600, 12 * 3600, 86400, 3 * 86400, 7 * 86400, 14 * 86400, 30 * 86400),
)
DISPUTE_ENFORCEMENT = Histogram(
    "accord_dispute_decision_to_enforcement_seconds",
    "Time from a decision to its policy change being on the control topic (gates then apply it; see "
    "accord_gate_enforcement_seconds).",
    buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0),
)
DISPUTES_OPEN = Gauge("accord_disputes_open", "Disputes awaiting a decision, by ladder tier.", ["tier"])


class PrometheusGovernanceMetrics:
    def decided(self, dispute: Any) -> None:
        if dispute.decided_at is None or dispute.decision is None:
            return
        how = "decided" if dispute.decision.get("by") else "defaulted"
        DISPUTE_DECISION.labels(how=how, outcome=str(dispute.decision.get("outcome"))).observe(
            (dispute.decided_at - dispute.raised_at).total_seconds())

    def enforced(self, dispute: Any, seconds: float) -> None:
        DISPUTE_ENFORCEMENT.observe(seconds)

    def open_by_tier(self, counts: Any) -> None:
        for tier, count in counts.items():
            DISPUTES_OPEN.labels(tier=tier).set(count)


def metrics_text() -> bytes:
    return generate_latest()
