"""Throughput on a pre-filled ingest topic: (a) raw passthrough, (b, c) the real gate, (d) a gate asking OPA per record.

Every scenario consumes the same warm-up records and then the same measured records (published while it waits),
with a consumer group of its own, runs one Kafka transaction per poll batch (up to 500 records) and is timed the
same way (`gate_setup.timed`).
"""

from __future__ import annotations

import datetime as dt
import json
import time
from collections.abc import Callable
from typing import Any, Literal

from confluent_kafka import Consumer, Producer, TopicPartition
from kafka import KafkaConsumer, KafkaProducer
from kafka.structs import OffsetAndMetadata

from benchmarks.gate_setup import (
    T1,
    Bench,
    Timing,
    committed_ends,
    count_committed,
    frozen_heap,
    group,
    small_la_table,
    timed,
)
from broker.adapters.kafka_admin import create_topics
from broker.adapters.kafka_control import ControlReader
from broker.adapters.kafka_transactions import FETCH_MAX_WAIT_MS, RETRY_BACKOFF_MS, TransactionalStage
from broker.adapters.rdkafka_transactions import FETCH_WAIT_MAX_MS as RDKAFKA_FETCH_WAIT_MAX_MS
from broker.adapters.rdkafka_transactions import RETRY_BACKOFF_MS as RDKAFKA_RETRY_BACKOFF_MS
from broker.adapters.registry_http import HttpSchemaRegistry
from broker.domain import control
from broker.domain.control import PolicyState
from broker.domain.geography_files import load_la_table, load_residence
from broker.domain.jurisdiction import Unresolved, resolve_areas
from broker.domain.plans import Plan, Projector, projected_schema
from broker.domain.pseudonyms import Pseudonymiser, subscriber_key
from broker.domain.topics import DELIVER_PREFIX, ingest_topic, value_subject
from broker.local.toolchain import REPO_ROOT
from broker.runtime.gate import open_gate
from broker.services.gate import REVISION_HEADER, SOURCE_HEADER
from broker.services.ingest import load_stream_schemas
from broker.services.planner import PLAN_RULE, SUBSCRIPTIONS_RULE
from broker.services.serde import AvroDeserializer, AvroSerializer, SerializationContext

PASSTHROUGH = "bench.passthrough"
BATCH = 500


def ingest_topics() -> list[str]:
    """Every stream's ingest topic, as the gate subscribes (only T1's receive records here)."""
    return [ingest_topic(stream) for stream in load_stream_schemas(REPO_ROOT / "schemas")]


def result(scenario: str, timing: Timing, delivered: int, **extra: Any) -> dict[str, Any]:
    consumed = timing.records + timing.warmup_records
    return {"scenario": scenario, "records": timing.records, "seconds": round(timing.seconds, 3),
            "records_per_s": round(timing.rate, 1), "warmup_records": timing.warmup_records,
            "warmup_seconds": round(timing.warmup_seconds, 3), "delivered_incl_warmup": delivered,
            "delivered_per_record": round(delivered / consumed, 3), **extra}


def passthrough(bench: Bench, records: list[tuple[bytes, bytes]]) -> dict[str, Any]:
    """(a) kafka-python alone, configured as TransactionalStage configures it and subscribed to the same ingest
    topics as the gate (only T1's hold records); values and keys copied unchanged to one topic."""
    create_topics(bench.kafka, [PASSTHROUGH])
    tid = "bench-passthrough"
    consumer = KafkaConsumer(
        **bench.kafka.client_options(), group_id=group("a"), client_id=tid, enable_auto_commit=False,
        isolation_level="read_committed", auto_offset_reset="latest", session_timeout_ms=6_000,
        heartbeat_interval_ms=2_000, max_poll_records=BATCH, fetch_max_wait_ms=FETCH_MAX_WAIT_MS)
    consumer.subscribe(ingest_topics())
    producer = KafkaProducer(
        **bench.kafka.client_options(), client_id=tid, transactional_id=tid, transaction_timeout_ms=10_000,
        acks="all", enable_idempotence=True, linger_ms=5, batch_size=256 * 1024, retry_backoff_ms=RETRY_BACKOFF_MS)
    producer.init_transactions()

    def step() -> int:
        batches = consumer.poll(timeout_ms=100)
        if not batches:
            return 0
        producer.begin_transaction()
        offsets, n = {}, 0
        for tp, messages in batches.items():
            for m in messages:
                producer.send(PASSTHROUGH, value=m.value, key=m.key)
            offsets[tp] = OffsetAndMetadata(messages[-1].offset + 1, "", -1)
            n += len(messages)
        producer.send_offsets_to_transaction(offsets, consumer.group_metadata())
        producer.commit_transaction()
        return n

    def ready() -> bool:
        assigned = consumer.assignment()
        return bool(assigned) and all(consumer.position(tp) is not None for tp in assigned)

    before = committed_ends(bench.kafka, [PASSTHROUGH])
    try:
        timing = timed(bench, step, ready, bench.warmup, records)
    finally:
        consumer.close()
        producer.close()
    return result("a-raw-passthrough", timing, count_committed(bench.kafka, before)[PASSTHROUGH])


def passthrough_rdkafka(bench: Bench, records: list[tuple[bytes, bytes]]) -> dict[str, Any]:
    """(a) on librdkafka: confluent-kafka alone, configured as RdkafkaTransactionalStage configures it, the same
    ingest topics, values and keys copied unchanged to one topic, one transaction per batch of up to BATCH."""
    create_topics(bench.kafka, [PASSTHROUGH])
    tid = "bench-passthrough-rdkafka"
    consumer = Consumer({
        **bench.kafka.librdkafka_options(), "group.id": group("a-rdkafka"), "client.id": tid,
        "enable.auto.commit": False, "isolation.level": "read_committed", "auto.offset.reset": "latest",
        "session.timeout.ms": 6_000, "heartbeat.interval.ms": 2_000, "fetch.wait.max.ms": RDKAFKA_FETCH_WAIT_MAX_MS,
        "log_level": 3})
    consumer.subscribe(ingest_topics())
    producer = Producer({
        **bench.kafka.librdkafka_options(), "client.id": tid, "transactional.id": tid, "acks": "all",
        "enable.idempotence": True, "retry.backoff.ms": RDKAFKA_RETRY_BACKOFF_MS, "transaction.timeout.ms": 10_000,
        "linger.ms": 5, "batch.size": 256 * 1024, "log_level": 3})
    producer.init_transactions(30)

    def step() -> int:
        messages = [m for m in consumer.consume(num_messages=BATCH, timeout=0.1) if m.error() is None]
        if not messages:
            return 0
        producer.begin_transaction()
        offsets: dict[tuple[str, int], int] = {}
        for m in messages:
            producer.produce(PASSTHROUGH, value=m.value(), key=m.key())
            offsets[(str(m.topic()), int(m.partition() or 0))] = int(m.offset() or 0) + 1
        producer.send_offsets_to_transaction([TopicPartition(t, p, o) for (t, p), o in offsets.items()],
                                             consumer.consumer_group_metadata(), 30)
        producer.commit_transaction(30)
        return len(messages)

    def ready() -> bool:
        consumer.consume(num_messages=1, timeout=0.1)   # serves the group's assignment; nothing is published yet
        return bool(consumer.assignment())

    before = committed_ends(bench.kafka, [PASSTHROUGH])
    try:
        timing = timed(bench, step, ready, bench.warmup, records)
    finally:
        consumer.close()
        producer.flush(30)
    return result("a-raw-passthrough-librdkafka", timing, count_committed(bench.kafka, before)[PASSTHROUGH])


def real_gate(bench: Bench, scenario: str, records: list[tuple[bytes, bytes]], topics: list[str],
              small_table: bool = False, transport: Literal["kafka-python", "librdkafka"] = "kafka-python"
              ) -> dict[str, Any]:
    """(b, c) services.gate.Gate from open_gate, stepped on this thread, on the catalog applied last; with
    `small_table`, on the 28-authority table of before and no residence lookup (as then) instead of the ONS tables;
    its data path on `transport`."""
    settings = bench.settings(group(scenario), "latest", residence=not small_table).model_copy(
        update={"gate_transport": transport})
    before = committed_ends(bench.kafka, topics)
    batches = [0, 0]  # batches that held records, and their records (warm-up and measured)
    tables = "28 authorities, no residence lookup" if small_table else "ONS: 382 authorities, 35,672 LSOAs"
    with open_gate(bench.gate_endpoints, settings, f"bench-{scenario}",
                   la_table=small_la_table() if small_table else None) as gate:
        gate.start()
        plans = sorted(d.topic for d in gate.deliveries.get(T1, ()))

        def step() -> int:
            n = gate.step()
            batches[0], batches[1] = batches[0] + (n > 0), batches[1] + n
            return n

        with frozen_heap():
            timing = timed(bench, step, gate.ready, bench.warmup, records)
    by_topic = count_committed(bench.kafka, before)
    return result(scenario, timing, sum(by_topic.values()), t1_plans=len(plans), tables=tables,
                  delivered_by_topic=_short(by_topic), mean_batch_records=round(batches[1] / max(1, batches[0]), 1))


def control_fence(bench: Bench, gate_result: dict[str, Any], samples: int = 2_000) -> dict[str, Any]:
    """(g) What the revocation fence costs: before releasing a batch the gate asks for the control topic's end
    offset (one ListOffsets round trip; reading to it is free when nothing changed). Timed here on the same broker,
    and set against the gate's batches per second in `gate_result`."""
    reader = ControlReader(bench.kafka, client_id="bench-fence")
    try:
        reader.read_to(reader.end_offset())
        times = []
        for _ in range(samples):
            start = time.perf_counter()
            reader.read_to(reader.end_offset())
            times.append(time.perf_counter() - start)
    finally:
        reader.close()
    times.sort()
    mean_s = sum(times) / len(times)
    batches_per_s = gate_result["records_per_s"] / gate_result["mean_batch_records"]
    return {"scenario": "g-control-fence", "samples": samples, "mean_ms": round(mean_s * 1000, 3),
            "p50_ms": round(times[len(times) // 2] * 1000, 3), "p99_ms": round(times[int(len(times) * 0.99)] * 1000, 3),
            "against": gate_result["scenario"], "gate_batches_per_s": round(batches_per_s, 1),
            "share_of_gate_time": round(mean_s * batches_per_s, 4),
            "note": "share_of_gate_time = fence round trip x batches per second of the gate scenario it is set "
                    "against: the fraction of that gate's time spent on the fence"}


def routing_only(cases: list[dict[str, Any]], rounds: int = 5) -> dict[str, Any]:
    """The gate's routing step alone, no Kafka: the residence lookup and resolve_areas per record on the ONS tables,
    against resolve_areas on the small table of before; both timed in alternating rounds, best of each, and the
    tables' load times (each gate worker loads them once at start)."""
    started = time.perf_counter()
    full = load_la_table()
    loaded_la = time.perf_counter()
    residence = load_residence(None)
    loaded_lsoas = time.perf_counter()
    assert residence is not None
    small = small_la_table()
    jurisdiction = ("utla", "ltla")
    steps: dict[str, Callable[[dict[str, Any]], object]] = {
        "full": lambda case: resolve_areas(case, jurisdiction, full, residence.lad_of(case.get("lsoa"))),
        "small": lambda case: resolve_areas(case, jurisdiction, small)}
    best = dict.fromkeys(steps, float("inf"))
    for _ in range(rounds):
        for name, step in steps.items():
            start = time.perf_counter()
            for case in cases:
                step(case)
            best[name] = min(best[name], time.perf_counter() - start)
    return {"scenario": "c-routing-only", "records": len(cases), "rounds": rounds,
            "full_records_per_s": round(len(cases) / best["full"]),
            "small_records_per_s": round(len(cases) / best["small"]),
            "full/small": round(best["small"] / best["full"], 3),
            "full_us_per_record": round(best["full"] / len(cases) * 1e6, 2),
            "small_us_per_record": round(best["small"] / len(cases) * 1e6, 2),
            "la_table_load_ms": round((loaded_la - started) * 1000, 1),
            "lsoa_lookup_load_ms": round((loaded_lsoas - loaded_la) * 1000, 1)}


def _short(counts: dict[str, int]) -> dict[str, int]:
    return {topic.removeprefix(DELIVER_PREFIX).removesuffix(f".{T1}"): n for topic, n in counts.items()}


class NaiveGate:
    """(d) The gate's work without its plan cache: every record asks OPA for the plan of each subscription.

    Decoding, row filter, projection, encoding, headers and transactions are as in services.gate; projectors and
    serializers are cached per plan content (as the gate does), so the difference is the OPA round trip and
    Plan.from_opa per record and subscription.
    """

    def __init__(self, bench: Bench, tid: str) -> None:
        self.bench = bench
        self.stage = TransactionalStage(bench.kafka, group("d"), ingest_topics(), tid, start_from="latest")
        self.registry = HttpSchemaRegistry(bench.endpoints.registry_url, token=bench.tokens)
        self.decode = AvroDeserializer(self.registry, json.dumps(bench.schema))
        self.la = load_la_table()
        self.jurisdiction = [str(f) for f in bench.schema.get("accord.jurisdiction", [])]
        self.secret = b"bench-naive-gate-pseudonym-secret"
        self.built: dict[tuple[Any, ...], tuple[Projector, AvroSerializer]] = {}
        reader = ControlReader(bench.kafka, client_id=f"{tid}-control")
        try:
            state = PolicyState()
            for record in reader.read_to(reader.end_offset()):
                state = control.apply(state, record.offset, record.key, record.value)
        finally:
            reader.close()
        self.state = state
        grants = [dict(g) for _, g in sorted(state.grants.items())]
        self.subscriptions = bench.engine.evaluate(SUBSCRIPTIONS_RULE, {"stream": T1, "grants": grants})

    def close(self) -> None:
        self.stage.close()
        self.registry.close()

    def step(self) -> int:
        records = self.stage.poll(0.1)
        if not records:
            return 0
        self.stage.begin()
        for record in records:
            value = self.decode(record.value, SerializationContext(record.topic))
            assert value is not None
            areas = resolve_areas(value, self.jurisdiction, self.la)
            if isinstance(areas, Unresolved):
                continue
            source = f"{record.topic}/{record.partition}/{record.offset}".encode()
            now = dt.datetime.now(dt.UTC)
            for entry in self.subscriptions:
                request = self.state.plan_input(entry["subscriber"], entry["role"], T1, entry["purpose"], now)
                plan = Plan.from_opa(self.bench.engine.evaluate(PLAN_RULE, request))
                if not plan.allow or areas.isdisjoint(plan.areas):
                    continue
                project, encode = self._built(plan)
                delivered = project(value, areas)
                if delivered is None:
                    continue
                payload = encode(delivered, SerializationContext(plan.topic))
                self.stage.send(plan.topic, payload, key=record.key,
                                headers=[(SOURCE_HEADER, source), (REVISION_HEADER, plan.revision.encode())])
        self.stage.commit(records)
        return len(records)

    def _built(self, plan: Plan) -> tuple[Projector, AvroSerializer]:
        key = (plan.subscriber, plan.role, plan.scopes, plan.agreements)
        built = self.built.get(key)
        if built is None:
            create_topics(self.bench.kafka, [plan.topic])
            self.registry.set_compatibility(value_subject(plan.topic), "NONE")  # as the gate does
            pseudonymise = Pseudonymiser(subscriber_key(self.secret, plan.subscriber), T1)
            project = Projector(plan, self.bench.schema, pseudonymise=pseudonymise,
                                today=lambda: dt.datetime.now(dt.UTC).date())
            schema = projected_schema(self.bench.schema, plan)
            built = self.built[key] = (project, AvroSerializer(self.registry, json.dumps(schema)))
        return built


def naive_gate(bench: Bench, records: list[tuple[bytes, bytes]], topics: list[str]) -> dict[str, Any]:
    before = committed_ends(bench.kafka, topics)
    naive = NaiveGate(bench, "bench-naive")
    try:
        timing = timed(bench, naive.step, naive.stage.ready, bench.warmup, records)
    finally:
        naive.close()
    delivered = sum(count_committed(bench.kafka, before).values())
    return result("d-naive-opa-per-record", timing, delivered, opa_calls_per_record=len(naive.subscriptions))
