"""The dispute-default check against a real Governance on in-memory topics and a fake clock: the drill's undecided
disputes end by the decisive default at the scaled bound (normal: the refusal stands; emergency, declared in the
drill body's own region and lifted after: a provisional grant written to the control topic); a service whose
deadlines never fire fails it, naming the dispute; a time scale too small to wait out says which would do."""

from __future__ import annotations

import datetime as dt

import pytest

from broker.adapters.governance_http import GovernanceApiError
from broker.domain.drills import drill_region
from broker.domain.ladder import Actor
from broker.services.drill_default import dispute_default
from broker.services.drill_flows import FlowDrill, drills_for
from broker.services.drill_runner import Moments, Outcome
from tests.unit.governance_catalog import catalog
from tests.unit.test_drill_flows import Deployment

SCALE = 172_800.0       # the normal bound, 20 days, becomes 10 s


def switched_on(deployment: Deployment, time_scale: float) -> tuple[FlowDrill, Moments]:
    [drill], _ = drills_for(["T1"], "abc123", deployment, deployment, time_scale=time_scale)
    drill.monotonic = lambda: (deployment.clock() - dt.datetime(2020, 1, 1, tzinfo=dt.UTC)).total_seconds()
    moments = Moments(deployment.clock)
    assert drill.switch_on(moments).verdict == "pass"
    return drill, moments


def run(deployment: Deployment, drill: FlowDrill, moments: Moments, ticking: bool) -> Outcome:
    """The check, each of its waits moving the fake clock on and (unless the fault is injected) ticking."""
    def sleep(seconds: float) -> None:
        deployment.clock.advance(dt.timedelta(seconds=seconds))
        if ticking:
            deployment.governance.tick()
    return dispute_default(drill, moments, sleep)


def test_undecided_drill_disputes_end_by_the_ladders_default_at_the_scaled_bound_at_both_levels() -> None:
    deployment = Deployment(catalog())
    drill, moments = switched_on(deployment, SCALE)
    outcome = run(deployment, drill, moments, ticking=True)
    assert outcome.verdict == "pass", outcome.reason
    assert "(normal, nobody deciding) ended by the decisive default (refusal stands)" in outcome.reason
    assert "(emergency in the drill body's region) ended by the decisive default (granted-for-period)" in \
        outcome.reason
    assert "provisional grant dispute-d-" in outcome.reason
    assert outcome.target == 10.0 + 5.0 and outcome.seconds is not None and 10.0 <= outcome.seconds <= 15.0
    normal, emergency = [d for d in deployment.governance.disputes() if d.kind == "refusal"
                         and d.time_scale == SCALE]
    assert (normal.level, normal.decision and normal.decision["outcome"]) == ("normal", "refused")
    assert (emergency.level, emergency.decision and emergency.decision["outcome"]) == ("emergency",
                                                                                       "granted-for-period")
    assert f"dispute-{emergency.id}" in deployment.governance.state.grants
    assert deployment.governance.emergency() == {}      # declared in the drill region only, and lifted
    declared = [m.what for m in moments.noted if m.what.startswith("emergency")]
    assert declared == [f"emergency declared in drill body {drill.body}'s own region by accord-arbiter",
                        f"emergency lifted in drill body {drill.body}'s own region"]
    assert drill_region(drill.body) in (deployment.current() or {})["bodies"][drill.body]["regions"]


def test_a_service_whose_deadlines_never_fire_fails_the_check_naming_the_dispute_and_its_wait() -> None:
    deployment = Deployment(catalog())
    drill, moments = switched_on(deployment, SCALE)
    outcome = run(deployment, drill, moments, ticking=False)
    assert outcome.verdict == "fail"
    [stuck] = [d for d in deployment.governance.disputes() if d.time_scale == SCALE]
    assert f"dispute {stuck.id} (normal) is still 'awaiting' at tier 1" in outcome.reason, outcome.reason
    assert "s past its scaled bound of 10 s: the decisive default never fired" in outcome.reason
    assert deployment.governance.emergency() == {}      # it stopped before declaring anything


def test_a_time_scale_leaving_the_bound_too_long_to_wait_says_which_would_do() -> None:
    deployment = Deployment(catalog())
    drill, moments = switched_on(deployment, 1.0)
    outcome = dispute_default(drill, moments)
    assert outcome.verdict == "not-run"
    assert "normal bound is 20 days" in outcome.reason and "--time-scale 14400 or more" in outcome.reason
    assert [d for d in deployment.governance.disputes() if d.kind == "refusal"] == []


def test_the_api_refuses_a_time_scale_for_a_real_body_and_one_below_one_and_shows_it_on_a_drill_dispute() -> None:
    deployment = Deployment(catalog())
    drill, _ = switched_on(deployment, SCALE)
    form = {"kind": "refusal", "stream": "ukhsa.positive-tests", "role": "dph", "purpose": "health-protection",
            "fields": ["lsoa"], "justification": "Cases are rising."}
    real = Actor("leicester-city-council", "dph", "dph@leicester")
    with pytest.raises(GovernanceApiError) as refused:
        deployment.call("POST", "/disputes", real, {**form, "time_scale": 2})
    assert refused.value.status == 403 and "drills only" in str(refused.value)
    with pytest.raises(GovernanceApiError) as invalid:
        deployment.call("POST", "/disputes", drill.actor("dph"), {**form, "time_scale": 0.5})
    assert invalid.value.status in (400, 422) and "time_scale" in str(invalid.value)
    shown = deployment.call("POST", "/disputes", drill.actor("dph"), {**form, "time_scale": SCALE})
    assert shown["time_scale"] == SCALE and shown["subscriber"] == drill.body
    assert deployment.call("POST", "/disputes", real, form)["time_scale"] == 1.0
