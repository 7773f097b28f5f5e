"""What the gate benchmarks share: one local stack, the benchmark catalogs, the T1 records and how runs are timed."""

from __future__ import annotations

import datetime as dt
import gc
import json
import os
import shutil
import time
import uuid
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from kafka import KafkaConsumer, KafkaProducer, TopicPartition

from broker.adapters.kafka_access import KafkaAccess
from broker.adapters.kafka_control import ControlWriter, ensure_control_topics
from broker.adapters.opa import OpaPolicyEngine
from broker.adapters.registry_http import HttpSchemaRegistry
from broker.catalog import load_and_compile
from broker.config import Settings
from broker.demo.synthetic import PLACES, nhs_number, spread
from broker.domain.geography import LaTable
from broker.domain.geography_files import load_la_table
from broker.domain.ladder import Actor
from broker.domain.topics import delivery_topic, ingest_topic
from broker.local.stack import Endpoints, LocalStack
from broker.local.toolchain import REPO_ROOT
from broker.runtime.api import ensure_stream_topics
from broker.runtime.gate import GateEndpoints, freeze_startup_heap
from broker.security.api_tokens import OPERATOR_ROLE, SERVICE_BODY, ServiceTokens
from broker.security.control_keys import ControlSigner, control_signing_key
from broker.security.opa_tokens import WRITER, opa_engine
from broker.services import policy_changes
from broker.services.ingest import load_stream_schemas
from broker.services.serde import AvroSerializer, SerializationContext

T1 = "ukhsa.positive-tests"
INGEST = ingest_topic(T1)
# The ten councils with a T1 agreement in the shipped catalog, each with one place of its area.
COUNCILS: Mapping[str, str] = {
    "leicester-city-council": "leicester", "nottingham-city-council": "nottingham",
    "leicestershire-county-council": "blaby", "nottinghamshire-county-council": "ashfield",
    "manchester-city-council": "manchester", "birmingham-city-council": "birmingham",
    "leeds-city-council": "leeds", "hackney-council": "hackney", "cornwall-council": "cornwall",
    "blackburn-with-darwen-council": "blackburn",
}
HUB = "bench-national-cell"  # scenario (b): one national subscriber whose row scope is all ten councils' areas
FANOUT = 24  # scenario (m): national cells that each receive every record (issue 18's fan-out)
HUB_BODY = f"  - {{id: {HUB}, name: Benchmark National Cell, kind: national, tier: national, roles: [dph]}}\n"
DPH_TIER = """tiers:
  dph:
    roles: [dph]
    other_fields: keep
    fields: {specimen_id: keep, nhs_number: keep, name: keep, address: keep}
"""
HUB_AGREEMENT = f"""agreement: bench-hub
template: t1-positive-tests
subscriber: {HUB}
row_scope: [{", ".join(sorted({PLACES[p].utla for p in COUNCILS.values()}))}]
{DPH_TIER}valid_from: 2026-01-01T00:00:00Z
valid_until: 2027-12-31T23:59:59Z
review_date: 2027-06-30
signatories:
  - {{body: ukhsa, name: Benchmark IG Lead, role: ig-lead}}
  - {{body: {HUB}, name: Benchmark DPH, role: dph}}
"""


# The 28 authorities of the LA table Accord shipped before the ONS December 2023 lookups (scenario c_small).
SMALL_TABLE = frozenset({
    "E10000018", *(f"E07000{n}" for n in range(129, 136)), "E06000016", "E06000018",
    "E10000024", *(f"E07000{n}" for n in range(170, 177)), "E08000003", "E06000008", "E08000025", "E08000035",
    "E09000001", "E09000012", "E06000052", "E06000053", "W06000015", "S12000036"})


def small_la_table() -> LaTable:
    """The old small table: those 28 rows of today's, and (as then) no residence lookup beside it."""
    table = LaTable([a for a in load_la_table() if a.code in SMALL_TABLE], "the 28-authority table of before")
    assert len(table) == len(SMALL_TABLE)
    return table


def dph_topics() -> list[str]:
    return [delivery_topic(council, "dph", T1) for council in COUNCILS]


def hub_catalog(directory: Path) -> Path:
    """The shipped bodies, streams and templates with one agreement only: the national cell's DPH tier (like the
    T1 DPH tier: every field kept) over all ten councils' areas."""
    target = _without_agreements(directory / "catalog-hub")
    with (target / "bodies.yaml").open("a") as bodies:
        bodies.write(HUB_BODY)
    (target / "agreements" / "bench-hub.yaml").write_text(HUB_AGREEMENT)
    return target


def _without_agreements(target: Path) -> Path:
    """The shipped bodies, streams and templates copied to `target`, with no agreement."""
    shutil.copytree(REPO_ROOT / "catalog", target)
    for path in (target / "agreements").glob("*.yaml"):
        path.unlink()
    return target


def fanout_hub(n: int) -> str:
    return f"{HUB}-{n + 1:02d}"


def fanout_catalog(directory: Path, subscribers: int = FANOUT) -> Path:
    """hub_catalog with `subscribers` national cells in place of one, each with its own agreement and topic: every
    record is delivered to each of them."""
    target = _without_agreements(directory / "catalog-fanout")
    with (target / "bodies.yaml").open("a") as bodies:
        for n in range(subscribers):
            bodies.write(HUB_BODY.replace(f"id: {HUB},", f"id: {fanout_hub(n)},").replace(
                "Cell,", f"Cell {n + 1},"))
    for n in range(subscribers):
        (target / "agreements" / f"bench-hub-{n + 1:02d}.yaml").write_text(
            HUB_AGREEMENT.replace("agreement: bench-hub", f"agreement: bench-hub-{n + 1:02d}").replace(
                f"subscriber: {HUB}", f"subscriber: {fanout_hub(n)}").replace(f"body: {HUB}", f"body: {fanout_hub(n)}"))
    return target


def fanout_topics(subscribers: int = FANOUT) -> list[str]:
    return [delivery_topic(fanout_hub(n), "dph", T1) for n in range(subscribers)]


def dph_only_catalog(directory: Path) -> Path:
    """The shipped catalog with each T1 agreement narrowed to its DPH tier (as the template has it): ten
    subscribers, one delivery per record."""
    target = directory / "catalog-dph"
    shutil.copytree(REPO_ROOT / "catalog", target)
    for path in (target / "agreements").glob("t1-*.yaml"):
        path.write_text(path.read_text() + DPH_TIER)
    return target


BENCH_OPERATOR = Actor(SERVICE_BODY, OPERATOR_ROLE, "benchmark")


@dataclass
class Bench:
    """The running stack and the clients every scenario shares."""

    endpoints: Endpoints
    state_dir: Path
    schema: dict[str, Any]
    engine: OpaPolicyEngine
    writer: ControlWriter
    records: list[tuple[bytes, bytes]] = field(default_factory=list)  # measured (key, value) pairs, for all
    warmup: list[tuple[bytes, bytes]] = field(default_factory=list)  # warm-up pairs, the same for all

    @property
    def kafka(self) -> KafkaAccess:
        return self.endpoints.kafka

    @property
    def tokens(self) -> ServiceTokens:
        """The bench's service token for the registry (its stack's secrets)."""
        return ServiceTokens(self.state_dir / "secrets", "benchmark")

    @property
    def gate_endpoints(self) -> GateEndpoints:
        return GateEndpoints(self.endpoints.kafka, self.endpoints.opa_url, self.endpoints.registry_url)

    def settings(self, group: str, start_from: Literal["earliest", "latest"], residence: bool = True) -> Settings:
        return Settings(state_dir=self.state_dir, gate_group=group, gate_start_from=start_from,
                        residence_lookup=None if residence else "off")

    def apply(self, catalog_dir: Path) -> dict[str, Any]:
        document = load_and_compile(catalog_dir, REPO_ROOT / "schemas")
        policy_changes.apply_catalog(self.writer, self.engine, document, by=BENCH_OPERATOR)
        return document


@contextmanager
def local_bench(state_dir: Path) -> Iterator[Bench]:
    """Kafka, OPA, registry and API in `state_dir` (the stack's own gate stopped), wiped afterwards.

    ACCORD_STATE_DIR points at it meanwhile, so the benchmark's clients and the processes it spawns use the stack's
    secrets: the registry client's service token, the gate workers' OPA token and pseudonym secret.
    """
    stack = LocalStack(Settings(state_dir=state_dir))
    before = os.environ.get("ACCORD_STATE_DIR")
    os.environ["ACCORD_STATE_DIR"] = str(state_dir)
    try:
        endpoints = stack.up()
        stack.gate.stop()  # only the benchmark's gate workers run
        ensure_stream_topics(endpoints.kafka, load_stream_schemas(REPO_ROOT / "schemas"), REPO_ROOT / "catalog")
        ensure_control_topics(endpoints.kafka)
        engine = opa_engine(endpoints.opa_url, Settings(state_dir=state_dir), WRITER)
        # Signed with the stack's control key, as its governance service signs: the gate workers trust only that.
        writer = ControlWriter(endpoints.kafka, client_id="bench-control",
                               signer=ControlSigner(control_signing_key(state_dir / "secrets")))
        schema = json.loads((REPO_ROOT / "schemas" / f"{T1}.avsc").read_text())
        try:
            yield Bench(endpoints, state_dir, schema, engine, writer)
        finally:
            writer.close()
            engine.close()
    finally:
        stack.down(wipe=True)
        if before is None:
            os.environ.pop("ACCORD_STATE_DIR", None)
        else:
            os.environ["ACCORD_STATE_DIR"] = before


@contextmanager
def frozen_heap() -> Iterator[None]:
    """The heap frozen as `accord gate serve` freezes it once its workers have started; unfrozen afterwards, so the
    next scenario's gate starts from the benchmark's own heap again."""
    freeze_startup_heap()
    try:
        yield
    finally:
        gc.unfreeze()


def group(name: str) -> str:
    return f"bench-{name}-{uuid.uuid4().hex[:8]}"


def encoded_cases(bench: Bench, n: int, prefix: str, seed: int = 2020) -> list[tuple[bytes, bytes]]:
    """`n` synthetic T1 cases spread evenly over the ten councils' places, Confluent-framed Avro, key = utla.

    Every case has an NHS number: Nottinghamshire's agreement refuses rows without one (its required fields), and
    the scenarios count one delivery per record and subscription.
    """
    day = dt.datetime.now(dt.UTC).date() - dt.timedelta(days=3)
    registry = HttpSchemaRegistry(bench.endpoints.registry_url, token=bench.tokens)
    try:
        encode = AvroSerializer(registry, json.dumps(bench.schema))
        ctx = SerializationContext(INGEST)
        out = []
        for i, case in enumerate(spread(day, n, list(COUNCILS.values()), prefix=prefix, seed=seed)):
            payload = encode({**case, "nhs_number": case["nhs_number"] or nhs_number(i)}, ctx)
            assert payload is not None
            out.append((case["utla"].encode(), payload))
        return out
    finally:
        registry.close()


def prefill(bench: Bench, records: list[tuple[bytes, bytes]]) -> None:
    """Publish `records` onto the ingest topic, acknowledged."""
    producer = KafkaProducer(**bench.kafka.client_options(), client_id="bench-prefill", acks="all",
                             enable_idempotence=True, linger_ms=20, batch_size=512 * 1024)
    try:
        for key, value in records:
            producer.send(INGEST, value=value, key=key)
        producer.flush(timeout=120)
    finally:
        producer.close()


def committed_ends(kafka: KafkaAccess, topics: list[str]) -> dict[str, int]:
    """Where committed records end in each topic (partition 0; 0 for a topic not created yet)."""
    consumer = KafkaConsumer(**kafka.client_options(), group_id=None, isolation_level="read_committed")
    try:
        found = {topic: 0 for topic in topics}
        tps = [TopicPartition(t, 0) for t in topics if consumer.partitions_for_topic(t)]
        found |= {tp.topic: int(offset) for tp, offset in consumer.end_offsets(tps).items()}
        return found
    finally:
        consumer.close()


def count_committed(kafka: KafkaAccess, starts: Mapping[str, int], idle_s: float = 3.0) -> dict[str, int]:
    """How many committed records each single-partition topic holds after `starts`, as a subscriber reads them
    (the offsets between also hold the transactions' commit markers)."""
    consumer = KafkaConsumer(**kafka.client_options(), group_id=None, isolation_level="read_committed",
                             enable_auto_commit=False, max_poll_records=5000)
    try:
        counts = dict.fromkeys(starts, 0)
        tps = [TopicPartition(t, 0) for t in starts if consumer.partitions_for_topic(t)]
        if not tps:
            return counts
        consumer.assign(tps)
        for tp in tps:
            consumer.seek(tp, starts[tp.topic])
        ends = consumer.end_offsets(tps)
        quiet_since = time.monotonic()
        while any(consumer.position(tp) < ends[tp] for tp in tps) and time.monotonic() - quiet_since < idle_s:
            batches = consumer.poll(timeout_ms=200)
            for tp, messages in batches.items():
                counts[tp.topic] += len(messages)
            if batches:
                quiet_since = time.monotonic()
        return counts
    finally:
        consumer.close()


@dataclass(frozen=True)
class Timing:
    records: int  # measured records consumed inside the timed window
    seconds: float
    warmup_records: int
    warmup_seconds: float  # from the first warm-up poll to its last commit: cold start included

    @property
    def rate(self) -> float:
        return self.records / self.seconds


def timed(bench: Bench, step: Callable[[], int], ready: Callable[[], bool], warmup: list[tuple[bytes, bytes]],
          measured: list[tuple[bytes, bytes]], timeout_s: float = 300.0) -> Timing:
    """Run a consume-process-commit loop (`step` does one batch and returns its size) over records of its own.

    The loop's consumer group starts at the end of the ingest topic. Once its partitions are assigned (`ready`),
    the warm-up records are published and consumed: first fetches, schema look-ups and registrations, the
    producer's metadata for each output topic. Then, with the loop paused, the measured records are published, and
    the clock runs from the first poll after that until the batch holding the last of them is committed.
    """
    deadline = time.monotonic() + timeout_s
    while not ready():
        if step() or time.monotonic() > deadline:
            raise RuntimeError("the consumer was not ready in time, or consumed records before its start")
    prefill(bench, warmup)
    warm_start = time.perf_counter()
    warm = _consume(step, len(warmup), deadline)
    warm_s = time.perf_counter() - warm_start
    prefill(bench, measured)
    start = time.perf_counter()
    done = _consume(step, len(measured), deadline)
    return Timing(done, time.perf_counter() - start, warm, warm_s)


def _consume(step: Callable[[], int], total: int, deadline: float) -> int:
    done = 0
    while done < total:
        if time.monotonic() > deadline:
            raise RuntimeError(f"only {done} of {total} records consumed in time")
        done += step()
    if done != total:
        raise RuntimeError(f"consumed {done} records where {total} were published: another writer on the topic?")
    return done
