"""The supervisor's loop over a fake stack on a fake clock: what it restarts, when, what it leaves alone, and what
it reports for `accord local status`."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from broker.domain.restart_policy import Backoff
from broker.errors import ServiceStartError
from broker.local.supervisor import Supervisor
from broker.local.supervisor_files import SupervisorLayout, supervisor_layout


@dataclass
class FakeStack:
    supervisor: SupervisorLayout
    alive: dict[str, bool] = field(default_factory=lambda: {"kafka": True, "opa": True, "api": True, "gate": True})
    pids: dict[str, int] = field(default_factory=lambda: {"kafka": 10, "opa": 11, "api": 12, "gate": 13})
    failing: dict[str, int] = field(default_factory=dict)  # starts that fail before one succeeds, by service
    started: list[str] = field(default_factory=list)

    def managed(self) -> list[str]:
        return list(self.alive)

    def pid(self, name: str) -> int | None:
        return self.pids[name]

    def running(self, name: str) -> bool:
        return self.alive[name]

    def restart(self, name: str) -> str:
        self.started.append(name)
        if self.failing.get(name, 0) > 0:
            self.failing[name] -= 1
            raise ServiceStartError(f"accord {name} did not answer within 90s", "a log line")
        self.alive[name], self.pids[name] = True, self.pids[name] + 100
        return f"http://127.0.0.1:1{self.pids[name]}"


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def _supervisor(tmp_path: Path) -> tuple[Supervisor, FakeStack, FakeClock, list[str]]:
    stack, clock, said = FakeStack(supervisor_layout(tmp_path)), FakeClock(), list[str]()
    policy = Backoff(first_s=1, factor=2, cap_s=8, healthy_s=30)
    return Supervisor(stack, policy, said.append, clock), stack, clock, said


def test_a_dead_service_is_started_again_at_once_and_reported(tmp_path: Path) -> None:
    supervisor, stack, _, said = _supervisor(tmp_path)
    supervisor.tick()
    assert stack.started == []
    stack.alive["gate"] = False
    supervisor.tick()
    assert stack.started == ["gate"]
    assert said[0] == "gate: pid 13 gone; starting it again (restart 1)"
    assert said[1].startswith("gate: up again at http://127.0.0.1:1113 after")
    state = stack.supervisor.read_state()
    assert state is not None
    assert state["services"]["gate"]["restarts"] == 1 and state["services"]["gate"]["last_reason"] == "pid 13 gone"
    assert state["services"]["kafka"]["restarts"] == 0


def test_a_service_that_fails_to_start_is_tried_again_after_longer_waits(tmp_path: Path) -> None:
    supervisor, stack, clock, said = _supervisor(tmp_path)
    stack.alive["api"], stack.failing["api"] = False, 2
    supervisor.tick()                       # at once: fails
    assert stack.started == ["api"]
    assert "api: start failed (accord api did not answer within 90s" in said[1] and said[1].endswith("in 1 s")
    clock.now += 0.5
    supervisor.tick()                       # within the wait: not tried
    assert stack.started == ["api"]
    clock.now += 0.5
    supervisor.tick()                       # after 1 s: fails again, next after 2 s
    assert stack.started == ["api", "api"]
    clock.now += 1.9
    supervisor.tick()
    assert stack.started == ["api", "api"]
    clock.now += 0.1
    supervisor.tick()                       # after 2 s: up
    assert stack.started == ["api", "api", "api"] and stack.alive["api"]
    state = stack.supervisor.read_state()
    assert state is not None and state["services"]["api"]["restarts"] == 1
    assert state["services"]["api"]["last_reason"].startswith("start failed: accord api did not answer")


def test_a_held_service_is_left_alone_until_the_hold_ends(tmp_path: Path) -> None:
    supervisor, stack, _, _ = _supervisor(tmp_path)
    stack.supervisor.hold("opa", 600)
    stack.alive["opa"] = False
    for _ in range(3):
        supervisor.tick()
    assert stack.started == []
    stack.supervisor.hold("opa", 0)         # lifted
    assert stack.supervisor.held() == set()
    supervisor.tick()
    assert stack.started == ["opa"]


def test_a_hold_made_while_a_tick_runs_is_found_when_the_service_it_covers_is_found_dead(tmp_path: Path) -> None:
    """`accord local hold opa` then a kill, both while the supervisor is checking the services before OPA (Kafka's
    check can take a while): the tick must not start OPA again."""
    supervisor, stack, _, _ = _supervisor(tmp_path)
    checking = stack.running

    def running(name: str) -> bool:
        if name == "kafka":     # checked before OPA in the same tick
            stack.supervisor.hold("opa", 600)
            stack.alive["opa"] = False
        return checking(name)
    stack.running = running  # type: ignore[method-assign]
    supervisor.tick()
    assert stack.started == []


def test_a_service_up_again_by_other_means_is_not_started_twice(tmp_path: Path) -> None:
    supervisor, stack, clock, _ = _supervisor(tmp_path)
    stack.alive["kafka"], stack.failing["kafka"] = False, 1
    supervisor.tick()                       # fails; next try in 1 s
    stack.alive["kafka"] = True             # `accord local up` started it meanwhile
    clock.now += 5
    supervisor.tick()
    assert stack.started == ["kafka"]
