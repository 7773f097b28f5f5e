"""The break-glass check in memory: T1's drill body's DPH takes break-glass on the drill stream in an emergency
declared for the drill body's own region alone, a fake gate delivers as the control topic's grants say, the
publisher's IG lead ends the access in review; the emergency is lifted whatever happened and no real body's level
ever changes. A gate that misses the end, or never applies the grant, fails the check saying so; a template with no
tier for the ladder's break-glass role is not run. Drill regions stay out of the public figures and real bodies'
notifications."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import pytest

from broker.domain import escalation, notifications, transparency
from broker.domain.adjudication import Context
from broker.domain.drills import CheckResult, drill_region, is_drill_region
from broker.domain.governance import GovernanceState, apply, new_event
from broker.domain.ladder import Actor, Ladder
from broker.errors import DrillError, GovernanceError
from broker.services.drill_emergency import declare_drill_emergency
from broker.services.drill_flows import drills_for, tear_down
from broker.services.drill_runner import DrillRunner
from tests.unit.drill_fakes import DRILL_BODY, GrantGate, Row
from tests.unit.governance_catalog import catalog
from tests.unit.governance_fakes import FakeClock
from tests.unit.test_drill_flows import Deployment

T1_FIELDS = catalog()["streams"]["ukhsa.positive-tests"]["fields"]
DPH_TOPIC = f"deliver.{DRILL_BODY}.dph.ukhsa.drill-abc123-positive-tests"


def drilled(document: dict[str, Any], **gate: Any) -> tuple[Deployment, dict[str, CheckResult]]:
    deployment = Deployment(document)
    data = GrantGate(deployment.control, T1_FIELDS, **gate)
    drills, checks = drills_for(["T1"], "abc123", deployment, deployment, data)
    try:
        report = DrillRunner("unit", deployment.clock).run(["T1"], checks)
    finally:
        tear_down(drills)
    return deployment, {c.check: c for c in report.checks}


def declarations(deployment: Deployment) -> list[tuple[str, str]]:
    return [(e["type"], e["data"]["scope"]) for e in deployment.log.events if e["type"].startswith("emergency")]


def real_levels_never_changed(deployment: Deployment) -> None:
    """Replaying the governance log, after every event each real body of the catalog is at normal."""
    bodies = catalog()["bodies"]
    state = GovernanceState()
    for offset, event in enumerate(deployment.log.events):
        state = apply(state, offset, event)
        assert {b: state.level_for(bodies[b].get("regions", [])) for b in bodies} == dict.fromkeys(bodies, "normal")


def test_break_glass_is_taken_in_the_drill_bodys_emergency_delivered_as_granted_and_ended_in_review() -> None:
    deployment, checks = drilled(catalog())
    glass = checks["break-glass"]
    assert glass.verdict == "pass", glass.reason
    assert glass.seconds == 0.25 and glass.target == 1.0
    assert glass.reason.startswith(f"emergency declared for {DRILL_BODY} alone; break-glass break-glass-d-")
    assert "applied by the gates 0.250 s after it was written" in glass.reason
    assert f"3 records published after it delivered to {DPH_TOPIC} with exactly what the grant gives" in glass.reason
    assert f"({', '.join(sorted(T1_FIELDS))})" in glass.reason       # the DPH tier: every field, as it is
    assert "decided by ukhsa" in glass.reason and "none of 3 records published after the end delivered" in glass.reason
    [review] = [d for d in deployment.governance.disputes() if d.kind == "break-glass-review"]
    assert (review.challenger.body, review.challenger.role, review.state) == (DRILL_BODY, "dph", "enforced")
    assert review.decision is not None and review.decision["outcome"] == "refused"
    assert not [g for g in deployment.governance.state.grants if g.startswith("break-glass-")]
    # Declared for the drill body's region alone and lifted; no real body was ever at another level than normal.
    assert declarations(deployment) == [("emergency-declared", DRILL_BODY), ("emergency-lifted", DRILL_BODY)]
    assert deployment.governance.emergency() == {}
    real_levels_never_changed(deployment)
    [declarer] = {e["actor"]["body"] for e in deployment.log.events if e["type"].startswith("emergency")}
    assert declarer in {d["body"] for d in catalog()["emergency_declarers"]}


def test_a_gate_that_misses_the_end_of_break_glass_fails_the_check_and_the_emergency_is_lifted_all_the_same() -> None:
    deployment, checks = drilled(catalog(), keeps_ended=True)
    glass = checks["break-glass"]
    assert glass.verdict == "fail"
    assert glass.reason.endswith(f"ended in review: 3 of 3 records published after the end was applied were "
                                 f"delivered to {DPH_TOPIC}"), glass.reason
    assert declarations(deployment) == [("emergency-declared", DRILL_BODY), ("emergency-lifted", DRILL_BODY)]


def test_a_gate_that_never_applies_the_grant_fails_the_check_saying_which_control_record() -> None:
    deployment, checks = drilled(catalog(), delay_ms=None)
    glass = checks["break-glass"]
    assert glass.verdict == "fail" and "no gate worker reported applying control offset" in glass.reason
    assert "(break-glass break-glass-d-" in glass.reason
    assert deployment.governance.emergency() == {}
    ended_anyway(deployment)


class Oversharing(GrantGate):
    """A gate that hands the DPH's topic a field the stream has not got (as one applying another plan would)."""

    def publish(self, stream: str, publisher: Actor, records: Sequence[Row]) -> list[dict[str, Any]]:
        outcomes = super().publish(stream, publisher, records)
        for row, _ in self.topics.get(DPH_TOPIC, []):
            row["contacts"] = "someone else's"
        return outcomes


def test_a_gate_that_delivers_more_than_break_glass_gives_fails_the_check_naming_the_field() -> None:
    deployment = Deployment(catalog())
    drills, checks = drills_for(["T1"], "abc123", deployment, deployment, Oversharing(deployment.control, T1_FIELDS))
    try:
        report = DrillRunner("unit", deployment.clock).run(["T1"], checks)
    finally:
        tear_down(drills)
    [glass] = [c for c in report.checks if c.check == "break-glass"]
    assert glass.verdict == "fail" and f"on {DPH_TOPIC}: fields the plan does not give: contacts" in glass.reason
    assert deployment.governance.emergency() == {}
    ended_anyway(deployment)


def ended_anyway(deployment: Deployment) -> None:
    """The access a failed check took was ended in review all the same."""
    [review] = [d for d in deployment.governance.disputes() if d.kind == "break-glass-review"]
    assert review.decision is not None and review.decision["outcome"] == "refused"
    assert not [g for g in deployment.governance.state.grants if g.startswith("break-glass-")]


def test_a_template_with_no_tier_for_the_break_glass_role_is_not_run_and_no_emergency_is_declared() -> None:
    document = catalog()
    document["ladder"]["break_glass"]["roles"] = ["benefits"]
    deployment, checks = drilled(document)
    glass = checks["break-glass"]
    assert glass.verdict == "not-run"
    assert glass.reason.startswith("template t1-positive-tests has no tier for the ladder's break-glass role "
                                   "(benefits)"), glass.reason
    assert declarations(deployment) == []


def test_a_drill_declares_only_for_a_drill_region() -> None:
    calls: list[Mapping[str, Any] | None] = []

    class Api:
        def call(self, method: str, path: str, actor: Actor, body: Mapping[str, Any] | None = None
                 ) -> dict[str, Any]:
            calls.append(body)
            return {"level": "emergency"}

    for scope in ("national", "E12000004", "leicester-city-council"):
        with pytest.raises(DrillError, match="only for a drill body's own region"):
            declare_drill_emergency(Api(), catalog(), scope, "emergency", "drill")
    assert calls == []
    with pytest.raises(DrillError, match="no emergency declarer"):
        declare_drill_emergency(Api(), {**catalog(), "emergency_declarers": []}, DRILL_BODY, "emergency", "drill")
    declared = declare_drill_emergency(Api(), catalog(), DRILL_BODY, "emergency", "drill")
    assert (declared.scope, declared.declarer.body) == (DRILL_BODY, "accord-arbiter")
    with pytest.raises(DrillError):
        drill_region("leicester-city-council")


def _context(document: dict[str, Any], state: GovernanceState | None = None) -> Context:
    return Context(state or GovernanceState(), document, Ladder.from_catalog(document), FakeClock()())


def test_a_drill_region_may_be_declared_and_tells_only_its_drill_body_and_stays_out_of_the_figures() -> None:
    document = catalog()
    document["bodies"][DRILL_BODY] = {**document["bodies"]["leicester-city-council"], "regions": [DRILL_BODY]}
    arbiter = Actor("accord-arbiter", "arbiter", "arbiter")
    assert is_drill_region(DRILL_BODY) and not is_drill_region("E12000004")
    [declared] = escalation.declare(_context(document), arbiter, DRILL_BODY, "emergency", "drill")
    with pytest.raises(GovernanceError, match="neither 'national' nor an E12 region"):
        escalation.declare(_context(document), arbiter, "leicester", "emergency", "drill")
    state = apply(GovernanceState(), 0, declared)
    assert notifications.recipients(state, declared, document) == {DRILL_BODY}
    real = escalation.declare(_context(document), arbiter, "E12000004", "emergency", "real")[0]
    assert notifications.recipients(apply(state, 1, real), real, document) == set(document["bodies"])
    glass = [new_event("break-glass", None, FakeClock()(), Actor(body, "dph", "dph"), {"grant": {}})
             for body in (DRILL_BODY, "leicester-city-council")]
    figures = transparency.figures([declared, real, *glass])
    assert (figures.emergency_declarations, figures.emergency_declarations_by_level) == (1, {"emergency": 1})
    assert figures.break_glass_uses == 1        # Leicester's; the drill body's is a drill's
    assert state.level_for(document["bodies"]["leicester-city-council"]["regions"]) == "normal"
