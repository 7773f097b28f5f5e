"""Faults of a three-broker cluster (`accord local up --brokers 3`) under a live run through the gate: a broker
killed with SIGKILL, a broker paused with SIGSTOP for 30 s. Nothing acknowledged is lost and nothing is delivered
twice (read_committed, counted by key); each test prints its figures as one JSON line."""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from typing import Any

import pytest

from broker.domain.topics import ingest_topic
from tests.faults.cluster_support import (
    BROKERS,
    DPH_TOPICS,
    GATE_TRANSPORT,
    Cluster,
    DeliveryCounter,
    Publisher,
    cases,
    encode,
    replication,
    three_brokers,
    under_replicated,
    wait_in_sync,
)
from tests.integration.gate_support import T1

RECORDS = 100_000  # the number
RATE = 2_500.0  # records a second offered by the publisher: a run of 40 s
PAUSE_S = 30.0


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    with three_brokers(tmp_path_factory.mktemp("accord-cluster")) as running:
        _warm_up(running)
        yield running


def _warm_up(cluster: Cluster) -> None:
    """Until the gate delivers to every DPH topic: its plans are made and its delivery topics exist."""
    deadline = time.monotonic() + 180
    while True:
        try:
            counter = DeliveryCounter(cluster.kafka, DPH_TOPICS)
            break
        except AssertionError:
            assert time.monotonic() < deadline, "the gate made no delivery topics for T1's DPHs"
            time.sleep(1.0)
    try:
        counter.start()
        records = encode(cluster, cases("WARM", 100))
        publisher = Publisher(cluster.kafka, records, rate=1000.0).start()
        publisher.join(120)
        counter.wait_for(set(publisher.sources), timeout_s=120, settle_s=0)
        assert len(publisher.delivered(counter.counts)) == len(records), "the gate did not deliver the warm-up records"
    finally:
        counter.close()


def test_internal_topics_have_three_replicas_and_two_in_sync(cluster: Cluster) -> None:
    found = replication(cluster.kafka)
    internal = [name for name in found if name.startswith(("_", "ingest.", "quarantine.", "deliver."))]
    assert {"__consumer_offsets", "__transaction_state", "_accord.control", "_accord.governance",
            "_accord.schemas"} <= set(internal)
    assert {name: found[name] for name in internal if found[name] != ({3}, "2")} == {}
    status = subprocess.run([sys.executable, "-m", "broker", "local", "status"], capture_output=True, text=True,
                            timeout=120, check=False, env=os.environ | {"ACCORD_STATE_DIR": str(cluster.stack.root)})
    brokers = [line.split()[:2] for line in status.stdout.splitlines() if line.startswith("kafka-")]
    assert brokers == [[f"kafka-{n}", "up"] for n in range(1, BROKERS + 1)], status.stdout
    print("\n" + json.dumps({"test": "cluster-replication", "brokers": BROKERS, "topics": len(internal),
                             "replicas": 3, "min_insync_replicas": 2}))


def test_kill_9_of_a_broker_mid_run_loses_and_duplicates_nothing(cluster: Cluster) -> None:
    prefix = f"K{uuid.uuid4().hex[:6].upper()}"
    records = encode(cluster, _shuffled(cases(prefix, RECORDS)))
    victim = cluster.leader_of(ingest_topic(T1), 0)
    counter = DeliveryCounter(cluster.kafka, DPH_TOPICS).start()
    try:
        publisher = Publisher(cluster.kafka, records, rate=RATE).start()
        publisher.wait_for(RECORDS // 2, timeout_s=300)
        os.kill(cluster.pid(victim), signal.SIGKILL)
        killed = time.monotonic()
        _wait_listed_down(cluster, victim)
        publisher.join(300)
        counter.wait_for(set(publisher.sources), timeout_s=300)
        delivered_s = time.monotonic() - killed
        cluster.stack.up()  # `accord local up` again: the killed broker starts on its own ports
        cluster.stack.governance.stop()
        cluster.stack.console.stop()
        in_sync_s = wait_in_sync(cluster.kafka, timeout_s=300)
        restarted_s = time.monotonic() - killed - delivered_s
    finally:
        counter.close()
    counts = publisher.delivered(counter.counts)
    duplicated = sorted(key.decode() for key, n in counts.items() if n > 1)
    lost = sorted(key.decode() for key in publisher.acknowledged - counts.keys())
    print("\n" + json.dumps({
        "test": "kill-9-broker", "brokers": BROKERS, "gate_transport": GATE_TRANSPORT,
        "records": RECORDS, "killed_broker": victim,
        "killed_after_published": RECORDS // 2, "acknowledged": len(publisher.acknowledged),
        "unacknowledged": len(publisher.unacknowledged), "delivered_once": sum(1 for n in counts.values() if n == 1),
        "lost": len(lost), "duplicated": len(duplicated), "counter_consumers_replaced": counter.replaced,
        "restart_and_in_sync_s": round(restarted_s, 1), "in_sync_after_restart_s": round(in_sync_s, 1)}))
    assert publisher.errors == [], publisher.errors[:3]
    assert len(publisher.acknowledged) == RECORDS
    assert duplicated == [], f"{len(duplicated)} delivered twice, e.g. {duplicated[:3]}"
    assert lost == [], f"{len(lost)} of {RECORDS} acknowledged records never delivered, e.g. {lost[:3]}"
    assert under_replicated(cluster.kafka) == []


def test_a_broker_paused_for_30_s_loses_and_duplicates_nothing(cluster: Cluster) -> None:
    """SIGSTOP of the leader of an ingest partition for 30 s mid-run, then SIGCONT. Recovery, printed: from the
    stop until the first delivery the gate produced after it is read (delivery resumed), until the publisher's
    first acknowledgement after it (publishing resumed), and from SIGCONT until every partition of the cluster
    has all its replicas in sync again."""
    prefix = f"P{uuid.uuid4().hex[:6].upper()}"
    records = encode(cluster, _shuffled(cases(prefix, RECORDS)))
    victim = cluster.leader_of(ingest_topic(T1), 0)
    pid = cluster.pid(victim)
    counter = DeliveryCounter(cluster.kafka, DPH_TOPICS).start()
    resumed = False
    try:
        publisher = Publisher(cluster.kafka, records, rate=RATE).start()
        publisher.wait_for(RECORDS // 4, timeout_s=300)
        stopped = time.time()
        os.kill(pid, signal.SIGSTOP)
        try:
            time.sleep(PAUSE_S)
        finally:
            os.kill(pid, signal.SIGCONT)
            resumed = True
        continued = time.time()
        in_sync_s = wait_in_sync(cluster.kafka, timeout_s=300)
        publisher.join(300)
        counter.wait_for(set(publisher.sources), timeout_s=300)
    finally:
        if not resumed:
            os.kill(pid, signal.SIGCONT)
        counter.close()
    delivery_back = counter.first_read_after(stopped)
    published_back = min((acked for _, acked in publisher.chunks if acked > stopped), default=None)
    counts = publisher.delivered(counter.counts)
    duplicated = sorted(key.decode() for key, n in counts.items() if n > 1)
    lost = sorted(key.decode() for key in publisher.acknowledged - counts.keys())
    print("\n" + json.dumps({
        "test": "sigstop-broker", "brokers": BROKERS, "gate_transport": GATE_TRANSPORT,
        "records": RECORDS, "paused_broker": victim,
        "paused_s": round(continued - stopped, 1), "acknowledged": len(publisher.acknowledged),
        "unacknowledged": len(publisher.unacknowledged), "delivered_once": sum(1 for n in counts.values() if n == 1),
        "lost": len(lost), "duplicated": len(duplicated), "counter_consumers_replaced": counter.replaced,
        "delivery_resumed_after_stop_s": None if delivery_back is None else round(delivery_back - stopped, 1),
        "publishing_resumed_after_stop_s": None if published_back is None else round(published_back - stopped, 1),
        "in_sync_after_cont_s": round(in_sync_s, 1)}))
    assert publisher.errors == [], publisher.errors[:3]
    assert len(publisher.acknowledged) == RECORDS
    assert duplicated == [], f"{len(duplicated)} delivered twice, e.g. {duplicated[:3]}"
    assert lost == [], f"{len(lost)} of {RECORDS} acknowledged records never delivered, e.g. {lost[:3]}"
    assert delivery_back is not None


def _wait_listed_down(cluster: Cluster, node: int, timeout_s: float = 60.0) -> None:
    """Until `accord local status` lists the killed broker as not running (its process may take a moment to go)."""
    deadline = time.monotonic() + timeout_s
    while {state.name: state for state in cluster.stack.status()}[f"kafka-{node}"].running:
        assert time.monotonic() < deadline, f"status still lists the killed kafka-{node} as up"
        time.sleep(0.2)


def _shuffled(records: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Every council's rows, so every ingest partition and delivery topic, carry traffic from the start."""
    random.Random(19).shuffle(records)
    return records

