"""Prometheus metrics of this process (prometheus-client), and the ASGI app that exposes them."""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator, Mapping
from typing import Any

from prometheus_client import (
    CONTENT_TYPE_LATEST,
    REGISTRY,
    Counter,
    Gauge,
    Histogram,
    generate_latest,
    make_asgi_app,
    start_http_server,
)
from prometheus_client.core import GaugeMetricFamily

from broker.errors import AccordError

PROMETHEUS_TEXT: str = CONTENT_TYPE_LATEST

INGEST_RECORDS = Counter(
    "accord_ingest_records_total", "Records offered for ingest, by stream and outcome (accepted or quarantined).",
    ["stream", "outcome"],
)


def count_ingest(stream: str, outcome: str, records: int = 1) -> None:
    INGEST_RECORDS.labels(stream=stream, outcome=outcome).inc(records)


def ingest_count(stream: str, outcome: str) -> float:
    return float(INGEST_RECORDS.labels(stream=stream, outcome=outcome)._value.get())


RECEIPTS = Counter(
    "accord_delivery_receipts_total", "Delivery receipts sent to the API, by outcome: accepted, or the HTTP status "
    "they were refused with.", ["outcome"],
)


def count_receipt(outcome: str) -> None:
    RECEIPTS.labels(outcome=outcome).inc()


def receipt_count(outcome: str) -> float:
    return float(RECEIPTS.labels(outcome=outcome)._value.get())


def metrics_app() -> Any:
    return make_asgi_app()


GATE_RECORDS = Counter(
    "accord_gate_records_total",
    "Records the gate consumed, by stream and outcome (delivered, no-subscriber, quarantined, refused-by-subscriber, "
    "withheld; the last two once per subscriber plan that refused or withheld the record).",
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


GATE_WITHHELD = Counter(
    "accord_gate_withheld_total",
    "Rows lawfully withheld from a subscriber's role under the National Data Opt-out (not quarantine: nothing was "
    "wrong with them), by subscriber, role, stream and reason (opted-out, no-nhs-number).",
    ["subscriber", "role", "stream", "reason"],
)


def count_withheld(subscriber: str, role: str, stream: str, reason: str, n: int) -> None:
    GATE_WITHHELD.labels(subscriber=subscriber, role=role, stream=stream, reason=reason).inc(n)


def withheld_count(subscriber: str, role: str, stream: str, reason: str) -> float:
    return float(GATE_WITHHELD.labels(subscriber=subscriber, role=role, stream=stream, reason=reason)._value.get())


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
DISPUTE_DEADLINE = Gauge(
    "accord_dispute_earliest_deadline_timestamp_seconds",
    "The earliest deadline (Unix time) of the disputes awaiting a decision in a ladder tier; absent when none is "
    "pending. Past it, the ladder's decisive default should already have ended the dispute.", ["tier"])
REQUEST_DECISION = Histogram(
    "accord_request_time_to_decision_seconds",
    "Time from an access request to its decision (decided by reviewers or defaulted), by outcome.",
    ["how", "outcome"], buckets=(60, 600, 3600, 2 * 3600, 7 * 3600, 24 * 3600, 96 * 3600, 5 * 86400, 20 * 86400),
)
REQUEST_FIRST_RECORD = Histogram(
    "accord_request_approval_to_first_record_seconds",
    "Time from an access request's approval to the first record the gate delivered to the requester.",
    buckets=(0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 300.0, 3600.0, 86400.0),
)


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

    def deadlines_by_tier(self, earliest: Any) -> None:
        for tier, deadline in earliest.items():
            if deadline is None:
                with contextlib.suppress(KeyError):     # no sample for this tier yet
                    DISPUTE_DEADLINE.remove(tier)
            else:
                DISPUTE_DEADLINE.labels(tier=tier).set(deadline.timestamp())

    def request_decided(self, request: Any) -> None:
        if request.decided_at is None or request.decision is None:
            return
        how = "decided" if request.decision.get("by") else "defaulted"
        REQUEST_DECISION.labels(how=how, outcome=str(request.decision.get("outcome"))).observe(
            (request.decided_at - request.made_at).total_seconds())

    def first_record(self, request: Any) -> None:
        seconds = request.approval_to_first_record_s
        if seconds is not None:
            REQUEST_FIRST_RECORD.observe(max(seconds, 0.0))


def metrics_text() -> bytes:
    return generate_latest()


SINK_RECORDS = Counter("accord_sink_records_total",
                       "Delivered records a subscriber's sink has durably stored in its target, by sink and topic.",
                       ["sink", "topic"])
SINK_REJECTED = Counter("accord_sink_rejected_total",
                        "Records a sink kept aside with their reason because the target cannot hold them.",
                        ["sink", "topic"])
SINK_ERRORS = Counter("accord_sink_errors_total",
                      "Failed stores (target or Kafka down, disk full); each is retried from the stored position.",
                      ["sink", "topic"])
SINK_LAG = Gauge("accord_sink_lag_records",
                 "Committed deliveries not yet stored by the sink, by topic and partition.",
                 ["sink", "topic", "partition"])
SINK_STORED = Gauge("accord_sink_stored_offset",
                    "The next offset the sink will store, by topic and partition.", ["sink", "topic", "partition"])


class PrometheusSinkMetrics:
    """The metrics of `accord connect run`: records stored, rejected and failed, and lag per partition."""

    def __init__(self, sink: str) -> None:
        self.sink = sink

    def stored(self, topic: str, n: int) -> None:
        SINK_RECORDS.labels(sink=self.sink, topic=topic).inc(n)

    def rejected(self, topic: str, n: int) -> None:
        SINK_REJECTED.labels(sink=self.sink, topic=topic).inc(n)

    def failed(self, topic: str) -> None:
        SINK_ERRORS.labels(sink=self.sink, topic=topic).inc()

    def position(self, topic: str, partition: int, stored: int, lag: int) -> None:
        SINK_STORED.labels(sink=self.sink, topic=topic, partition=str(partition)).set(stored)
        SINK_LAG.labels(sink=self.sink, topic=topic, partition=str(partition)).set(lag)


def serve_metrics(port: int, host: str = "127.0.0.1") -> Any:
    """`/metrics` of this process on host:port in a daemon thread; the server (call `shutdown()` to stop it)."""
    server, _thread = start_http_server(port, addr=host)
    return server


AUDIT_CHAIN_ENTRIES = Counter("accord_audit_chain_entries_total",
                              "Entries the governance service appended to the audit chain.")
AUDIT_CHAIN_STEP = Gauge("accord_audit_chain_last_step_timestamp_seconds",
                         "When the governance service last chained the audit trail without an error (Unix time); "
                         "stalled when it stops moving.")


def chained(entries: int, at: float) -> None:
    AUDIT_CHAIN_ENTRIES.inc(entries)
    AUDIT_CHAIN_STEP.set(at)


class GateLagCollector:
    """`accord_gate_lag_records{stream}`, read from Kafka when Prometheus scrapes (the gate group's committed
    offsets against the ingest topics' ends); `accord_gate_lag_readable` is 0 when Kafka could not be read."""

    def __init__(self, lag: Callable[[], Mapping[str, int]]) -> None:
        self._lag = lag

    def describe(self) -> list[Any]:
        return []       # nothing read at registration; collect() reads Kafka only when scraped

    def collect(self) -> Iterator[Any]:
        lag = GaugeMetricFamily("accord_gate_lag_records",
                                "Records published to a stream's ingest topic that no gate worker has processed.",
                                labels=["stream"])
        readable = GaugeMetricFamily("accord_gate_lag_readable",
                                     "1 when the gate group's lag could be read from Kafka at this scrape, else 0.")
        try:
            values = self._lag()
        except AccordError:
            readable.add_metric([], 0.0)
        else:
            readable.add_metric([], 1.0)
            for stream, records in sorted(values.items()):
                lag.add_metric([stream], float(records))
        yield lag
        yield readable


def register_gate_lag(lag: Callable[[], Mapping[str, int]]) -> Callable[[], None]:
    """Export the gate lag from this process; returns the call that stops exporting it."""
    collector = GateLagCollector(lag)
    REGISTRY.register(collector)
    return lambda: REGISTRY.unregister(collector)


DRILL_FLOW_RESULT = Gauge(
    "accord_drill_flow_result",
    "The last drill of each template flow: 1 for the verdict it had (pass, fail or incomplete: some checks not "
    "run), 0 for the others.", ["flow", "verdict"])
DRILL_FLOW_LAST_RUN = Gauge(
    "accord_drill_flow_last_run_timestamp_seconds", "When the last drill of each template flow finished (Unix time).",
    ["flow"])
DRILL_FLOW_CHECKS = Gauge(
    "accord_drill_flow_checks", "The checks of each flow's last drill, by verdict (pass, fail, not-run).",
    ["flow", "verdict"])


class PrometheusDrillMetrics:
    def flow_result(self, flow: str, verdict: str, at: Any, checks: Mapping[str, int]) -> None:
        for each in ("pass", "fail", "incomplete"):
            DRILL_FLOW_RESULT.labels(flow=flow, verdict=each).set(1.0 if each == verdict else 0.0)
        DRILL_FLOW_LAST_RUN.labels(flow=flow).set(at.timestamp())
        for each, count in checks.items():
            DRILL_FLOW_CHECKS.labels(flow=flow, verdict=each).set(count)


def drill_flow_result(flow: str, verdict: str) -> float:
    return float(DRILL_FLOW_RESULT.labels(flow=flow, verdict=verdict)._value.get())
