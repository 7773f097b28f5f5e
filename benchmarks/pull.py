"""(h) The pull API's throughput against a raw Kafka consumer, in one run on one local stack started here.

A subscriber's delivery topic is filled with RECORDS T1 records; then, alternating over ROUNDS rounds, (h_raw) a
group-less read_committed kafka-python consumer reads them all, (h_decode) the same consumer also decodes each
record with its writer schema from the registry (what a subscriber's own client must do at least), and (h_pull)
an HTTP client pages through them with `GET /deliveries/{stream}` (NDJSON, PAGE records a page) from the stack's
API process, which reads as its own Kafka user, checks the right against the control topic on every page and
signs a cursor per record. Run alone with `python -m benchmarks.pull`.
"""

from __future__ import annotations

import datetime as dt
import json
import statistics
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
from kafka import KafkaConsumer, KafkaProducer, TopicPartition

from benchmarks.gate_setup import HUB, T1, Bench, encoded_cases, hub_catalog, local_bench
from broker.adapters.kafka_admin import create_topics
from broker.adapters.registry_http import HttpSchemaRegistry
from broker.domain.topics import delivery_topic
from broker.security.api_tokens import issue, signing_key
from broker.services.serde import AvroDeserializer, SerializationContext

RECORDS = 20_000
PAGE = 10_000
ROUNDS = 3
GOAL = {"h_pull/h_decode": 0.25}
TOPIC = delivery_topic(HUB, "dph", T1)


def run() -> Iterator[dict[str, Any]]:
    with tempfile.TemporaryDirectory(prefix="accord-bench-pull-") as tmp, local_bench(Path(tmp) / "stack") as bench:
        bench.apply(hub_catalog(Path(tmp)))
        _fill(bench, encoded_cases(bench, RECORDS, prefix="PULL"))
        runs: dict[str, list[float]] = {"h_raw": [], "h_decode": [], "h_pull": []}
        registry = HttpSchemaRegistry(bench.endpoints.registry_url, token=bench.tokens)
        try:
            for _ in range(ROUNDS):
                runs["h_raw"].append(_timed(lambda: _consume(bench, None)))
                runs["h_decode"].append(_timed(lambda: _consume(bench, AvroDeserializer(registry))))
                runs["h_pull"].append(_timed(lambda: _pull(bench)))
        finally:
            registry.close()
        yield from (_result(name, rates) for name, rates in runs.items())
        yield _ratios(runs)


def _fill(bench: Bench, records: list[tuple[bytes, bytes]]) -> None:
    create_topics(bench.kafka, [TOPIC])
    producer = KafkaProducer(**bench.kafka.client_options(), client_id="bench-pull-fill", acks="all",
                             linger_ms=20, batch_size=512 * 1024)
    try:
        for key, value in records:
            producer.send(TOPIC, value=value, key=key)
        producer.flush(timeout=120)
    finally:
        producer.close()


def _timed(read_all: Callable[[], int]) -> float:
    start = time.perf_counter()
    count = read_all()
    seconds = time.perf_counter() - start
    if count != RECORDS:
        raise RuntimeError(f"read {count} records where {RECORDS} were written")
    return count / seconds


def _consume(bench: Bench, decode: AvroDeserializer | None) -> int:
    """Every record of the topic, as a subscriber's own client reads it (a fresh consumer, as a fresh page is)."""
    consumer = KafkaConsumer(**bench.kafka.client_options(), group_id=None, isolation_level="read_committed",
                             enable_auto_commit=False, max_poll_records=PAGE)
    try:
        tp = TopicPartition(TOPIC, 0)
        consumer.assign([tp])
        consumer.seek_to_beginning(tp)
        end, count = consumer.end_offsets([tp])[tp], 0
        ctx = SerializationContext(TOPIC)
        while consumer.position(tp) < end:
            for batch in consumer.poll(timeout_ms=200).values():
                for message in batch:
                    if decode is not None:
                        decode(message.value, ctx)
                    count += 1
        return count
    finally:
        consumer.close()


def _pull(bench: Bench) -> int:
    token = issue(signing_key(bench.state_dir / "secrets"), HUB, "dph", "benchmark", dt.timedelta(hours=1),
                  dt.datetime.now(dt.UTC))
    count, cursor = 0, None
    with httpx.Client(base_url=bench.endpoints.api_url, timeout=120,
                      headers={"Authorization": f"Bearer {token}"}) as client:
        while True:
            params: dict[str, Any] = {"limit": PAGE, **({"after": cursor} if cursor else {})}
            response = client.get(f"/deliveries/{T1}", params=params)
            response.raise_for_status()
            page = response.content.count(b"\n")
            if page == 0:
                return count
            count += page
            cursor = response.headers["Accord-Next-Cursor"]


def _result(name: str, rates: list[float]) -> dict[str, Any]:
    return {"scenario": name, "records": RECORDS, "records_per_s": round(max(rates), 1),
            "median_records_per_s": round(statistics.median(rates), 1), "rounds_records_per_s": [round(r, 1)
                                                                                               for r in rates]}


def _ratios(runs: dict[str, list[float]]) -> dict[str, Any]:
    found: dict[str, Any] = {"scenario": "h-pull-ratios", "note": (
        f"h_pull pages of {PAGE} NDJSON records over HTTP from the stack's API process (a consumer from its pool, "
        "the control topic's end read per page, Avro decoded, a cursor signed per record, JSON encoded); h_raw and "
        "h_decode read the same topic with one fresh group-less consumer each; best of "
        f"{ROUNDS} alternating rounds")}
    for name, goal in GOAL.items():
        top, bottom = name.split("/")
        value = max(runs[top]) / max(runs[bottom])
        found |= {name: round(value, 3), f"{name} goal": goal, f"{name} met": value >= goal,
                  "h_pull/h_raw": round(max(runs["h_pull"]) / max(runs["h_raw"]), 3)}
    return found


if __name__ == "__main__":
    for result in run():
        print(json.dumps(result), flush=True)
