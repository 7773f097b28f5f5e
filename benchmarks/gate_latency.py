"""Latency through a live gate: (e) publish → deliver at a steady rate, (f) policy change → enforced.

The gate (a GateThread), the publisher and the subscriber each run in a process of their own (spawned), as they
would in production: none shares another's interpreter lock, and the gate's heap holds only what a gate holds.
"""

from __future__ import annotations

import multiprocessing as mp
import statistics
import time
from collections.abc import Sequence
from multiprocessing.synchronize import Event
from pathlib import Path
from typing import Any

from benchmarks.gate_setup import BENCH_OPERATOR, INGEST, Bench
from broker.adapters.kafka_access import KafkaAccess
from broker.adapters.kafka_log import KafkaLog
from broker.config import Settings
from broker.runtime.gate import GateEndpoints, GateThread, freeze_startup_heap
from broker.services import policy_changes

Sent = dict[tuple[int, int], float]
Received = list[tuple[int, int, float]]
_SPAWN = mp.get_context("spawn")


def publish(kafka: KafkaAccess, records: Sequence[tuple[bytes, bytes]], rate: float, max_s: float, stop: Event,
            out: Any) -> None:
    """Send `records` (cycled) onto the ingest topic at `rate`/s for `max_s` or until `stop`; put {(partition,
    offset): wall-clock send time} on `out`."""
    from kafka import KafkaProducer

    sent: Sent = {}

    def acked(at: float, meta: Any) -> None:
        sent[(meta.partition, meta.offset)] = at

    producer = KafkaProducer(**kafka.client_options(), client_id="bench-publisher", acks="all",
                             enable_idempotence=True, linger_ms=0)
    i, start = 0, time.perf_counter()
    while not stop.is_set() and (elapsed := time.perf_counter() - start) < max_s:
        for _ in range(int(elapsed * rate) + 1 - i):
            key, value = records[i % len(records)]
            producer.send(INGEST, value=value, key=key).add_callback(acked, time.time())
            i += 1
        time.sleep(0.0005)
    producer.flush(timeout=30)
    producer.close()
    out.put(sent)


def serve_gate(endpoints: GateEndpoints, state_dir: Path, group: str, worker: str, ready: Event, stop: Event,
               out: Any) -> None:
    """A GateThread starting at the end of the ingest topics, until `stop`; puts its failure ("" if none) on `out`."""
    settings = Settings(state_dir=state_dir, gate_group=group, gate_start_from="latest")
    runner = GateThread(endpoints, settings, worker)
    try:
        runner.start()
    except RuntimeError as exc:
        out.put(str(exc))
        ready.set()
        return
    freeze_startup_heap()  # as `accord gate serve` does
    ready.set()
    stop.wait()
    runner.stop()
    out.put("" if runner.failure is None else repr(runner.failure))


class LiveGate:
    """The real gate in a process of its own, ready (partitions assigned, positions fixed) when constructed."""

    def __init__(self, bench: Bench, group: str, worker: str) -> None:
        self._ready, self._stop, self._out = _SPAWN.Event(), _SPAWN.Event(), _SPAWN.Queue()
        self._proc = _SPAWN.Process(target=serve_gate, args=(bench.gate_endpoints, bench.state_dir, group, worker,
                                                             self._ready, self._stop, self._out), daemon=True)
        self._proc.start()
        if not self._ready.wait(120) or not self._proc.is_alive():
            self.close()
            raise RuntimeError("the live gate did not start")

    def close(self) -> None:
        """Stop the gate; raises if it failed."""
        self._stop.set()
        failure = self._out.get(timeout=60) if self._proc.is_alive() or not self._out.empty() else "exited"
        self._proc.join(timeout=30)
        if failure:
            raise RuntimeError(f"the live gate failed: {failure}")

    def __enter__(self) -> LiveGate:
        return self

    def __exit__(self, *_: object) -> None:
        self.close()


def receive(kafka: KafkaAccess, topics: Sequence[str], ready: Event, stop: Event, out: Any) -> None:
    """Read the delivery topics from their current ends, read_committed, until `stop`; put (ingest partition,
    ingest offset, wall-clock receive time) of each delivery on `out`."""
    from kafka import KafkaConsumer, TopicPartition

    consumer = KafkaConsumer(**kafka.client_options(), group_id=None, isolation_level="read_committed",
                             enable_auto_commit=False, fetch_max_wait_ms=100)
    tps = [TopicPartition(t, 0) for t in topics]
    consumer.assign(tps)
    consumer.seek_to_end(*tps)
    for tp in tps:
        consumer.position(tp)
    ready.set()
    got: Received = []
    while not stop.is_set():
        batches = consumer.poll(timeout_ms=50)
        now = time.time()
        for messages in batches.values():
            for m in messages:
                source = dict(m.headers)["accord.source"].decode()
                _, partition, offset = source.rsplit("/", 2)
                got.append((int(partition), int(offset), now))
    consumer.close()
    out.put(got)


class Load:
    """A publisher process at a steady rate; `result()` waits for it to finish (or stops it) and returns what it
    sent."""

    def __init__(self, bench: Bench, records: Sequence[tuple[bytes, bytes]], rate: float, max_s: float) -> None:
        self._stop, self._out = _SPAWN.Event(), _SPAWN.Queue()
        self._proc = _SPAWN.Process(target=publish, args=(bench.kafka, records, rate, max_s, self._stop,
                                                          self._out), daemon=True)
        self._proc.start()
        self._max_s = max_s

    def result(self, stop: bool = False) -> Sent:
        if stop:
            self._stop.set()
        sent: Sent = self._out.get(timeout=self._max_s + 90)
        self._proc.join(timeout=30)
        return sent

    def __enter__(self) -> Load:
        return self

    def __exit__(self, *_: object) -> None:
        if self._proc.is_alive():
            self._stop.set()
            self._proc.join(timeout=60)


def percentiles(values: Sequence[float]) -> dict[str, float]:
    ordered = sorted(values)

    def rank(p: float) -> float:  # nearest rank
        return round(ordered[min(len(ordered) - 1, max(0, int(-(-p * len(ordered) // 100)) - 1))], 1)

    return {"p50_ms": rank(50), "p99_ms": rank(99), "max_ms": round(ordered[-1], 1),
            "mean_ms": round(statistics.fmean(ordered), 1)}


def delivery_latency(bench: Bench, records: Sequence[tuple[bytes, bytes]], topics: Sequence[str],
                     rate: float = 1000.0, warmup_s: float = 5.0, seconds: float = 15.0) -> dict[str, Any]:
    """(e) Records sent in the `seconds` after `warmup_s` at the same rate; one DPH delivery per record.

    The warm-up covers the gate's first record for each subscriber (its delivery schema is registered then) and
    the backlog that builds meanwhile, and the publisher's own start.
    """
    ready, stop, received_q = _SPAWN.Event(), _SPAWN.Event(), _SPAWN.Queue()
    receiver = _SPAWN.Process(target=receive, args=(bench.kafka, list(topics), ready, stop, received_q),
                              daemon=True)
    receiver.start()
    try:
        if not ready.wait(60):
            raise RuntimeError("the subscriber process did not start")
        with Load(bench, records, rate, warmup_s + seconds) as publisher:
            sent = publisher.result()
        first = min(sent.values())
        window = {k: t for k, t in sent.items() if t >= first + warmup_s}
        time.sleep(3.0)  # let the last transactions commit and reach the subscriber
    finally:
        stop.set()
    received: Received = received_q.get(timeout=60)
    receiver.join(timeout=30)
    latencies = [(at - window[(p, o)]) * 1000 for p, o, at in received if (p, o) in window]
    if not latencies:
        raise RuntimeError(f"none of the {len(window)} records sent reached the subscriber")
    span = max(window.values()) - min(window.values())
    stats = percentiles(latencies)
    return {"scenario": "e-publish-to-deliver-latency", "records": len(window), "seconds": round(span, 3),
            "records_per_s": round(len(window) / span, 1), "target_rate": rate, "warmup_s": warmup_s,
            "delivered": len(latencies), **stats, "goal_p99_ms": 200,
            "met": stats["p99_ms"] <= 200 and len(latencies) == len(window)}


def enforcement_latency(bench: Bench, scenario: str, agreement: str, changes: int = 20,
                        pause_s: float = 0.2, goal_ms: float = 1000) -> dict[str, Any]:
    """(f) Alternately revoke and reinstate `agreement`; each change's latency is the worker's own applied_ms
    minus the change's control-record timestamp."""
    log = KafkaLog(bench.kafka, client_id="bench-status-reader")
    latencies: list[float] = []
    start = time.perf_counter()
    try:
        for i in range(changes):
            if i % 2 == 0:
                change = policy_changes.revoke(bench.writer, agreement, reason="benchmark", by=BENCH_OPERATOR)
            else:
                change = policy_changes.reinstate(bench.writer, agreement, by=BENCH_OPERATOR)
            status = policy_changes.enforcement(log, change, workers=1, timeout_s=10)[0]
            latencies.append(float(int(status["applied_ms"]) - change.timestamp_ms))
            time.sleep(pause_s)
    finally:
        if changes % 2:
            policy_changes.reinstate(bench.writer, agreement, by=BENCH_OPERATOR)
        log.close()
    stats = percentiles(latencies)
    return {"scenario": scenario, "records": changes, "seconds": round(time.perf_counter() - start, 3),
            "changes": changes, "agreement": agreement, **stats, "goal_p99_ms": goal_ms,
            "met": stats["p99_ms"] <= goal_ms}
