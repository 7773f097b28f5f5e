"""(j) The PostgreSQL sink's rows per second against a raw kafka-python consumer reading the same committed records,
in one run on one local stack (Kafka, registry, PostgreSQL) started here and wiped at the end.

`python -m benchmarks.postgres_sink` runs this scenario alone.
"""

from __future__ import annotations

import json
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

from kafka import KafkaConsumer, KafkaProducer, TopicPartition

from benchmarks.gate_setup import Bench, encoded_cases, local_bench
from broker.adapters.kafka_admin import create_topics
from broker.adapters.kafka_partitions import KafkaPartitionReader
from broker.adapters.postgres import PostgresDatabase
from broker.adapters.registry_http import HttpSchemaRegistry
from broker.config import Settings
from broker.local import postgres_server
from broker.local.stack import LocalStack
from connectors.sinks.postgres import PostgresSink

RECORDS = 20_000
BATCH = 2_000
ROUNDS = 2


def run() -> dict[str, Any]:
    with tempfile.TemporaryDirectory(prefix="accord-bench-sink-") as tmp, local_bench(Path(tmp) / "stack") as bench:
        dsn = LocalStack(Settings(state_dir=bench.state_dir)).up_postgres()
        password = postgres_server.password_file(bench.state_dir / "secrets").read_text().strip()
        topic = f"bench-sink-{uuid.uuid4().hex[:8]}"
        create_topics(bench.kafka, [topic])
        fill(bench, topic, encoded_cases(bench, RECORDS, prefix="SINK"))
        raw, sink = [], []
        for round_ in range(ROUNDS):
            raw.append(raw_consumer(bench, topic))
            sink.append(postgres_sink(bench, topic, dsn, password, f"bench_sink_{round_}"))
        best_raw, best_sink = max(raw), max(sink)
        return {"scenario": "j-postgres-sink", "records": RECORDS, "batch": BATCH, "rounds": ROUNDS,
                "raw_consumer_records_per_s": round(best_raw, 1), "sink_rows_per_s": round(best_sink, 1),
                "rounds_raw_records_per_s": [round(r, 1) for r in raw],
                "rounds_sink_rows_per_s": [round(r, 1) for r in sink], "sink/raw": round(best_sink / best_raw, 3),
                "note": "one partition of T1 records (all fields); raw: kafka-python read_committed, no decoding; "
                        "sink: decode with the registry's schema, upsert into a fresh table keyed on specimen_id and "
                        f"store the position, one transaction per {BATCH} records; PostgreSQL on this machine"}


def fill(bench: Bench, topic: str, records: list[tuple[bytes, bytes]]) -> None:
    producer = KafkaProducer(**bench.kafka.client_options(), client_id="bench-sink-fill", acks="all",
                             enable_idempotence=True, linger_ms=20, batch_size=512 * 1024)
    try:
        for n, (key, value) in enumerate(records):
            producer.send(topic, value=value, key=key, headers=[("accord.source", f"bench/0/{n}".encode())])
        producer.flush(timeout=120)
    finally:
        producer.close()


def raw_consumer(bench: Bench, topic: str) -> float:
    consumer = KafkaConsumer(**bench.kafka.client_options(), group_id=None, isolation_level="read_committed",
                             enable_auto_commit=False)
    try:
        tp = TopicPartition(topic, 0)
        consumer.assign([tp])
        consumer.seek_to_beginning(tp)
        start, seen = time.perf_counter(), 0
        while seen < RECORDS:
            seen += sum(len(batch) for batch in consumer.poll(timeout_ms=500, max_records=BATCH).values())
        return seen / (time.perf_counter() - start)
    finally:
        consumer.close()


def postgres_sink(bench: Bench, topic: str, dsn: str, password: str, table: str) -> float:
    source = KafkaPartitionReader(bench.kafka, topic, client_id="bench-sink")
    registry = HttpSchemaRegistry(bench.endpoints.registry_url, token=bench.tokens)
    database = PostgresDatabase(dsn, password)
    try:
        sink = PostgresSink(source, registry, database, table, ["specimen_id"])
        start, stored = time.perf_counter(), 0
        while stored < RECORDS:
            stored += sink.step(BATCH)
        elapsed = time.perf_counter() - start
        assert database.query(f"SELECT count(*) FROM {table}")[0][0] == RECORDS
        return stored / elapsed
    finally:
        source.close()
        registry.close()
        database.close()


if __name__ == "__main__":
    print(json.dumps(run()), flush=True)
