"""The drill's dispute-default check on the real Kafka, OPA, API, gate and governance service: a T1 drill with a
compressed ladder (`time_scale`) sees a dispute nobody decides end by the decisive default within the scaled bound,
at normal level (the refusal stands) and in an emergency declared in the drill body's own region (a provisional
grant, applied by the gates); and a governance service whose deadlines never fire fails the check, naming the
dispute, where it stuck and how far past its bound the drill waited."""

from __future__ import annotations

import uuid
from pathlib import Path
from typing import Any

import pytest

from broker.adapters.governance_http import GovernanceClient
from broker.clock import system_clock
from broker.config import Settings
from broker.domain.drills import drill_region
from broker.local.stack import Endpoints
from broker.runtime.drills import ControlCatalog, TokenGovernanceCalls, run_drill
from broker.services.drill_default import dispute_default
from broker.services.drill_flows import FlowDrill
from broker.services.drill_runner import Moments
from tests.integration.gate_support import start_gate
from tests.integration.test_access_requests import api_for, started
from tests.integration.test_drills import done_as_checked

# 20 days (the normal bound) become 10 s, 7 hours (the emergency bound) 0.15 s.
SCALE = 172_800.0
TICK_S = 0.5


def test_a_t1_drill_sees_the_decisive_default_stand_within_the_scaled_bound_at_normal_and_emergency_level(
        services: Endpoints, applied_catalog: dict[str, Any], tmp_path: Path) -> None:
    gate = start_gate(services, "drill-default", f"drill-default-{uuid.uuid4().hex[:6]}")
    settings = Settings(gate_group=gate.settings.gate_group)
    service = started(services, "drill-default", run=uuid.uuid4().hex[:8], tick_s=TICK_S)
    try:
        with api_for(services, service) as http:
            done = run_drill(settings, services.kafka, "", ["T1"], tmp_path, client=http, deployment="test",
                             api_url=services.api_url, registry_url=services.registry_url, time_scale=SCALE)
        check = {c.check: c for c in done.report.checks}["dispute-default"]
        assert done_as_checked(check) == "pass", check.reason
        assert "ended by the decisive default (refusal stands)" in check.reason, check.reason
        assert "(granted-for-period)" in check.reason and "applied by the gates" in check.reason, check.reason
        assert check.target is not None and check.target >= 10.0
        # Each drill dispute ran on the compressed ladder; the emergency was the drill region's alone and is lifted.
        scaled = {d.id: d for d in service.governance.disputes() if d.time_scale != 1.0}
        levels_of = sorted(d.level for d in scaled.values() if d.kind == "refusal")
        assert levels_of == ["emergency", "normal"], scaled
        assert all(d.time_scale == SCALE and d.subscriber.startswith("drill-") for d in scaled.values()), scaled
        assert all(d.state in ("enforced", "closed") for d in scaled.values() if d.kind == "refusal"), scaled
        levels = service.governance.emergency()
        assert not [scope for scope in levels if scope.startswith("drill-")], levels
        assert done.problems == ()
        assert gate.failure is None
    finally:
        service.stop()
        gate.stop()


def test_a_ladder_whose_default_never_fires_fails_the_check_naming_the_dispute_and_how_long_it_waited(
        services: Endpoints, applied_catalog: dict[str, Any], monkeypatch: pytest.MonkeyPatch) -> None:
    settings = Settings()
    service = started(services, "drill-no-default", run=uuid.uuid4().hex[:8], tick_s=TICK_S)
    # The injected fault: the service's ticker runs, but nothing it does fires a deadline.
    monkeypatch.setattr(service.governance, "tick", lambda: [])
    run = uuid.uuid4().hex[:6]
    try:
        with api_for(services, service) as http, GovernanceClient("", client=http) as client:
            api = TokenGovernanceCalls(client, settings.secrets_dir)
            drill = FlowDrill("T1", run, api, ControlCatalog(services.kafka, settings), time_scale=SCALE)
            moments = Moments(system_clock)
            try:
                assert drill.add_body(moments) is None
                outcome = dispute_default(drill, moments)
            finally:
                drill.remove_body()
        assert outcome.verdict == "fail", outcome
        stuck = [d for d in service.governance.disputes() if d.subscriber == f"drill-{run}-t1"]
        assert len(stuck) == 1 and stuck[0].state == "awaiting", stuck
        reason = outcome.reason
        assert f"dispute {stuck[0].id} (normal) is still 'awaiting' at tier 1" in reason, reason
        assert "past its scaled bound of 10 s: the decisive default never fired" in reason, reason
        assert outcome.seconds is not None and outcome.seconds > 10.0
        # It never got as far as an emergency: no level was declared in the drill body's region.
        assert drill_region(f"drill-{run}-t1") not in service.governance.emergency()
    finally:
        service.stop()


def test_flows_whose_templates_have_no_minimised_tier_see_the_refusal_stand_by_default_at_both_levels(
        services: Endpoints, applied_catalog: dict[str, Any]) -> None:
    """T2 and T4-T7 give nothing provisionally: their emergency default leaves the refusal standing, and the check
    says why (checked on the real streams' names, as a drill without drill streams does: nothing is granted)."""
    settings = Settings()
    service = started(services, "drill-default-flows", run=uuid.uuid4().hex[:8], tick_s=TICK_S)
    run = uuid.uuid4().hex[:6]
    outcomes = {}
    try:
        with api_for(services, service) as http, GovernanceClient("", client=http) as client:
            api = TokenGovernanceCalls(client, settings.secrets_dir)
            for flow in ("T2", "T4", "T5", "T6", "T7"):
                drill = FlowDrill(flow, run, api, ControlCatalog(services.kafka, settings), time_scale=SCALE)
                try:
                    assert drill.add_body(Moments(system_clock)) is None
                    outcomes[flow] = dispute_default(drill, Moments(system_clock))
                finally:
                    drill.remove_body()
        assert {flow: o.verdict for flow, o in outcomes.items()} == dict.fromkeys(outcomes, "pass"), outcomes
        assert all("has a minimised tier, so the emergency default could grant nothing and the refusal stands"
                   in o.reason for o in outcomes.values()), outcomes
        assert not [g for g in service.governance.state.grants if g.startswith("dispute-")]
        assert service.governance.emergency() == {}
    finally:
        service.stop()
