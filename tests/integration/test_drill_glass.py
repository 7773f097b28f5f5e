"""Break-glass in a T1 drill on the real Kafka, OPA, API, gate and governance service: an emergency declared for the
drill body's own region (through the governance API, the real OPA deciding), the drill body's DPH taking break-glass
on the drill stream, the gate applying the grant and delivering a record published after it with what the grant
gives, the publisher's IG lead ending the access in review and the gate applying the end; the emergency lifted, and
no real body's level changed on the control topic the gates read, at any point."""

from __future__ import annotations

import json
import uuid
from pathlib import Path
from typing import Any

from broker.adapters.kafka_control import ControlReader, control_end
from broker.config import Settings
from broker.domain.control import EMERGENCY_PREFIX
from broker.domain.drills import is_drill_region
from broker.local.stack import Endpoints
from broker.runtime.drills import run_drill
from tests.integration.gate_support import start_gate
from tests.integration.test_access_requests import api_for, started
from tests.integration.test_drills import done_as_checked


def test_a_t1_drill_takes_break_glass_in_its_own_emergency_and_ends_it_in_review(
        services: Endpoints, applied_catalog: dict[str, Any], tmp_path: Path) -> None:
    gate = start_gate(services, "drill-glass", f"drill-glass-{uuid.uuid4().hex[:6]}")
    settings = Settings(gate_group=gate.settings.gate_group)
    service = started(services, "drill-glass", run=uuid.uuid4().hex[:8])
    real = {ident: body.get("regions") or [] for ident, body in applied_catalog["bodies"].items()}
    levels_before = {ident: service.governance.state.level_for(regions) for ident, regions in real.items()}
    mark = control_end(services.kafka)
    try:
        with api_for(services, service) as http:
            done = run_drill(settings, services.kafka, "", ["T1"], tmp_path, client=http, deployment="test",
                             api_url=services.api_url, registry_url=services.registry_url)
        checks = {c.check: c for c in done.report.checks}
        glass = checks["break-glass"]
        assert done_as_checked(glass) == "pass", glass.reason
        print(json.dumps({"T1": {"break_glass_enforced_s": glass.seconds, "reason": glass.reason}}))
        drill_body = next(m.what.split()[2] for m in done.report.timeline if m.what.startswith("drill body "))
        assert f"emergency declared for {drill_body} alone" in glass.reason
        assert f"records published after it delivered to deliver.{drill_body}.dph." in glass.reason, glass.reason
        assert "none of 3 records published after the end delivered" in glass.reason, glass.reason
        moments = [m.what for m in done.report.timeline if m.flow == "T1"]
        assert f"emergency for {drill_body} lifted" in moments
        [review] = [d for d in service.governance.disputes() if d.kind == "break-glass-review"]
        assert (review.challenger.body, review.decision and review.decision["outcome"]) == (drill_body, "refused")
        assert not [g for g in service.governance.state.grants if g.startswith("break-glass-")]
        assert done.problems == ()
        after = {ident: service.governance.state.level_for(regions) for ident, regions in real.items()}
        assert after == levels_before and service.governance.emergency() == {}
    finally:
        service.stop()
        gate.stop()
    assert gate.failure is None
    # The levels the gates read: only the drill body's region was ever declared, and it is lifted; no real body is
    # in it, and every real body is at the level it was at before.
    reader = ControlReader(services.kafka, client_id="test-drill-glass", start=mark)
    try:
        written = [r for r in reader.read_to(reader.end_offset()) if r.key.startswith(EMERGENCY_PREFIX)]
    finally:
        reader.close()
    scopes = {r.key[len(EMERGENCY_PREFIX):] for r in written}
    assert scopes == {drill_body}, scopes
    assert all(is_drill_region(s) and s not in regions for s in scopes for regions in real.values())
    assert [r.payload is None for r in written] == [False, True]      # declared, then lifted


def test_break_glass_on_a_flow_whose_drill_grant_had_the_same_role_one_without_records_and_one_without_a_tier(
        services: Endpoints, applied_catalog: dict[str, Any], tmp_path: Path) -> None:
    """T6's drill grant was its DPH's too (its one tier is for DPHs): break-glass delivers again on the topic the
    withdrawn grant used, and only what was published after it counts. T5's rows are routed through the
    trust-to-area lookup, so its records are checked too. T7's template has no tier for the break-glass role."""
    gate = start_gate(services, "drill-glass-more", f"drill-glass-more-{uuid.uuid4().hex[:6]}")
    settings = Settings(gate_group=gate.settings.gate_group)
    service = started(services, "drill-glass-more", run=uuid.uuid4().hex[:8])
    try:
        with api_for(services, service) as http:
            done = run_drill(settings, services.kafka, "", ["T5", "T6", "T7"], tmp_path, client=http,
                             deployment="test", api_url=services.api_url, registry_url=services.registry_url)
        checks = {(c.flow, c.check): c for c in done.report.checks}
        flows = ("T5", "T6", "T7")
        assert {flow: done_as_checked(checks[(flow, "break-glass")]) for flow in flows} == {
            "T5": "pass", "T6": "pass", "T7": "not-run"}, [checks[(f, "break-glass")].reason for f in flows]
        assert done_as_checked(checks[("T6", "revocation")]) == "pass", checks[("T6", "revocation")].reason
        [request] = [r for r in service.governance.requests() if r.stream.startswith("nis.drill-")
                     and not r.body.endswith(("-county", "-district"))]   # not the two-tier views' bodies
        t6 = checks[("T6", "break-glass")].reason
        assert request.role == "dph" and f"3 records published after it delivered to deliver.{request.body}.dph." in t6
        assert "records not checked" not in checks[("T5", "break-glass")].reason
        assert "no tier for the ladder's break-glass role (dph)" in checks[("T7", "break-glass")].reason
        assert service.governance.emergency() == {}
        assert done.problems == ()
    finally:
        service.stop()
        gate.stop()
    assert gate.failure is None
