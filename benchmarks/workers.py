"""`python -m benchmarks workers`: the same input drained by 1, 2 and 4 gate worker processes (`accord gate serve`,
one consumer group, each in its own slot), records/s each and the ratio to one worker.

Each run gets a fresh consumer group whose offsets are set to the ingest topics' ends before its workers start
(so no worker can skip or re-read a record, whenever it joins), consumes a warm-up record on every partition with
all its workers running, then the clock runs from the start of publishing the measured records until the group has
committed the last of them. The measured records are the same in every run: T1 cases spread evenly over the ten
T1 councils' places and evenly over the ingest topic's partitions, each delivered to one subscriber (the DPH tier
of the shipped T1 agreements), and the delivered count is checked.
"""

from __future__ import annotations

import os
import platform
import tempfile
import time
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from pathlib import Path
from typing import Any

from kafka import KafkaConsumer, KafkaProducer, TopicPartition
from kafka.structs import OffsetAndMetadata

from benchmarks.gate_setup import (
    INGEST,
    Bench,
    committed_ends,
    count_committed,
    dph_only_catalog,
    dph_topics,
    encoded_cases,
    group,
    local_bench,
)
from broker.adapters.kafka_access import KafkaAccess
from broker.adapters.kafka_admin import end_positions, topic_partitions, wait_consumed
from broker.config import Settings
from broker.domain.topics import ingest_topic
from broker.local.python_service import PythonService
from broker.local.toolchain import REPO_ROOT
from broker.security.kafka_identities import service_env
from broker.services.ingest import load_stream_schemas

RECORDS = 40_000
WORKERS = (1, 2, 4)
WARMUP_PER_PARTITION = 20
DRAIN_TIMEOUT_S = 600.0  # per run: the benchmark is bounded even on a machine far slower than expected
START_TIMEOUT_S = 120.0


def run(records: int = RECORDS) -> list[dict[str, Any]]:
    with tempfile.TemporaryDirectory(prefix="accord-bench-workers-") as tmp, \
            local_bench(Path(tmp) / "state") as bench:
        bench.apply(dph_only_catalog(Path(tmp)))
        partitions = topic_partitions(bench.kafka, [INGEST])[INGEST]
        warmup = encoded_cases(bench, WARMUP_PER_PARTITION * partitions, "WUP", seed=7)
        measured = encoded_cases(bench, records, "WRK")
        found = [_drain(bench, Path(tmp) / f"workers-{n}", n, partitions, warmup, measured) for n in WORKERS]
    one = found[0]["records_per_s"]
    for result in found:
        result["ratio_to_one"] = round(result["records_per_s"] / one, 2)
    note = {"scenario": "workers-machine", "cpu_count": os.cpu_count(), "platform": platform.platform(),
            "load_average_at_start": os.getloadavg(), "ingest_partitions": partitions, "records": records,
            "notes": ["each worker is its own `accord gate serve` process; Kafka (one broker), OPA, the registry, "
                      "the API and the benchmark's publisher run on the same machine, so on few cores more "
                      "workers mostly share the same CPUs: the ratio shows the partitions letting workers share "
                      "the work, not what more machines would give",
                      "the clock includes publishing the measured records (one producer, beside the workers)"]}
    return [note, *found]


def _drain(bench: Bench, root: Path, workers: int, partitions: int, warmup: list[tuple[bytes, bytes]],
           measured: list[tuple[bytes, bytes]]) -> dict[str, Any]:
    # The gate's Kafka user may join only `accord-gate*` groups and use `accord-gate-*` transactional ids
    # (domain/kafka_acls.py); a worker's transactional id is `<group>-<slot>`.
    name = f"accord-gate-{group(f'workers-{workers}')}"
    topics = [ingest_topic(s) for s in load_stream_schemas(REPO_ROOT / "schemas")]
    _start_at_ends(bench.kafka, name, topics)
    with _gate_processes(bench, root, name, workers):
        since = end_positions(bench.kafka, topics)
        _publish(bench.kafka, warmup, partitions)
        wait_consumed(bench.kafka, name, since, timeout_s=DRAIN_TIMEOUT_S)
        starts = committed_ends(bench.kafka, dph_topics())
        since = end_positions(bench.kafka, topics)
        began = time.perf_counter()
        _publish(bench.kafka, measured, partitions)
        wait_consumed(bench.kafka, name, since, timeout_s=DRAIN_TIMEOUT_S)
        seconds = time.perf_counter() - began
    delivered = sum(count_committed(bench.kafka, starts).values())
    if delivered != len(measured):
        raise RuntimeError(f"{workers} workers delivered {delivered} of {len(measured)} records")
    return {"scenario": f"workers-{workers}", "workers": workers, "records": len(measured),
            "seconds": round(seconds, 3), "records_per_s": round(len(measured) / seconds, 1),
            "delivered": delivered}


def _start_at_ends(kafka: KafkaAccess, name: str, topics: list[str]) -> None:
    """Commit `name`'s offsets at the topics' ends before any member joins: every worker resumes there."""
    consumer = KafkaConsumer(**kafka.client_options(), group_id=name, enable_auto_commit=False)
    try:
        ends = end_positions(kafka, topics)
        consumer.assign([TopicPartition(t, p) for t, p in ends])
        consumer.commit({TopicPartition(t, p): OffsetAndMetadata(end, "", -1) for (t, p), end in ends.items()})
    finally:
        consumer.close()


@contextmanager
def _gate_processes(bench: Bench, root: Path, name: str, workers: int) -> Iterator[None]:
    settings = Settings(state_dir=bench.state_dir)
    env = {"ACCORD_KAFKA_BOOTSTRAP": bench.kafka.bootstrap, "ACCORD_OPA_URL": bench.endpoints.opa_url,
           "ACCORD_REGISTRY_URL": bench.endpoints.registry_url, "ACCORD_STATE_DIR": str(bench.state_dir),
           "ACCORD_GATE_GROUP": name, **service_env(settings, "gate")}
    with ExitStack() as stack:
        for slot in range(workers):
            service = PythonService("gate", root / f"slot-{slot}")
            stack.callback(service.stop)
            service.start(env | {"ACCORD_GATE_SLOT": str(slot)}, START_TIMEOUT_S, probe="/health")
        yield


def _publish(kafka: KafkaAccess, records: list[tuple[bytes, bytes]], partitions: int) -> None:
    """`records` onto T1's ingest topic, acknowledged, spread round-robin over its partitions (so each worker's share
    of partitions is an equal share of the work, however the ten councils' keys would hash)."""
    producer = KafkaProducer(**kafka.client_options(), client_id="bench-workers", acks="all",
                             enable_idempotence=True, linger_ms=20, batch_size=512 * 1024)
    try:
        for index, (key, value) in enumerate(records):
            producer.send(INGEST, value=value, key=key, partition=index % partitions)
        producer.flush(timeout=120)
    finally:
        producer.close()
