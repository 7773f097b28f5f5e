"""Prometheus metrics of this process (prometheus-client), and the ASGI app that exposes them."""

from __future__ import annotations

from typing import Any

from prometheus_client import Counter, Histogram, make_asgi_app

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


class PrometheusGateCounters:
    def records(self, stream: str, outcome: str, n: int) -> None:
        GATE_RECORDS.labels(stream=stream, outcome=outcome).inc(n)

    def enforced(self, seconds: float) -> None:
        GATE_ENFORCEMENT.observe(seconds)
