"""Partitions that let gate workers scale, on the real Kafka: a stream's ingest topic has the catalog's partitions,
two gate workers in one group share them, and each area's records reach the multi-partition delivery topic on one
partition, in the order they were published (read_committed), on either data-path transport."""

from __future__ import annotations

import datetime as dt
import os
import subprocess
import sys
import time
import uuid
from collections import defaultdict
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from pathlib import Path
from typing import Any, Literal

import pytest
from kafka.partitioner.default import murmur2

from broker.adapters.kafka_admin import create_topics, topic_partitions
from broker.adapters.kafka_log import KafkaLog
from broker.catalog.loader import load_stream_partitions
from broker.config import Settings
from broker.domain.messages import Record
from broker.domain.topics import delivery_topic, ingest_topic
from broker.local.stack import Endpoints
from broker.local.toolchain import REPO_ROOT
from broker.runtime.gate import GateEndpoints, GateThread
from tests.integration.gate_support import T2, publish, topic_for

# Leicestershire's districts: the county's tracing partnership receives them all, each its own key (a case with no
# upper-tier code is keyed by its district), spread over both workers' shares of the ingest partitions.
DISTRICTS = ("E07000129", "E07000130", "E07000131", "E07000132", "E07000133", "E07000134", "E07000135")
ROUNDS = 12  # records per district, published in rounds that interleave the districts
COUNTY_TRACING = topic_for("leicestershire-county-council", "dph", T2)
WORKER_HEADER = "accord.worker"
Transport = Literal["kafka-python", "librdkafka"]


def _case(prefix: str, district: str, seq: int, now: dt.datetime) -> dict[str, Any]:
    return {"ctas_id": f"{prefix}{district[-3:]}{seq:03d}", "name": "Test Case", "phone": None, "email": None,
            "address": "1 Test Street", "postcode": "LE8 4AA", "ltla": district, "utla": None,
            "specimen_date": (now - dt.timedelta(days=3)).date().isoformat(), "onset_date": None,
            "case_created_ts": (now - dt.timedelta(days=2)).isoformat(), "attempts": seq, "last_attempt_ts": None,
            "status": "UNREACHABLE"}


@contextmanager
def _workers(services: Endpoints, tmp_path: Path, transport: Transport) -> Iterator[list[GateThread]]:
    """Two gate workers in one fresh consumer group, started at the end of every ingest topic: each commits where
    it starts once ready (Gate.anchor), so nothing published after both started is skipped, and the session's long
    history (a million T1 rows of the file source's test) is not delivered again."""
    settings = Settings(gate_group=f"test-partitions-{uuid.uuid4().hex[:8]}", gate_start_from="latest",
                        opa_token_file=services.opa_token_file, gate_transport=transport)
    endpoints = GateEndpoints(services.kafka, services.opa_url, services.registry_url)
    with ExitStack() as stack:
        started = []
        for name in ("a", "b"):
            worker = GateThread(endpoints, settings, f"test-partitions-{transport}-{name}")
            stack.callback(worker.stop)
            started.append(worker.start())
        yield started


def _delivered(services: Endpoints, sources: set[bytes], timeout_s: float = 180.0) -> list[Record]:
    """This test's committed deliveries on every partition of the county's topic, each partition in offset order."""
    log = KafkaLog(services.kafka, client_id="test-partitions-reader")
    try:
        deadline = time.monotonic() + timeout_s
        while True:
            mine = [r for r in log.read(COUNTY_TRACING, 1_000_000, timeout_s=2.0)
                    if dict(r.headers).get("accord.source") in sources]
            if len(mine) >= len(sources) or time.monotonic() > deadline:
                return sorted(mine, key=lambda r: (r.partition, r.offset))
    finally:
        log.close()


@pytest.mark.parametrize("transport", ["kafka-python", "librdkafka"])
def test_each_areas_records_arrive_on_one_partition_in_publish_order_through_two_workers(
        services: Endpoints, applied_catalog: dict[str, Any], tmp_path: Path, transport: Transport) -> None:
    counts = load_stream_partitions(REPO_ROOT / "catalog")[T2]
    assert (counts.ingest, counts.delivery) == (12, 3)
    prefix = f"P{uuid.uuid4().hex[:5].upper()}"
    now = dt.datetime.now(dt.UTC)
    with _workers(services, tmp_path, transport):
        published: dict[bytes, dict[str, Any]] = {}
        for start in range(0, ROUNDS, 3):  # four requests, each three rounds of every district
            published |= publish(services, T2, [_case(prefix, d, seq, now)
                                                 for seq in range(start, start + 3) for d in DISTRICTS])
        delivered = _delivered(services, set(published))

    sizes = topic_partitions(services.kafka, [ingest_topic(T2), COUNTY_TRACING])
    assert sizes == {ingest_topic(T2): 12, COUNTY_TRACING: 3}
    assert len(delivered) == len(published) == ROUNDS * len(DISTRICTS)
    by_key: dict[bytes, list[Record]] = defaultdict(list)
    for record in delivered:
        assert record.key is not None
        by_key[record.key].append(record)
    assert sorted(by_key) == [d.encode() for d in DISTRICTS]
    for key, records in by_key.items():
        # one partition per area: the one Java's partitioner (murmur2) gives the key, on either transport
        assert {r.partition for r in records} == {(murmur2(key) & 0x7FFFFFFF) % 3}, key
        # in publish order: the rounds of this district, as published
        rounds = [published[dict(r.headers)["accord.source"]]["attempts"] for r in records]
        assert rounds == list(range(ROUNDS)), (key, rounds)
        assert all(published[dict(r.headers)["accord.source"]]["ltla"] == key.decode() for r in records)
    assert len({r.partition for r in delivered}) == 3  # the districts spread over the delivery topic
    workers = {dict(r.headers)[WORKER_HEADER] for r in delivered}
    assert len(workers) == 2, workers  # both workers delivered: each owns a share of the ingest partitions


def test_the_partitions_command_grows_only_when_asked_and_never_shrinks(services: Endpoints, tmp_path: Path) -> None:
    tag = uuid.uuid4().hex[:8]
    grown, kept = f"testgrow.grown-{tag}", f"testgrow.kept-{tag}"
    catalog = tmp_path / "catalog"
    catalog.mkdir()
    (catalog / "streams.yaml").write_text(f"""streams:
  - {{id: {grown}, owner: testgrow, classification: open, partitions: 3, delivery_partitions: 2}}
  - {{id: {kept}, owner: testgrow, classification: open, partitions: 2}}
""")
    delivered = delivery_topic("testgrow-council", "dph", grown)
    create_topics(services.kafka, [ingest_topic(grown), delivered], partitions=1)
    create_topics(services.kafka, [ingest_topic(kept)], partitions=4)
    env = {**{k: v for k, v in os.environ.items() if not k.startswith("ACCORD_")},
           "ACCORD_STATE_DIR": str(tmp_path / "state"), **dict(line.split("=", 1) for line in services.env_lines())}

    def accord(*args: str) -> str:
        done = subprocess.run([sys.executable, "-m", "broker", "kafka", "partitions", "--catalog", str(catalog),
                               *args], capture_output=True, text=True, env=env, timeout=120, check=False)
        assert done.returncode == 0, done.stderr
        return done.stdout

    told = accord()
    assert f"{ingest_topic(grown)} has 1 partitions, the catalog asks for 3" in told
    assert f"{delivered} has 1 partitions, the catalog asks for 2" in told
    assert f"{ingest_topic(kept)} has 4 partitions, more than the 2" in told and "nothing grown" in told
    sizes = [ingest_topic(grown), delivered, ingest_topic(kept)]
    assert topic_partitions(services.kafka, sizes) == dict(zip(sizes, (1, 1, 4), strict=True))

    assert "grew 2 topics" in accord("--grow")
    assert topic_partitions(services.kafka, sizes) == dict(zip(sizes, (3, 2, 4), strict=True))
    assert f"{ingest_topic(kept)} has 4 partitions" in accord()  # still more than asked: never shrunk
