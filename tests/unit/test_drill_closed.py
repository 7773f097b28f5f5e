"""The fail-closed check in memory: a fake deployment whose gate holds what is published while OPA is stopped or
the gate worker is dead, and delivers it once either is back. A gate that delivers with OPA down, one that loses or
repeats records across a restart, and a gate worker that does not come back each fail the check saying what went
wrong; without process control the check is not run; OPA is started again whatever happens."""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest

from broker.config import Settings
from broker.domain.ladder import Actor
from broker.errors import ServiceError, ServiceStartError
from broker.local.stack import LocalStack
from broker.services.drill_closed import NOT_LOCAL, OBSERVE_S, Control
from broker.services.drill_flows import drills_for, tear_down
from broker.services.drill_runner import DrillRunner
from tests.unit.drill_fakes import FakeData, Row, analyst_view
from tests.unit.governance_catalog import catalog
from tests.unit.test_drill_flows import Deployment

LEICESTER = "E06000016"


def leicester_only(record: Row) -> Row | None:
    return analyst_view(record) if record["ltla"] == LEICESTER else None


class Outages(FakeData):
    """A deployment whose gate holds records while OPA is stopped or its worker is dead. Faults: `leaky` delivers
    with OPA stopped; on a restart `repeats` delivers what it held twice, `loses` drops it."""

    def __init__(self, leaky: bool = False, repeats: bool = False, loses: bool = False,
                 comes_back: bool = True) -> None:
        super().__init__(leicester_only)
        self.leaky, self.repeats, self.loses, self.comes_back = leaky, repeats, loses, comes_back
        self.opa_up, self.gate_up = True, True
        self.held: list[tuple[str, Row, bytes]] = []
        self.api_refused = 0
        self.events: list[str] = []

    def publish(self, stream: str, publisher: Actor, records: Sequence[Row]) -> list[dict[str, Any]]:
        if not self.opa_up:     # the ingest API's authorisation is OPA's: it fails closed
            self.api_refused += 1
            raise ServiceError("Accord's API refused to publish (503): the policy engine did not answer")
        return self.direct(stream, records)

    def direct(self, stream: str, records: Sequence[Row]) -> list[dict[str, Any]]:
        outcomes = []
        for index, record in enumerate(records):
            self.offset += 1
            source = f"ingest.{stream}/0/{self.offset}".encode()
            if (self.opa_up or self.leaky) and self.gate_up:
                self._deliver(stream, record, source)
            else:
                self.held.append((stream, record, source))
            outcomes.append({"index": index, "status": "accepted", "topic": f"ingest.{stream}", "partition": 0,
                             "offset": self.offset})
        return outcomes

    def _deliver(self, stream: str, record: Row, source: bytes) -> None:
        row = None if self.revoked else self.gate(record)
        if row is not None:
            self.deliveries.setdefault(stream, []).append((row, {"accord.source": source}))

    def release(self, restart: bool = False) -> None:
        held, self.held = self.held, []
        if restart and self.loses:
            return
        for stream, record, source in held * (2 if restart and self.repeats else 1):
            self._deliver(stream, record, source)


class FakeProcesses:
    def __init__(self, data: Outages) -> None:
        self.data = data

    def stop_opa(self, hold_s: float) -> None:
        self.data.events.append(f"opa stopped, held {hold_s:g} s")
        self.data.opa_up = False

    def start_opa(self) -> None:
        self.data.events.append("opa started")
        self.data.opa_up = True
        self.data.release()

    def kill_gate(self) -> str:
        self.data.events.append("gate killed")
        self.data.gate_up = False
        return "pid 4242"

    def gate_back(self, timeout_s: float) -> str:
        if not self.data.comes_back:
            raise ServiceStartError(f"the supervisor did not start the gate worker again within {timeout_s:g} s")
        self.data.events.append("gate back")
        self.data.gate_up = True
        self.data.release(restart=True)
        return "restarted by the supervisor as pid 4343"


class FakeIngest:
    def __init__(self, data: Outages) -> None:
        self.data, self.prepared = data, False

    def prepare(self, stream: str) -> None:
        assert self.data.opa_up, "prepared while OPA was down"
        self.prepared = True

    def publish(self, stream: str, records: Sequence[Row]) -> list[dict[str, Any]]:
        assert self.prepared
        return self.data.direct(stream, records)


class Clock:
    def __init__(self) -> None:
        self.now, self.slept = 0.0, 0.0

    def sleep(self, seconds: float) -> None:
        self.now += seconds
        self.slept += seconds

    def monotonic(self) -> float:
        return self.now


def fail_closed(data: Outages, control: bool = True) -> tuple[Any, Clock]:
    clock = Clock()
    deployment = Deployment(catalog())
    given = Control(FakeProcesses(data), FakeIngest(data), clock.sleep, clock.monotonic) if control else None
    drills, checks = drills_for(["T1"], "abc123", deployment, deployment, data, given)
    report = DrillRunner("unit", deployment.clock).run(["T1"], checks)
    assert tear_down(drills) == []
    return {c.check: c for c in report.checks}, clock


def test_with_opa_stopped_nothing_is_delivered_and_after_it_and_a_gate_restart_everything_once() -> None:
    data = Outages()
    checks, clock = fail_closed(data)
    check = checks["fail-closed"]
    assert check.verdict == "pass", check.reason
    assert data.events == ["opa stopped, held 600 s", "opa started", "gate killed", "gate back"]
    assert data.api_refused == 1 and "the ingest API refused them" in check.reason
    assert "3 records published" in check.reason and "none delivered in 5 s" in check.reason
    assert "Gate worker pid 4242 killed with SIGKILL and restarted by the supervisor as pid 4343" in check.reason
    assert "each of the 9 records published around it delivered exactly once" in check.reason
    assert clock.slept >= OBSERVE_S
    # Run while the grant is live: the checks after it still pass on the same drill body.
    assert {checks[n].verdict for n in ("dispute-decision", "grant-withdrawn", "revocation", "misroute")} == {"pass"}


def test_a_gate_that_delivers_while_opa_is_down_fails_and_opa_is_started_again() -> None:
    data = Outages(leaky=True)
    check = fail_closed(data)[0]["fail-closed"]
    assert check.verdict == "fail"
    assert "3 of 3 records published while OPA was stopped were delivered to drill-abc123-t1" in check.reason
    assert "the gate worker restart was not tried" in check.reason
    assert data.opa_up and "gate killed" not in data.events


@pytest.mark.parametrize(("fault", "said"), [
    ({"repeats": True}, "3 records published around the gate worker's restart were delivered more than once"),
    ({"loses": True}, "3 of 9 records published around the gate worker's restart were not delivered within 90 s"),
    ({"comes_back": False}, "gate worker pid 4242 was killed with SIGKILL and did not run again"),
])
def test_a_gate_that_repeats_or_loses_records_across_a_restart_or_stays_dead_fails(fault: dict[str, bool],
                                                                                     said: str) -> None:
    check = fail_closed(Outages(**fault))[0]["fail-closed"]
    assert check.verdict == "fail" and said in check.reason, check.reason


def test_opa_is_started_again_when_publishing_during_the_outage_breaks() -> None:
    data = Outages()

    class Broken(FakeIngest):
        def publish(self, stream: str, records: Sequence[Row]) -> list[dict[str, Any]]:
            raise ServiceError("Kafka did not answer")

    clock = Clock()
    deployment = Deployment(catalog())
    control = Control(FakeProcesses(data), Broken(data), clock.sleep, clock.monotonic)
    drills, checks = drills_for(["T1"], "abc123", deployment, deployment, data, control)
    report = DrillRunner("unit", deployment.clock).run(["T1"], checks)
    tear_down(drills)
    check = {c.check: c for c in report.checks}["fail-closed"]
    assert check.verdict == "fail" and "Kafka did not answer" in check.reason
    assert data.opa_up and data.events == ["opa stopped, held 600 s", "opa started"]


def test_without_process_control_the_check_is_not_run_saying_why() -> None:
    check = fail_closed(Outages(), control=False)[0]["fail-closed"]
    assert (check.verdict, check.reason) == ("not-run", NOT_LOCAL)


@pytest.mark.parametrize(("named", "controlled"), [
    ({}, True),
    ({"ACCORD_KAFKA_BOOTSTRAP": "kafka.example:9092"}, False),
    ({"ACCORD_GOVERNANCE_URL": "https://governance.example"}, False),
    # `eval "$(accord local env)"` names the local stack's own services: still the local stack.
    ({"ACCORD_KAFKA_BOOTSTRAP": "127.0.0.1:39092", "ACCORD_GOVERNANCE_URL": "http://127.0.0.1:38000/"}, True),
    ({"ACCORD_KAFKA_BOOTSTRAP": "127.0.0.1:39092", "ACCORD_GOVERNANCE_URL": "http://127.0.0.1:38001"}, False)])
def test_accord_drill_run_controls_processes_only_when_no_accord_variable_names_another_deployment(
        named: dict[str, str], controlled: bool, monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    from broker.cli import drill
    from broker.runtime.drill_processes import LocalProcesses

    for variable in ("ACCORD_KAFKA_BOOTSTRAP", "ACCORD_OPA_URL", "ACCORD_REGISTRY_URL", "ACCORD_API_URL",
                     "ACCORD_GOVERNANCE_URL"):
        monkeypatch.delenv(variable, raising=False)
    monkeypatch.setenv("ACCORD_STATE_DIR", str(tmp_path))
    LocalStack(Settings()).root.mkdir(parents=True, exist_ok=True)
    LocalStack(Settings()).state_file.write_text(json.dumps(
        {"kafka_bootstrap": "127.0.0.1:39092", "governance_url": "http://127.0.0.1:38000"}))
    for variable, value in named.items():
        monkeypatch.setenv(variable, value)
    given: dict[str, Any] = {}
    endpoints = SimpleNamespace(kafka=None, governance_url="http://127.0.0.1:1", api_url="http://127.0.0.1:2",
                                registry_url="http://127.0.0.1:3")
    monkeypatch.setattr("broker.cli.policy.running_endpoints", lambda: endpoints)
    monkeypatch.setattr("broker.runtime.drills.run_drill", lambda *args, **options: given.update(options))
    drill._run_once("T1", tmp_path, 1.0)
    assert isinstance(given["processes"], LocalProcesses) == controlled
    assert given["processes"] is None or controlled
