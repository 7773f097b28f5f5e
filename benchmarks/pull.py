"""(h) The pull API's throughput against a raw Kafka consumer, in one run on one local stack started here.

A subscriber's delivery topic is filled with RECORDS T1 records; then, alternating over ROUNDS rounds, (h_raw) a
group-less read_committed kafka-python consumer reads them all, (h_decode) the same consumer also decodes each
record with its writer schema from the registry (what a subscriber's own client must do at least), and (h_pull)
an HTTP client pages through them with `GET /deliveries/{stream}` (NDJSON, PAGE records a page) from the stack's
API process, which reads as its own Kafka user, checks the right against the control topic on every page and
signs one cursor per page. (i) Produce-to-event latency: LIVE_RECORDS records produced one at a time at
LIVE_RATE a second onto the same topic, each timed from just before its send to its arrival at an SSE client of
`GET /deliveries/{stream}/events` (i_sse) and, at the same time, at a raw kafka-python consumer (i_raw).
Run alone with `python -m benchmarks.pull`.
"""

from __future__ import annotations

import datetime as dt
import json
import statistics
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
from kafka import KafkaConsumer, KafkaProducer, TopicPartition

from benchmarks.gate_latency import percentiles
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
LIVE_RECORDS = 1_000
LIVE_RATE = 200.0


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
        yield _live(bench, encoded_cases(bench, LIVE_RECORDS, prefix="LIVE", seed=1919))


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
    token = _token(bench)
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


def _token(bench: Bench) -> str:
    return issue(signing_key(bench.state_dir / "secrets"), HUB, "dph", "benchmark", dt.timedelta(hours=1),
                 dt.datetime.now(dt.UTC))


def _live(bench: Bench, records: list[tuple[bytes, bytes]]) -> dict[str, Any]:
    """(i): each record keyed by its specimen id, so both readers can say which send it was."""
    registry = HttpSchemaRegistry(bench.endpoints.registry_url, token=bench.tokens)
    try:
        decode = AvroDeserializer(registry)
        keyed = [(str((decode(v, SerializationContext(TOPIC)) or {})["specimen_id"]), v) for _, v in records]
    finally:
        registry.close()
    sent: dict[str, float] = {}
    arrived: dict[str, dict[str, float]] = {"i_sse": {}, "i_raw": {}}
    ready = {name: threading.Event() for name in arrived}
    stop = threading.Event()
    readers = [threading.Thread(target=_sse_reader, args=(bench, arrived["i_sse"], ready["i_sse"], stop)),
               threading.Thread(target=_raw_reader, args=(bench, arrived["i_raw"], ready["i_raw"], stop))]
    for reader in readers:
        reader.start()
    try:
        if not all(event.wait(60) for event in ready.values()):
            raise RuntimeError("a reader did not start")
        _send_paced(bench, keyed, sent)
        deadline = time.monotonic() + 30
        while any(len(found) < len(sent) for found in arrived.values()) and time.monotonic() < deadline:
            time.sleep(0.1)
    finally:
        stop.set()
        for reader in readers:
            reader.join(timeout=30)
    result: dict[str, Any] = {"scenario": "i-produce-to-event-latency", "records": len(sent), "rate": LIVE_RATE}
    for name, found in arrived.items():
        latencies = [(found[k] - sent[k]) * 1000 for k in sent if k in found]
        result[name] = {"received": len(latencies), **percentiles(latencies)} if latencies else {"received": 0}
    result["note"] = ("i_sse: an httpx stream of the stack's API's events (one long poll per step, one event per "
                      "record); i_raw: a group-less read_committed kafka-python consumer; both read while one "
                      "producer sends, acks=all, timed from just before each send")
    return result


def _send_paced(bench: Bench, keyed: list[tuple[str, bytes]], sent: dict[str, float]) -> None:
    producer = KafkaProducer(**bench.kafka.client_options(), client_id="bench-pull-live", acks="all", linger_ms=0)
    try:
        start = time.perf_counter()
        for n, (key, value) in enumerate(keyed):
            pause = start + n / LIVE_RATE - time.perf_counter()
            if pause > 0:
                time.sleep(pause)
            sent[key] = time.perf_counter()
            producer.send(TOPIC, value=value, key=key.encode())
        producer.flush(timeout=60)
    finally:
        producer.close()


def _sse_reader(bench: Bench, found: dict[str, float], ready: threading.Event, stop: threading.Event) -> None:
    headers = {"Authorization": f"Bearer {_token(bench)}"}
    with httpx.Client(base_url=bench.endpoints.api_url, timeout=httpx.Timeout(60, read=30)) as client, \
            client.stream("GET", f"/deliveries/{T1}/events", headers=headers) as response:
        response.raise_for_status()
        for line in response.iter_lines():
            if line.startswith("retry:"):
                ready.set()  # the stream starts at the end: every record produced from now on is an event
            elif line.startswith("data: "):
                found[str(json.loads(line[6:])["specimen_id"])] = time.perf_counter()
            if stop.is_set():
                return


def _raw_reader(bench: Bench, found: dict[str, float], ready: threading.Event, stop: threading.Event) -> None:
    consumer = KafkaConsumer(**bench.kafka.client_options(), group_id=None, isolation_level="read_committed",
                             enable_auto_commit=False)
    try:
        tp = TopicPartition(TOPIC, 0)
        consumer.assign([tp])
        consumer.seek_to_end(tp)
        consumer.position(tp)
        ready.set()
        while not stop.is_set():
            for batch in consumer.poll(timeout_ms=100).values():
                now = time.perf_counter()
                found.update((m.key.decode(), now) for m in batch)
    finally:
        consumer.close()


def _result(name: str, rates: list[float]) -> dict[str, Any]:
    return {"scenario": name, "records": RECORDS, "records_per_s": round(max(rates), 1),
            "median_records_per_s": round(statistics.median(rates), 1), "rounds_records_per_s": [round(r, 1)
                                                                                               for r in rates]}


def _ratios(runs: dict[str, list[float]]) -> dict[str, Any]:
    found: dict[str, Any] = {"scenario": "h-pull-ratios", "note": (
        f"h_pull pages of {PAGE} NDJSON records over HTTP from the stack's API process (a consumer from its pool, "
        "the control topic's end read per page, Avro decoded, JSON encoded, one cursor signed per page); h_raw and "
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
