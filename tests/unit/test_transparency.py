"""The transparency figures of a handful of governance events (broker/domain/transparency.py)."""

from __future__ import annotations

from typing import Any

from broker.domain.transparency import figures, nearest_rank


def event(type_: str, at: str, dispute: str | None = None, **data: Any) -> dict[str, Any]:
    return {"type": type_, "at": at, "dispute": dispute, "actor": None, "data": data}


def test_an_appeal_is_a_new_question_and_its_decision_is_timed_from_the_appeal() -> None:
    found = figures([
        event("raised", "2026-01-01T00:00:00Z", "d-1", kind="refusal"),
        event("tier-opened", "2026-01-01T00:00:00Z", "d-1"),
        event("decided", "2026-01-01T02:00:00Z", "d-1", outcome="refused"),
        event("appealed", "2026-01-02T00:00:00Z", "d-1"),
        event("defaulted", "2026-01-02T10:00:00Z", "d-1", outcome="granted-for-period"),
        event("raised", "2026-01-03T00:00:00Z", "d-2", kind="grant-contested"),
        event("break-glass", "2026-01-03T01:00:00Z", None),
        event("emergency-declared", "2026-01-03T02:00:00Z", None, scope="national", level="emergency"),
        event("emergency-lifted", "2026-01-03T03:00:00Z", None, scope="national"),
        event("webhook-queued", "2026-01-03T04:00:00Z", None, delivery="x", body="b", notification={}),
    ])
    assert found.disputes_raised == 2
    assert found.disputes_by_kind == {"refusal": 1, "grant-contested": 1}
    assert found.disputes_by_outcome == {"granted-for-period": 1, "open": 1}
    assert found.decisions == 2 and found.decisions_by_default == 1 and found.appeals == 1
    assert found.decisions_by_outcome == {"refused": 1, "granted-for-period": 1}
    assert (found.median_decision_s, found.p90_decision_s) == (7200.0, 36000.0)
    assert found.emergency_declarations_by_level == {"emergency": 1} and found.emergency_lifts == 1
    assert found.break_glass_uses == 1 and found.as_of == "2026-01-03T04:00:00Z"


def test_no_events_publish_zeros_and_no_times() -> None:
    found = figures([])
    assert found.to_json()["decisions"] == {"total": 0, "by_outcome": {}, "by_decisive_default": 0,
                                            "median_time_to_decision_s": None, "p90_time_to_decision_s": None}
    assert ("decisions", "median time to decision (s)", "") in found.rows()


def test_percentiles_are_nearest_rank_so_each_is_a_measured_value() -> None:
    values = [float(v) for v in range(1, 11)]
    assert nearest_rank(values, 90) == 9.0 and nearest_rank(values, 50) == 5.0
    assert nearest_rank([4.0], 90) == 4.0 and nearest_rank([], 50) is None


def test_a_drill_bodys_disputes_stay_out_of_the_public_figures() -> None:
    found = figures([
        event("raised", "2026-01-01T00:00:00Z", "d-1", kind="refusal", subscriber="leicester-city-council"),
        event("raised", "2026-01-01T01:00:00Z", "d-2", kind="refusal", subscriber="drill-abc123-t1"),
        event("decided", "2026-01-01T01:00:01Z", "d-2", outcome="refused"),
        event("raised", "2026-01-01T01:00:02Z", "d-3", kind="grant-contested", subscriber="drill-abc123-t1"),
        event("decided", "2026-01-01T01:00:03Z", "d-3", outcome="granted"),
    ])
    assert (found.disputes_raised, found.decisions, found.disputes_by_outcome) == (1, 0, {"open": 1})
    assert found.as_of == "2026-01-01T00:00:00Z"
