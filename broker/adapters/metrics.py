"""Prometheus metrics of this process (prometheus-client), and the ASGI app that exposes them."""

from __future__ import annotations

from typing import Any

from prometheus_client import Counter, make_asgi_app

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
