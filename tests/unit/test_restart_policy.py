"""The supervisor's restart schedule on a fake clock: at once, then doubling waits to a cap, forgiven after a
healthy period."""

from __future__ import annotations

import pytest

from broker.domain.restart_policy import Backoff, RestartTracker


def test_the_schedule_doubles_from_the_second_restart_up_to_the_cap() -> None:
    policy = Backoff(first_s=1.0, factor=2.0, cap_s=30.0)
    assert [policy.delay(n) for n in range(1, 9)] == [0.0, 1.0, 2.0, 4.0, 8.0, 16.0, 30.0, 30.0]
    assert policy.delay(10_000) == 30.0  # no overflow for a service that never starts


@pytest.mark.parametrize("bad", [{"first_s": 0}, {"factor": 0.5}, {"cap_s": 0.5}, {"healthy_s": 0}])
def test_a_schedule_that_makes_no_sense_is_refused(bad: dict[str, float]) -> None:
    with pytest.raises(ValueError, match="backoff needs"):
        Backoff(**bad)


def test_a_crash_loop_waits_longer_each_time_and_a_healthy_period_resets_it() -> None:
    tracker = RestartTracker(Backoff(first_s=1.0, factor=2.0, cap_s=4.0, healthy_s=10.0))
    clock = 100.0
    assert tracker.observe(clock, alive=True) is False
    # first crash: restarted at once
    assert tracker.observe(clock, alive=False, why_down="pid 7 killed by SIGKILL") is True
    assert tracker.last_reason == "pid 7 killed by SIGKILL"
    tracker.started(clock)
    # crashes again 3 s later (not yet healthy): 1 s wait
    clock += 3
    assert tracker.observe(clock, alive=False, why_down="gone") is False
    assert tracker.wait_s(clock) == 1.0
    clock += 0.5
    assert tracker.observe(clock, alive=False) is False
    clock += 0.5
    assert tracker.observe(clock, alive=False) is True
    # the start fails twice: 2 s, then the cap of 4 s
    tracker.failed(clock, "did not answer")
    assert tracker.wait_s(clock) == 2.0 and tracker.last_reason == "did not answer"
    clock += 2
    assert tracker.observe(clock, alive=False) is True
    tracker.failed(clock, "did not answer")
    assert tracker.wait_s(clock) == 4.0
    clock += 4
    assert tracker.observe(clock, alive=False) is True
    tracker.started(clock)
    assert tracker.restarts == 2 and tracker.failures == 4
    # up for less than the healthy period: a crash still waits the cap
    clock += 9
    assert tracker.observe(clock, alive=True) is False
    assert tracker.observe(clock, alive=False) is False
    assert tracker.wait_s(clock) == 4.0
    clock += 4
    assert tracker.observe(clock, alive=False) is True
    tracker.started(clock)
    # up for the healthy period: forgiven, the next crash is restarted at once
    clock += 10
    assert tracker.observe(clock, alive=True) is False
    assert tracker.failures == 0
    assert tracker.observe(clock + 1, alive=False, why_down="gone") is True
    assert tracker.restarts == 3


def test_a_service_seen_up_is_never_due() -> None:
    tracker = RestartTracker(Backoff())
    assert not any(tracker.observe(float(t), alive=True) for t in range(100))
    assert tracker.wait_s(100.0) is None and tracker.failures == 0
