"""(k) Publishing over HTTP against a raw kafka-python producer, in one run on one local stack started here and wiped
at the end: the same synthetic T1 cases, as JSON to `POST /streams/{stream}/records` (checked, Avro-encoded and
produced in batches by the API process) and as ready-made Avro bytes straight onto the ingest topic.

`python -m benchmarks ingest [N]` runs this scenario alone with N records (default RECORDS).
"""

from __future__ import annotations

import datetime as dt
import json
import statistics
import tempfile
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import httpx
from kafka import KafkaProducer

from benchmarks.gate_setup import COUNCILS, INGEST, T1, Bench, encoded_cases, hub_catalog, local_bench
from broker.demo.synthetic import nhs_number, spread
from broker.domain.json_avro import to_json
from broker.security.api_tokens import issue, signing_key

RECORDS = 20_000
REQUEST_RECORDS = 1_000   # records per publish request
CLIENTS = 4               # publish requests in flight at once
GOAL = 0.5                # issue 20: HTTP ingest at least half a raw producer on the same broker, in the same run
WARMUP = 1_000            # records each side publishes untimed first: connections, metadata, schema ids, OPA
ROUNDS = 3                # the figures are each side's median round


def run(records: int = RECORDS, rounds: int = ROUNDS) -> dict[str, Any]:
    with tempfile.TemporaryDirectory(prefix="accord-bench-ingest-") as tmp, \
            local_bench(Path(tmp) / "stack") as bench:
        bench.apply(hub_catalog(Path(tmp)))
        warm_json = _json_cases(WARMUP)
        rates: dict[str, list[float]] = {"raw": [], "api": [], "keyed": []}
        # The three in turn, round after round, so a busy moment of the machine falls on each side alike.
        for n in range(rounds):
            rates["raw"].append(raw_producer(bench, encoded_cases(bench, records, prefix=f"RAW{n}"),
                                             encoded_cases(bench, WARMUP, prefix=f"RAW-WARM{n}")))
            cases = _json_cases(records)
            rates["api"].append(http_ingest(bench, cases, warm_json, keyed=False))
            rates["keyed"].append(http_ingest(bench, cases, warm_json, keyed=True))
        raw, api, keyed = (statistics.median(rates[side]) for side in ("raw", "api", "keyed"))
        return {"scenario": "k-api-ingest", "records": records, "rounds": rounds, "request_records": REQUEST_RECORDS,
                "clients": CLIENTS, "raw_producer_records_per_s": round(raw, 1),
                "api_records_per_s": round(api, 1), "api_keyed_records_per_s": round(keyed, 1),
                "rounds_records_per_s": {side: [round(rate, 1) for rate in found] for side, found in rates.items()},
                "api/raw": round(api / raw, 3), "api_keyed/raw": round(keyed / raw, 3),
                "api/raw best round": round(max(a / r for a, r in zip(rates["api"], rates["raw"], strict=True)), 3),
                "api/raw goal": GOAL, "api/raw met": api / raw >= GOAL,
                "note": f"medians of {rounds} rounds, each publishing {records} T1 cases raw, then over HTTP, then "
                        f"over HTTP with keys, all fields, {WARMUP} records published untimed first by each side; "
                        "raw: kafka-python (acks=all, idempotent, linger 20 ms) sending Avro bytes encoded "
                        "beforehand; api: JSON bodies serialised beforehand, over loopback HTTP to the stack's one "
                        f"API process, {REQUEST_RECORDS} records a request, {CLIENTS} at once, each record checked, "
                        "encoded and produced in batches; keyed: the same with an Idempotency-Key per request "
                        "(records and key in one Kafka transaction)"}


def _json_cases(records: int) -> list[dict[str, Any]]:
    """The raw producer's cases (encoded_cases: the same spread, seed and NHS numbers), as a publisher's JSON."""
    day = dt.datetime.now(dt.UTC).date() - dt.timedelta(days=3)
    cases = spread(day, records, list(COUNCILS.values()), prefix=f"API-{uuid.uuid4().hex[:6]}")
    return [{k: to_json(v) for k, v in {**case, "nhs_number": case["nhs_number"] or nhs_number(i)}.items()}
            for i, case in enumerate(cases)]


def raw_producer(bench: Bench, records: list[tuple[bytes, bytes]], warmup: list[tuple[bytes, bytes]]) -> float:
    producer = KafkaProducer(**bench.kafka.client_options(), client_id="bench-raw-ingest", acks="all",
                             enable_idempotence=True, linger_ms=20, batch_size=512 * 1024)
    try:
        for key, value in warmup:
            producer.send(INGEST, value=value, key=key)
        producer.flush(timeout=300)
        start = time.perf_counter()
        for key, value in records:
            producer.send(INGEST, value=value, key=key)
        producer.flush(timeout=300)
        return len(records) / (time.perf_counter() - start)
    finally:
        producer.close()


def http_ingest(bench: Bench, cases: list[dict[str, Any]], warmup: list[dict[str, Any]], keyed: bool) -> float:
    """Records per second accepted over HTTP. The request bodies are serialised before the clock starts, as the raw
    producer's records are encoded before its clock starts: both sides time publishing, not preparing."""
    token = issue(signing_key(bench.state_dir / "secrets"), "ukhsa", "ig-lead", "benchmark", dt.timedelta(hours=1),
                  dt.datetime.now(dt.UTC))
    run_id = uuid.uuid4().hex[:8]
    bodies, sizes = _bodies(cases, REQUEST_RECORDS)
    warm_bodies, warm_sizes = _bodies(warmup, len(warmup) // CLIENTS or 1)

    def send(numbered: tuple[int, bytes], sizes: list[int] = sizes, stage: str = "run") -> int:
        n, body = numbered
        headers = {"Authorization": f"Bearer {token}", "Content-Type": "application/json"}
        if keyed:
            headers["Idempotency-Key"] = f"bench-{run_id}-{stage}-{n}"
        response = client.post(f"/streams/{T1}/records", content=body, headers=headers)
        response.raise_for_status()
        answer = response.json()
        if answer["accepted"] != sizes[n]:
            raise AssertionError(f"the API refused records of the benchmark's batch {n}: {answer['outcomes'][:2]}")
        return int(answer["accepted"])

    with httpx.Client(base_url=bench.endpoints.api_url, timeout=300) as client, \
            ThreadPoolExecutor(max_workers=CLIENTS) as pool:
        sum(pool.map(lambda numbered: send(numbered, warm_sizes, "warm-up"), enumerate(warm_bodies)))
        start = time.perf_counter()
        accepted = sum(pool.map(send, enumerate(bodies)))
        return accepted / (time.perf_counter() - start)


def _bodies(cases: list[dict[str, Any]], per_request: int) -> tuple[list[bytes], list[int]]:
    """Request bodies of up to `per_request` records each, serialised, and how many records each holds."""
    chunks = [cases[i:i + per_request] for i in range(0, len(cases), per_request)]
    return [json.dumps({"records": chunk}).encode() for chunk in chunks], [len(chunk) for chunk in chunks]
