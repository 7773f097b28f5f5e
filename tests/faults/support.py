"""A whole local stack for fault tests, driven as a user drives it (`accord local ...` commands), and the
measures the tests share: publishing, reading what was delivered (read_committed), waiting on conditions."""

from __future__ import annotations

import datetime as dt
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
from kafka import KafkaConsumer

from broker.adapters.kafka_access import KafkaAccess
from broker.adapters.kafka_log import KafkaLog
from broker.adapters.registry_http import HttpSchemaRegistry
from broker.config import Settings
from broker.domain.messages import Outgoing
from broker.domain.topics import delivery_topic, ingest_topic
from broker.local import processes
from broker.local.stack import Endpoints, LocalStack
from broker.local.toolchain import REPO_ROOT
from broker.services.serde import AvroSerializer, SerializationContext
from tests.conftest import bearer, service_tokens
from tests.integration.gate_support import T1, Receiver

WAIT_S = 240.0  # a bound for failing, never a measurement: every wait ends as soon as its condition holds
# Each tier of the test ladder lets this long pass undecided (at the normal level), so a dispute's deadlines all
# fall within a test; the shipped ladder's are days.
TIER_S = 20
# The supervisor forgives a service its crashes once it has been up this long (ACCORD_SUPERVISE_HEALTHY_S).
HEALTHY_S = 5.0
# Councils by the place names the synthetic cases carry in their specimen ids, and the body whose DPH's plan
# covers each (a county's includes its districts): a row of a place delivered to any other body is outside a plan.
COUNCILS = {"leicester": "leicester-city-council", "nottingham": "nottingham-city-council",
            "blaby": "leicestershire-county-council", "charnwood": "leicestershire-county-council",
            "manchester": "manchester-city-council", "birmingham": "birmingham-city-council",
            "leeds": "leeds-city-council", "hackney": "hackney-council", "cornwall": "cornwall-council",
            "blackburn": "blackburn-with-darwen-council"}
DPH_TOPICS = sorted({delivery_topic(body, "dph", T1) for body in COUNCILS.values()})


def wait_for(condition: Callable[[], bool], what: str, timeout_s: float = WAIT_S, every_s: float = 0.2) -> float:
    """Wait until `condition` holds; the monotonic time it was first seen to hold."""
    deadline = time.monotonic() + timeout_s
    while not condition():
        assert time.monotonic() < deadline, f"gave up waiting for {what}"
        time.sleep(every_s)
    return time.monotonic()


def short_ladder_catalog(directory: Path) -> Path:
    """The shipped catalog with every tier's deadline TIER_S seconds (at every level)."""
    target = directory / "catalog"
    shutil.copytree(REPO_ROOT / "catalog", target)
    ladder = target / "ladder.yaml"
    every = f"PT{TIER_S}S"
    text, n = re.subn(r"(?m)^(\s+)deadlines: \{[^}]*\}",
                      rf"\1deadlines: {{normal: {every}, enhanced: {every}, emergency: {every}}}", ladder.read_text())
    assert n == 3, "the shipped ladder's tiers changed: update the fault suite's test ladder"
    ladder.write_text(text)
    return target


@dataclass
class FaultStack:
    state: Path
    env: dict[str, str]
    endpoints: Endpoints

    @property
    def kafka(self) -> KafkaAccess:
        return self.endpoints.kafka

    @property
    def local(self) -> LocalStack:
        return LocalStack(Settings(state_dir=self.state))

    def accord(self, *args: str, timeout_s: float = 300) -> subprocess.CompletedProcess[str]:
        return subprocess.run([sys.executable, "-m", "broker", *args], capture_output=True, text=True,
                              env=self.env, timeout=timeout_s, check=False)

    def pid(self, name: str) -> int:
        pid = self.local.pid(name)
        assert pid is not None, f"{name} has no pid file"
        return pid

    def kill(self, name: str) -> tuple[int, float]:
        """SIGKILL the service's process; (its pid, monotonic time of the kill) once it is gone."""
        pid = self.pid(name)
        os.kill(pid, signal.SIGKILL)
        killed = time.monotonic()
        wait_for(lambda: not processes.alive(pid, ""), f"{name} (pid {pid}) to die of SIGKILL", 30)
        return pid, killed

    def restarted(self, name: str, old_pid: int) -> float:
        """Wait until the supervisor has started `name` again (a new live pid); the monotonic time seen."""
        local = self.local
        return wait_for(lambda: local.pid(name) not in (None, old_pid) and local.running(name),
                        f"the supervisor to start {name} again")

    def status(self) -> tuple[int, dict[str, dict[str, Any]]]:
        """`accord local status --json`: its exit code and each service's state by name."""
        done = self.accord("local", "status", "--json", timeout_s=120)
        states = json.loads(done.stdout) if done.stdout.strip() else []
        return done.returncode, {s["name"]: s for s in states}

    def all_ready(self) -> bool:
        return self.status()[0] == 0

    def supervisor_state(self) -> dict[str, Any]:
        return self.local.supervisor.read_state() or {}

    def down(self) -> None:
        done = self.accord("local", "down", "--wipe")
        assert done.returncode == 0, done.stdout + done.stderr


def start_fault_stack(directory: Path, patch: pytest.MonkeyPatch) -> FaultStack:
    """`accord local up` in a fresh state directory (this process's Settings() reads its secrets too), then the
    short-ladder catalog applied by Accord's operator through the governance service, as a user does."""
    state = directory / "state"
    catalog = short_ladder_catalog(directory)
    env = {k: v for k, v in os.environ.items() if not k.startswith("ACCORD_")}
    env |= {"ACCORD_STATE_DIR": str(state), "ACCORD_HOME": str(Settings().home), "ACCORD_CATALOG_DIR": str(catalog),
            "ACCORD_SUPERVISE_HEALTHY_S": str(HEALTHY_S)}
    patch.setenv("ACCORD_STATE_DIR", str(state))
    patch.setenv("ACCORD_CATALOG_DIR", str(catalog))
    stack = FaultStack(state, env, _no_endpoints())
    up = stack.accord("local", "up", timeout_s=900)
    try:
        assert up.returncode == 0, up.stdout + up.stderr
        endpoints = LocalStack(Settings(state_dir=state)).endpoints()
        assert endpoints is not None, up.stdout
        stack.endpoints = endpoints
        operator = stack.accord("credentials", "token", "--body", "accord", "--role", "operator", "--person", "faults")
        assert operator.returncode == 0, operator.stderr
        applied = stack.accord("catalog", "apply", str(catalog), "--token", operator.stdout.strip())
        assert applied.returncode == 0, applied.stdout + applied.stderr
    except BaseException:
        stack.down()
        raise
    return stack


def _no_endpoints() -> Endpoints:
    return Endpoints(kafka=KafkaAccess(""), opa_url="", registry_url="", api_url="", governance_url="")


def jsonable(records: Iterable[dict[str, Any]]) -> list[dict[str, Any]]:
    """Records as the HTTP API takes them: dates as ISO 8601 strings."""
    return [json.loads(json.dumps(r, default=str)) for r in records]


def specimen_day() -> dt.date:
    return dt.datetime.now(dt.UTC).date() - dt.timedelta(days=3)


def place_of(specimen_id: str) -> str:
    """The place a synthetic case's specimen id names (`<prefix>-<PLACE>-<day>-<n>`)."""
    return specimen_id.split("-")[-3].lower()


def t1_delivery_topics(kafka: KafkaAccess) -> list[str]:
    """Every delivery topic of T1 on the cluster now, of any body and role."""
    consumer = KafkaConsumer(**kafka.client_options(), group_id=None)
    try:
        return sorted(t for t in consumer.topics() if t.startswith("deliver.") and t.endswith(f".{T1}"))
    finally:
        consumer.close()


def delivered(stack: FaultStack, prefix: str, topics: Iterable[str]) -> list[tuple[str, str]]:
    """(specimen id, topic) of every delivery of this test's rows (ids starting with `prefix`) on `topics`,
    read_committed, from the start of each topic."""
    receiver = Receiver(stack.kafka, stack.endpoints.registry_url, service_tokens())

    def mine(value: dict[str, Any], _: dict[str, bytes]) -> bool:
        return str(value.get("specimen_id", "")).startswith(prefix)
    try:
        return [(str(value["specimen_id"]), topic) for topic in topics
                for value, _ in receiver.records(topic, 0, mine, want=0, timeout_s=0, settle_s=0)]
    finally:
        receiver.close()


def committed_ends(stack: FaultStack, topics: list[str]) -> int:
    """The sum of the last stable offsets of `topics` (partition 0 each): what read_committed readers can reach."""
    from tests.integration.gate_support import end_offsets

    return sum(end_offsets(stack.kafka, topics).values())


def publish_http(stack: FaultStack, records: list[dict[str, Any]], timeout_s: float = 30) -> httpx.Response:
    """POST records to the API as UKHSA's IG lead (a publisher of T1)."""
    return httpx.post(f"{stack.endpoints.api_url}/streams/{T1}/records", json={"records": jsonable(records)},
                      headers=bearer("ukhsa", "ig-lead"), timeout=timeout_s)


def wait_all_delivered(stack: FaultStack, prefix: str, want: set[str], timeout_s: float = WAIT_S
                       ) -> list[tuple[str, str]]:
    """Every one of `want` delivered on the DPH topics, then the deliveries on every T1 topic (2 s later, so a late
    duplicate would show); what there is when `timeout_s` passes otherwise."""
    deadline = time.monotonic() + timeout_s
    while not want <= {s for s, _ in delivered(stack, prefix, DPH_TOPICS)} and time.monotonic() < deadline:
        time.sleep(2.0)
    time.sleep(2.0)
    return delivered(stack, prefix, t1_delivery_topics(stack.kafka))


def outside_plans(deliveries: list[tuple[str, str]]) -> list[tuple[str, str]]:
    """Deliveries of a row to a body whose DPH plan does not cover the row's place (the shipped catalog gives T1 to
    no other body's role for these places)."""
    return [(s, topic) for s, topic in deliveries if not topic.startswith(f"deliver.{COUNCILS[place_of(s)]}.")]


class FirstDelivery:
    """Right after a kill: waits for the first record committed on `topics` past where they were written to at the
    kill (read_committed), i.e. the first delivery of a worker that came after the dead one."""

    def __init__(self, stack: FaultStack, topics: list[str]) -> None:
        from kafka import TopicPartition

        self._consumer = KafkaConsumer(**stack.kafka.client_options(), group_id=None, enable_auto_commit=False,
                                       isolation_level="read_committed")
        partitions = [TopicPartition(t, 0) for t in topics]
        self._consumer.assign(partitions)
        written = KafkaConsumer(**stack.kafka.client_options(), group_id=None, isolation_level="read_uncommitted")
        try:
            ends = written.end_offsets(partitions)
        finally:
            written.close()
        for tp in partitions:
            self._consumer.seek(tp, ends[tp])

    def wait(self, timeout_s: float = WAIT_S) -> float:
        """The monotonic time the first such record was read."""
        deadline = time.monotonic() + timeout_s
        try:
            while not any(self._consumer.poll(timeout_ms=100).values()):
                assert time.monotonic() < deadline, "nothing was delivered after the kill"
            return time.monotonic()
        finally:
            self._consumer.close()


def encoded(stack: FaultStack, records: list[dict[str, Any]]) -> list[Outgoing]:
    """T1 records as a publisher's own Kafka client sends them to the ingest topic (Confluent-framed Avro, keyed by
    area), encoded now: the registry (which asks OPA who may register) is not needed to send them later."""
    topic = ingest_topic(T1)
    registry = HttpSchemaRegistry(stack.endpoints.registry_url, token=service_tokens())
    try:
        encode = AvroSerializer(registry, (REPO_ROOT / "schemas" / f"{T1}.avsc").read_text())
        return [Outgoing(topic, encode(r, SerializationContext(topic)) or b"", str(r["ltla"]).encode())
                for r in records]
    finally:
        registry.close()


def produce(stack: FaultStack, records: list[Outgoing]) -> None:
    """Send encoded records with a plain Kafka client (as the stack's admin), waiting for every acknowledgement."""
    log = KafkaLog(stack.kafka, client_id="faults-publisher")
    try:
        log.publish_all(records)
    finally:
        log.close()
