"""The Grafana dashboard and the alert rules speak only of metrics Accord's processes export, and cover what an
operator must see; the exporters behind the new series (gate lag, dispute deadlines, audit chain) behave."""

from __future__ import annotations

import datetime as dt
import json
import re
from pathlib import Path
from typing import Any

import pytest
import yaml
from prometheus_client import REGISTRY

from broker.adapters import metrics
from broker.errors import ServiceError

DEPLOY = Path(__file__).resolve().parents[2] / "deploy"
DASHBOARD = DEPLOY / "grafana" / "accord.json"
ALERTS = DEPLOY / "prometheus" / "alerts.yml"
METRIC = re.compile(r"\baccord_[a-z_]+\b")


def _dashboard() -> dict[str, Any]:
    found: dict[str, Any] = json.loads(DASHBOARD.read_text())
    return found


def _dashboard_exprs() -> list[str]:
    return [target["expr"] for panel in _dashboard()["panels"] for target in panel.get("targets", ())]


def _alerts() -> dict[str, str]:
    rules = yaml.safe_load(ALERTS.read_text())
    return {rule["alert"]: rule["expr"] for group in rules["groups"] for rule in group["rules"]}


def _exported() -> set[str]:
    """Every series name this code base can export: the registered collectors' and the gate lag collector's."""
    names = set(REGISTRY._names_to_collectors)
    families = metrics.GateLagCollector(lambda: {"s": 1}).collect()
    return names | {family.name for family in families}


def test_the_dashboard_and_the_alerts_name_only_exported_series() -> None:
    exported = _exported()
    used = {name for expr in [*_dashboard_exprs(), *_alerts().values()] for name in METRIC.findall(expr)}
    assert used, "no Accord series found in the dashboard or the alerts"
    assert used - exported == set()


@pytest.mark.parametrize("family", [
    "accord_ingest_records_total", "accord_gate_records_total", "accord_gate_lag_records",
    "accord_gate_enforcement_seconds_bucket", "accord_dispute_earliest_deadline_timestamp_seconds",
    "accord_disputes_open", "accord_audit_chain_last_step_timestamp_seconds", "accord_sink_lag_records"])
def test_the_dashboard_shows_what_the_issue_asks_for(family: str) -> None:
    assert any(family in expr for expr in _dashboard_exprs())


def test_the_dashboard_panels_have_unique_ids_and_a_prometheus_datasource() -> None:
    panels = _dashboard()["panels"]
    ids = [panel["id"] for panel in panels]
    assert len(ids) == len(set(ids))
    for panel in panels:
        if panel["type"] != "row":
            assert panel["datasource"] == {"type": "prometheus", "uid": "${datasource}"}, panel["title"]
            assert panel["targets"], panel["title"]


def test_every_alert_the_issue_asks_for_is_there() -> None:
    assert {"AccordGateLag", "AccordEnforcementSlow", "AccordDisputePastBound", "AccordAuditChainStalled",
            "AccordOpaUnreachable"} <= set(_alerts())


def _samples(collector: metrics.GateLagCollector) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    return {(s.name, tuple(sorted(s.labels.items()))): s.value for family in collector.collect()
            for s in family.samples}


def test_gate_lag_is_read_at_each_scrape() -> None:
    reads = iter([{"positive-tests": 7, "admissions": 0}, {"positive-tests": 2}])
    collector = metrics.GateLagCollector(lambda: next(reads))
    assert _samples(collector) == {
        ("accord_gate_lag_records", (("stream", "admissions"),)): 0.0,
        ("accord_gate_lag_records", (("stream", "positive-tests"),)): 7.0,
        ("accord_gate_lag_readable", ()): 1.0}
    assert _samples(collector)[("accord_gate_lag_records", (("stream", "positive-tests"),))] == 2.0


def test_unreadable_gate_lag_is_a_zero_not_a_failed_scrape() -> None:
    def broken() -> dict[str, int]:
        raise ServiceError("the gate group's positions could not be read: no brokers")

    assert _samples(metrics.GateLagCollector(broken)) == {("accord_gate_lag_readable", ()): 0.0}


def test_registering_the_gate_lag_can_be_undone() -> None:
    stop = metrics.register_gate_lag(lambda: {"positive-tests": 3})
    try:
        assert REGISTRY.get_sample_value("accord_gate_lag_records", {"stream": "positive-tests"}) == 3.0
    finally:
        stop()
    assert REGISTRY.get_sample_value("accord_gate_lag_records", {"stream": "positive-tests"}) is None


def test_dispute_deadlines_are_exported_by_tier_and_dropped_when_none_is_pending() -> None:
    governance = metrics.PrometheusGovernanceMetrics()
    deadline = dt.datetime(2026, 3, 1, 12, 0, tzinfo=dt.UTC)
    governance.deadlines_by_tier({"tier-1": deadline, "tier-2": None})
    sample = "accord_dispute_earliest_deadline_timestamp_seconds"
    assert REGISTRY.get_sample_value(sample, {"tier": "tier-1"}) == deadline.timestamp()
    assert REGISTRY.get_sample_value(sample, {"tier": "tier-2"}) is None
    governance.deadlines_by_tier({"tier-1": None, "tier-2": None})
    assert REGISTRY.get_sample_value(sample, {"tier": "tier-1"}) is None


def test_chaining_the_audit_trail_moves_its_progress() -> None:
    before = REGISTRY.get_sample_value("accord_audit_chain_entries_total") or 0.0
    metrics.chained(3, 1_700_000_000.0)
    assert REGISTRY.get_sample_value("accord_audit_chain_entries_total") == before + 3
    assert REGISTRY.get_sample_value("accord_audit_chain_last_step_timestamp_seconds") == 1_700_000_000.0
