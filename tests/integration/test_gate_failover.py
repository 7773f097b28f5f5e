"""Gate workers as real processes in one consumer group: SIGKILL one mid-stream, nothing is lost or duplicated."""

from __future__ import annotations

import os
import signal
import threading
import time
import uuid
from collections import Counter
from pathlib import Path
from typing import Any

import pytest

from broker.config import Settings
from broker.demo.steady_publisher import publish_steadily
from broker.demo.synthetic import spread
from broker.local import processes
from broker.local.python_service import PythonService
from broker.local.stack import Endpoints
from tests.conftest import kafka_env, service_tokens
from tests.integration.gate_support import T1, Receiver, end_offsets, specimen_day, topic_for

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


def _delivered(services: Endpoints, topics: list[str], start: dict[str, int], prefix: str, want: int
               ) -> list[tuple[str, str]]:
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

    deadline = time.monotonic() + 60
    try:
        while len(read()) < want and time.monotonic() < deadline:
            time.sleep(1.0)
        time.sleep(1.0)
        return read()
    finally:
        receiver.close()
