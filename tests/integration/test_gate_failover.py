"""Gate workers as real processes in one consumer group: SIGKILL one mid-stream, nothing is lost or duplicated."""

from __future__ import annotations

import os
import random
import signal
import threading
import time
import uuid
from collections import Counter
from pathlib import Path
from typing import Any

import httpx
import pytest
from kafka import KafkaAdminClient, KafkaConsumer, TopicPartition

from broker.adapters.kafka_admin import end_positions
from broker.config import Settings
from broker.demo.steady_publisher import publish_steadily
from broker.demo.synthetic import spread
from broker.domain.topics import ingest_topic
from broker.local import processes
from broker.local.python_service import PythonService
from broker.local.stack import Endpoints
from broker.runtime.gate import GateEndpoints, GateThread, worker_identity
from tests.conftest import kafka_env, service_tokens
from tests.integration.gate_support import T1, Receiver, end_offsets, publish, specimen_day, topic_for

COUNCILS = {"leicester": "leicester-city-council", "nottingham": "nottingham-city-council",
            "blaby": "leicestershire-county-council", "charnwood": "leicestershire-county-council",
            "manchester": "manchester-city-council", "birmingham": "birmingham-city-council",
            "leeds": "leeds-city-council", "hackney": "hackney-council", "cornwall": "cornwall-council",
            "blackburn": "blackburn-with-darwen-council"}


@pytest.mark.parametrize("transport", ["kafka-python", "librdkafka"])
def test_killing_a_worker_mid_stream_loses_and_duplicates_nothing(
        services: Endpoints, applied_catalog: dict[str, Any], tmp_path: Path, transport: str) -> None:
    # The workers share the session's secrets dir (pseudonym secret, API token key), as a deployment's would.
    env = {**kafka_env(services.kafka), "ACCORD_OPA_URL": services.opa_url, "ACCORD_GATE_TRANSPORT": transport,
           "ACCORD_REGISTRY_URL": services.registry_url,
           "ACCORD_GATE_GROUP": f"test-failover-{uuid.uuid4().hex[:8]}", "ACCORD_GATE_START_FROM": "latest"}
    workers = [PythonService("gate", tmp_path / name) for name in ("a", "b")]
    topics = sorted({topic_for(body, "dph") for body in COUNCILS.values()})
    prefix = f"F{uuid.uuid4().hex[:6].upper()}"
    cases = spread(specimen_day(), 1200, list(COUNCILS), prefix=prefix)
    try:
        for name, worker in zip(("a", "b"), workers, strict=True):
            worker.start(env | {"ACCORD_GATE_WORKER_ID": f"failover-{name}"}, timeout_s=60, probe="/health")
        _wait_for_rebalance(workers)
        start = end_offsets(services.kafka, topics)
        # about 250 records/s, keyed by area so every partition carries traffic
        publisher = threading.Thread(target=publish_steadily, daemon=True, kwargs={
            "settings": Settings(), "kafka": services.kafka, "registry_url": services.registry_url, "stream": T1,
            "records": cases, "pause_s": 0.004, "key_field": "ltla", "client_id": "test-failover-publisher"})
        publisher.start()
        time.sleep(2.0)
        pid = processes.read_pid(workers[0].pid_file)
        assert pid is not None
        os.kill(pid, signal.SIGKILL)  # mid-stream: its open transaction is never committed
        publisher.join(timeout=60)
        delivered = _delivered(services, topics, start, prefix, len(cases))
    finally:
        for worker in workers:
            worker.stop()
    counts = Counter(specimen for specimen, _ in delivered)
    assert [s for s, n in counts.items() if n > 1] == [], "duplicates"
    assert sorted({c["specimen_id"] for c in cases} - set(counts)) == [], "lost"
    by_worker = Counter(worker for _, worker in delivered)
    # both delivered: the killed one before it died, the survivor everything after (its own and the taken-over)
    assert by_worker["failover-a"] > 0 and by_worker["failover-b"] > 0, by_worker


def _wait_for_rebalance(workers: list[PythonService], settle_s: float = 3.0) -> None:
    # Both answer /health once planned and assigned; give the group a moment to settle its second rebalance.
    assert all(w.running() for w in workers)
    time.sleep(settle_s)


def _delivered(services: Endpoints, topics: list[str], start: dict[str, int], prefix: str, want: int,
               deadline_s: float = 60.0) -> list[tuple[str, str]]:
    """(specimen id, delivering worker) of this test's records on the DPH topics, read_committed, once every record
    has arrived (then a second more, so a late duplicate would show) or 60 s passed.

    The killed worker's open transaction blocks read_committed readers of its partitions until the coordinator
    aborts it (the gate's transaction timeout, 10 s), so this waits longer than a healthy delivery would.
    """
    receiver = Receiver(services.kafka, services.registry_url, service_tokens())

    def read() -> list[tuple[str, str]]:
        return [(str(v["specimen_id"]), h.get("accord.worker", b"").decode()) for topic in topics
                for v, h in receiver.records(topic, start[topic], lambda v, _: v["specimen_id"].startswith(prefix),
                                             want=0, timeout_s=0, settle_s=0)]

    deadline = time.monotonic() + deadline_s
    try:
        while len(read()) < want and time.monotonic() < deadline:
            time.sleep(1.0)
        time.sleep(1.0)
        return read()
    finally:
        receiver.close()


@pytest.mark.parametrize("restart", ["same-slot", "new-id-per-process"])
def test_a_worker_restarted_in_its_slot_fences_the_dead_ones_transaction(
        services: Endpoints, applied_catalog: dict[str, Any], tmp_path: Path, restart: str) -> None:
    """kill -9 of the only gate worker while its transaction holds delivered rows, then a restart: every record
    delivered once (read_committed, counted by key). Prints the stall: how long the dead worker's open transaction
    held back read_committed readers of its partitions. Restarted in its slot (the default) the new worker's
    `init_transactions` aborts it at start; restarted with a new transactional id (as when the id held the process
    id: `new-id-per-process`) the coordinator aborts it only once the transaction timeout has passed."""
    group = f"test-slot-{uuid.uuid4().hex[:8]}"
    env = {**kafka_env(services.kafka), "ACCORD_OPA_URL": services.opa_url,
           "ACCORD_REGISTRY_URL": services.registry_url, "ACCORD_GATE_GROUP": group, "ACCORD_GATE_START_FROM": "latest"}
    topics = sorted({topic_for(body, "dph") for body in COUNCILS.values()})
    prefix = f"S{uuid.uuid4().hex[:6].upper()}"
    cases = spread(specimen_day(), 30_000, list(COUNCILS), prefix=prefix)
    random.Random(19).shuffle(cases)  # every council, so every ingest partition, carries traffic from the start
    sent: dict[str, float] = {}
    stop = threading.Event()
    worker = PythonService("gate", tmp_path / "gate")

    def identity(attempt: int) -> dict[str, str]:
        return {"ACCORD_GATE_SLOT": "0"} if restart == "same-slot" else {"ACCORD_GATE_WORKER_ID": f"pid-{attempt}"}

    publisher = threading.Thread(target=publish_steadily, daemon=True, kwargs={
        "settings": Settings(), "kafka": services.kafka, "registry_url": services.registry_url, "stream": T1,
        "records": cases, "pause_s": 0.01, "key_field": "ltla", "client_id": "test-slot-publisher",
        "sent_at": sent, "stop": stop})
    try:
        worker.start(env | identity(0), timeout_s=90, probe="/health")
        start = end_offsets(services.kafka, topics)
        ingest = end_positions(services.kafka, [ingest_topic(T1)])
        publisher.start()
        # A restarted worker resumes where the group committed; where it never did, it would start at `latest`.
        _wait_committed_everywhere(services, group, ingest)
        stall: _StallWatch | None = None
        for attempt in range(1, 8):
            _wait_delivering(services, topics)
            pid = processes.read_pid(worker.pid_file)
            assert pid is not None
            _kill_inside_a_transaction(services, topics, pid)  # its open transaction is never committed
            watch = _StallWatch(services, topics)
            worker.start(env | identity(attempt), timeout_s=90, probe="/health")
            watch.restarted_s = time.monotonic() - watch.killed
            if watch.held:
                stall = watch
                break
            watch.close()  # killed between two transactions: nothing was held; kill it again
        assert stall is not None, "never killed the worker while its transaction held delivered rows"
        time.sleep(2.0)  # the restarted worker delivers live records too
        stop.set()
        publisher.join(timeout=60)
        delivered = _delivered(services, topics, start, prefix, len(sent), deadline_s=240)
        stalled_s = stall.wait()
    finally:
        stop.set()
        worker.stop()
    counts = Counter(specimen for specimen, _ in delivered)
    assert [s for s, n in counts.items() if n > 1] == [], "duplicates"
    lost = sorted(set(sent) - set(counts))
    assert lost == [], f"{len(lost)} of {len(sent)} lost, e.g. {lost[:3]}"
    if restart == "same-slot":
        assert {w for _, w in delivered} == {f"{group}-0"}, "the slot's worker name is its group and slot"
    print(f"\n[{restart}] kill -9 of a gate worker holding an open transaction on {len(stall.held)} delivery "
          f"partition(s): read_committed readers held back {stalled_s:.1f} s (restart took {stall.restarted_s:.1f} s); "
          f"{len(sent)} records published, {len(counts)} delivered once, 0 lost, 0 duplicated")


def _wait_committed_everywhere(services: Endpoints, group: str, since: dict[tuple[str, int], int],
                               timeout_s: float = 90.0) -> None:
    """Until the group has committed an offset on every ingest partition written to since `since`."""
    admin = KafkaAdminClient(**services.kafka.client_options(), client_id="test-slot-offsets")
    try:
        deadline = time.monotonic() + timeout_s
        time.sleep(2.0)  # every partition has had records by then (about 100 a second, shuffled)
        while True:
            written = {key for key, end in end_positions(services.kafka, [t for t, _ in since]).items()
                       if end > since.get(key, 0)}
            committed = {(tp.topic, tp.partition) for tp in admin.list_group_offsets(group).get(group, {})}
            if written <= committed:
                return
            assert time.monotonic() < deadline, f"group {group} committed {committed}, not all of {written}"
            time.sleep(0.2)
    finally:
        admin.close()


def _wait_delivering(services: Endpoints, topics: list[str], timeout_s: float = 90.0) -> None:
    """Until a transaction of the worker has committed rows to the DPH topics since now (it is mid-stream)."""
    before = end_offsets(services.kafka, topics)
    deadline = time.monotonic() + timeout_s
    while end_offsets(services.kafka, topics) == before:
        assert time.monotonic() < deadline, "the gate worker delivered nothing"
        time.sleep(0.2)
    time.sleep(0.5)


def _kill_inside_a_transaction(services: Endpoints, topics: list[str], pid: int, timeout_s: float = 60.0) -> None:
    """SIGKILL `pid` the moment an open transaction holds written rows on a delivery partition (its last stable
    offset lags its high watermark). Killing at a random moment mostly lands between two transactions, the more
    so the faster the machine; the watch after the kill confirms the hold, and a rare commit between this look
    and the kill only costs the caller another attempt."""
    partitions = [TopicPartition(t, 0) for t in topics]
    written = KafkaConsumer(**services.kafka.client_options(), group_id=None, isolation_level="read_uncommitted")
    committed = KafkaConsumer(**services.kafka.client_options(), group_id=None, isolation_level="read_committed")
    try:
        deadline = time.monotonic() + timeout_s
        while True:
            ends = written.end_offsets(partitions)
            stable = committed.end_offsets(partitions)  # read second: a commit in between shows as no hold
            if any(stable[tp] < ends[tp] for tp in partitions) or time.monotonic() > deadline:
                os.kill(pid, signal.SIGKILL)
                return
    finally:
        written.close()
        committed.close()


class _StallWatch:
    """Right after a kill: the delivery partitions whose last stable offset lags their high watermark (an open
    transaction holds rows there), then, on a thread, when read_committed readers get past all of them."""

    def __init__(self, services: Endpoints, topics: list[str]) -> None:
        self.killed = time.monotonic()
        self._committed = KafkaConsumer(**services.kafka.client_options(), group_id=None,
                                        isolation_level="read_committed")
        self._written = KafkaConsumer(**services.kafka.client_options(), group_id=None,
                                      isolation_level="read_uncommitted")
        self._partitions = [TopicPartition(t, 0) for t in topics]
        ends = self._written.end_offsets(self._partitions)
        stable = self._committed.end_offsets(self._partitions)
        self.held = {tp: int(ends[tp]) for tp in self._partitions if stable[tp] < ends[tp]}
        self.released: float | None = None
        self.restarted_s = 0.0
        self._thread = threading.Thread(target=self._watch, daemon=True)
        self._thread.start()

    def _watch(self) -> None:
        deadline = self.killed + 120
        while self.held and time.monotonic() < deadline:
            stable = self._committed.end_offsets(list(self.held))
            if all(stable[tp] >= end for tp, end in self.held.items()):
                self.released = time.monotonic()
                return
            time.sleep(0.05)

    def wait(self) -> float:
        """Seconds from the kill until read_committed readers got past the dead worker's transaction."""
        self._thread.join(timeout=130)
        self.close()
        assert self.released is not None, f"the dead worker's transaction still held {self.held} after 120 s"
        return self.released - self.killed

    def close(self) -> None:
        self._thread.join(timeout=130)
        self._committed.close()
        self._written.close()


def test_a_second_live_worker_in_a_slot_takes_it_over_and_the_first_stops(
        services: Endpoints, applied_catalog: dict[str, Any]) -> None:
    """Two live workers must never share a slot silently: the one started second fences the first, whose next
    commit Kafka refuses; the first's loop stops and says so, and every record is delivered once, by the second."""
    settings = Settings(gate_group=f"test-fence-{uuid.uuid4().hex[:8]}", gate_start_from="latest",
                        opa_token_file=services.opa_token_file)
    endpoints = GateEndpoints(services.kafka, services.opa_url, services.registry_url)
    _, slot = worker_identity(settings)
    topics = sorted({topic_for(body, "dph") for body in COUNCILS.values()})
    start = end_offsets(services.kafka, topics)
    prefix = f"D{uuid.uuid4().hex[:6].upper()}"
    first = GateThread(endpoints, settings, "fence-first", transactional_id=slot).start()
    second: GateThread | None = None
    try:
        before = spread(specimen_day(), 20, list(COUNCILS), prefix=f"{prefix}A")
        publish(services, T1, before)
        assert len(_delivered(services, topics, start, prefix, len(before))) == len(before)
        second = GateThread(endpoints, settings, "fence-second", transactional_id=slot).start()
        after = spread(specimen_day(), 40, list(COUNCILS), prefix=f"{prefix}B")
        publish(services, T1, after)
        deadline = time.monotonic() + 90
        while first.alive():
            assert time.monotonic() < deadline, "the first worker went on in a slot the second had taken"
            time.sleep(0.2)
        problem = first.problem()
        assert problem is not None and "fence-first" in problem, problem
        assert second.problem() is None
        delivered = _delivered(services, topics, start, prefix, len(before) + len(after), deadline_s=120)
    finally:
        first.stop()
        if second is not None:
            second.stop()
    counts = Counter(specimen for specimen, _ in delivered)
    assert sorted(n for n in counts.values() if n > 1) == [], "duplicates"
    assert len(counts) == len(before) + len(after), "lost"
    late = {worker for specimen, worker in delivered if specimen.startswith(f"{prefix}B")}
    assert late == {"fence-second"}, "a record published after the takeover came from the fenced worker"


def test_one_process_runs_workers_in_consecutive_slots(
        services: Endpoints, applied_catalog: dict[str, Any], tmp_path: Path) -> None:
    """`accord gate serve --workers 2` (ACCORD_GATE_WORKERS) from slot 3: two workers, `<group>-3` and `<group>-4`,
    each ready, sharing the stream, every record delivered once."""
    group = f"test-workers-{uuid.uuid4().hex[:8]}"
    env = {**kafka_env(services.kafka), "ACCORD_OPA_URL": services.opa_url,
           "ACCORD_REGISTRY_URL": services.registry_url, "ACCORD_GATE_GROUP": group, "ACCORD_GATE_START_FROM": "latest",
           "ACCORD_GATE_SLOT": "3", "ACCORD_GATE_WORKERS": "2"}
    topics = sorted({topic_for(body, "dph") for body in COUNCILS.values()})
    prefix = f"W{uuid.uuid4().hex[:6].upper()}"
    gate = PythonService("gate", tmp_path / "gate")
    try:
        url = gate.start(env, timeout_s=120, probe="/health")
        health = httpx.get(f"{url}/health", timeout=30).json()
        assert [w["worker"] for w in health["workers"]] == [f"{group}-3", f"{group}-4"], health
        deadline = time.monotonic() + 60
        while (ready := httpx.get(f"{url}/ready", timeout=30)).status_code != 200:
            assert time.monotonic() < deadline, ready.text
            time.sleep(0.5)
        assert {f"gate loop {group}-3", f"gate loop {group}-4"} <= set(ready.json()["checks"]), ready.text
        start = end_offsets(services.kafka, topics)
        cases = spread(specimen_day(), 40, list(COUNCILS), prefix=prefix)
        publish(services, T1, cases)
        delivered = _delivered(services, topics, start, prefix, len(cases), deadline_s=120)
    finally:
        gate.stop()
    counts = Counter(specimen for specimen, _ in delivered)
    assert sorted(counts) == sorted(c["specimen_id"] for c in cases) and set(counts.values()) == {1}, counts
    assert {worker for _, worker in delivered} <= {f"{group}-3", f"{group}-4"}
