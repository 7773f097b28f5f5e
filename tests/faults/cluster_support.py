"""A three-broker stack for fault tests, a publisher that knows what was acknowledged, and a read_committed counter
of what was delivered, by key."""

from __future__ import annotations

import contextlib
import shutil
import threading
import time
from collections import Counter
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from kafka import KafkaAdminClient, KafkaConsumer, TopicPartition
from kafka.errors import KafkaError

from broker.adapters.kafka_access import KafkaAccess
from broker.adapters.kafka_log import KafkaLog
from broker.adapters.registry_http import HttpSchemaRegistry
from broker.catalog import load_and_compile
from broker.config import Settings
from broker.demo.synthetic import spread
from broker.domain.messages import Outgoing
from broker.domain.topics import ingest_topic
from broker.errors import ServiceError
from broker.local import kafka_server, processes
from broker.local.stack import Endpoints, LocalStack
from broker.security.api_tokens import ServiceTokens
from broker.services import policy_changes
from broker.services.gate import SOURCE_HEADER
from broker.services.serde import AvroSerializer, SerializationContext
from tests.conftest import TEST_OPERATOR, control_writer, opa_as
from tests.integration.gate_support import T1, specimen_day, topic_for

BROKERS = 3
GATE_TRANSPORT = "librdkafka"
# T1's subscribers by area: each row goes to the DPH of its council (Blaby's and Charnwood's to the county's).
COUNCILS = {"leicester": "leicester-city-council", "nottingham": "nottingham-city-council",
            "blaby": "leicestershire-county-council", "charnwood": "leicestershire-county-council",
            "manchester": "manchester-city-council", "birmingham": "birmingham-city-council",
            "leeds": "leeds-city-council", "hackney": "hackney-council", "cornwall": "cornwall-council",
            "blackburn": "blackburn-with-darwen-council"}
DPH_TOPICS = sorted({topic_for(body, "dph") for body in COUNCILS.values()})


@dataclass
class Cluster:
    """A running `accord local up --brokers 3` of a temporary state directory."""

    stack: LocalStack
    endpoints: Endpoints

    @property
    def kafka(self) -> KafkaAccess:
        return self.endpoints.kafka

    def pid(self, node: int) -> int:
        pid = self.stack.kafka_cluster.pid(node)
        assert pid is not None and processes.alive(pid, kafka_server.MARKER), f"kafka-{node} is not running"
        return pid

    def leader_of(self, topic: str, partition: int) -> int:
        return int(_describe(self.kafka, [topic])[topic][partition]["leader_id"])


HOLD_S = 6 * 3600.0    # longer than any run of the cluster tests


@contextlib.contextmanager
def three_brokers(state: Path) -> Iterator[Cluster]:
    """`accord local up --brokers 3` in `state` (this process's Settings() point there too), the shipped catalog
    applied and its gate worker delivering; everything stopped and wiped after."""
    settings = Settings(state_dir=state, kafka_brokers=BROKERS, kafka_heap="512m", start_timeout_s=240)
    stack = LocalStack(settings)
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("ACCORD_STATE_DIR", str(state))
        # The gate's data path on librdkafka: kafka-python's transactional producer (3.0) was seen asking a killed
        # broker for its transaction coordinator for minutes, the gate's commit blocked meanwhile.
        patch.setenv("ACCORD_GATE_TRANSPORT", GATE_TRANSPORT)
        try:
            endpoints = stack.up()
            # Not needed here, and each takes a share of a busy machine's two cores.
            stack.governance.stop()
            stack.console.stop()
            _apply_catalog(settings, endpoints)
            # The supervisor, as `accord local up` runs it: a gate worker whose process ended (as it does when its
            # transactions were fenced) is started again. The brokers are the tests' to kill and restart, and the
            # services stopped above stay stopped.
            for name in ("kafka", "governance", "console"):
                stack.supervisor.hold(name, HOLD_S)
            stack.supervisor.start({"ACCORD_STATE_DIR": str(state)})
            yield Cluster(stack, endpoints)
        finally:
            # The services' logs outlive the wiped state (pytest keeps its last few temporary directories).
            for log in state.glob("*/logs/*.log"):
                shutil.copy(log, state.parent / f"{state.name}-{log.name}")
            stack.down(wipe=True)


def _apply_catalog(settings: Settings, endpoints: Endpoints) -> None:
    document = load_and_compile(settings.catalog_dir, settings.schemas_dir)
    engine, writer = opa_as(endpoints.opa_url), control_writer(endpoints.kafka, client_id="test-cluster-catalog")
    try:
        policy_changes.apply_catalog(writer, engine, document, by=TEST_OPERATOR)
    finally:
        engine.close()
        writer.close()


def cases(prefix: str, total: int) -> list[dict[str, Any]]:
    """`total` positive tests spread over the councils, each specimen id starting with `prefix`."""
    return spread(specimen_day(), total, list(COUNCILS), prefix=prefix)


def encode(cluster: Cluster, records: Sequence[dict[str, Any]]) -> list[Outgoing]:
    """The records as a publisher's Kafka client sends them to T1's ingest topic, keyed by specimen id (the key
    the gate gives each delivery, so deliveries are counted by key)."""
    settings = Settings()
    topic = ingest_topic(T1)
    registry = HttpSchemaRegistry(cluster.endpoints.registry_url,
                                  token=ServiceTokens(settings.secrets_dir, "test-cluster-publisher"))
    try:
        serialize = AvroSerializer(registry, (settings.schemas_dir / f"{T1}.avsc").read_text())
        return [Outgoing(topic, serialize(r, SerializationContext(topic)) or b"", str(r["specimen_id"]).encode())
                for r in records]
    finally:
        registry.close()


@dataclass
class Publisher:
    """Publishes records in chunks with acks=all (Accord's KafkaLog), at most `rate` a second; remembers the keys
    Kafka acknowledged, and when each chunk was sent and acknowledged. Never sends a record twice: a chunk that
    fails is counted as unacknowledged (its records may or may not be in Kafka)."""

    kafka: KafkaAccess
    records: Sequence[Outgoing]
    rate: float
    chunk: int = 500
    acknowledged: set[bytes] = field(default_factory=set)
    # Where each acknowledged record landed ("topic/partition/offset", the gate's `accord.source` header on each of
    # its deliveries) → its key: deliveries are keyed by area, so a delivery names its record by this header.
    sources: dict[bytes, bytes] = field(default_factory=dict)
    unacknowledged: set[bytes] = field(default_factory=set)
    chunks: list[tuple[float, float]] = field(default_factory=list)  # (sent, acknowledged), wall clock
    errors: list[str] = field(default_factory=list)
    _thread: threading.Thread | None = None

    def start(self) -> Publisher:
        self._thread = threading.Thread(target=self._run, name="test-cluster-publisher", daemon=True)
        self._thread.start()
        return self

    def _run(self) -> None:
        log = KafkaLog(self.kafka, client_id="test-cluster-publisher")
        began = time.monotonic()
        try:
            for first in range(0, len(self.records), self.chunk):
                batch = self.records[first:first + self.chunk]
                ahead = began + first / self.rate - time.monotonic()
                if ahead > 0:
                    time.sleep(ahead)
                sent = time.time()
                try:
                    placed = log.publish_all(batch, timeout_s=180.0)
                except ServiceError as exc:
                    self.errors.append(str(exc))
                    self.unacknowledged.update(r.key or b"" for r in batch)
                    log.close()  # a fresh producer: the failed one's sequence state is not reused
                    continue
                self.chunks.append((sent, time.time()))
                self.acknowledged.update(r.key or b"" for r in batch)
                self.sources.update((f"{r.topic}/{partition}/{offset}".encode(), r.key or b"")
                                    for r, (partition, offset) in zip(batch, placed, strict=True))
        finally:
            log.close()

    def delivered(self, counts: Counter[bytes]) -> Counter[bytes]:
        """A counter's deliveries of this publisher's acknowledged records (counted by source), by record key."""
        return Counter({self.sources[source]: n for source, n in counts.items() if source in self.sources})

    @property
    def done(self) -> int:
        return len(self.acknowledged) + len(self.unacknowledged)

    def wait_for(self, count: int, timeout_s: float) -> None:
        deadline = time.monotonic() + timeout_s
        while self.done < count:
            assert self._thread is not None and self._thread.is_alive(), "the publisher stopped early"
            assert time.monotonic() < deadline, f"only {self.done} of {count} records published"
            time.sleep(0.1)

    def join(self, timeout_s: float) -> None:
        assert self._thread is not None
        self._thread.join(timeout_s)
        assert not self._thread.is_alive(), f"publishing did not end within {timeout_s:.0f}s"


class DeliveryCounter:
    """Reads the delivery topics read_committed from their ends at creation, in a thread of its own, and counts the
    deliveries of each source record (their `accord.source` header: deliveries are keyed by area, not by record);
    notes when each was first read and the gate's timestamp on it (when the gate produced it).

    A consumer that has read nothing for `idle_s` is replaced by a fresh one at the same positions: kafka-python's
    consumer was seen fetching from a killed leader for minutes (its metadata not refreshed), and the count must
    not depend on that.
    """

    def __init__(self, kafka: KafkaAccess, topics: Sequence[str], idle_s: float = 3.0) -> None:
        self.counts: Counter[bytes] = Counter()  # by source record ("topic/partition/offset")
        self.seen: list[tuple[float, float]] = []  # (read at, produced at) per delivery, wall clock
        self.replaced = 0
        self._kafka, self._idle_s = kafka, idle_s
        self._stop = threading.Event()
        self._lock = threading.Lock()
        self._consumer = self._new_consumer()
        partitions = [TopicPartition(t, p) for t in topics for p in sorted(self._consumer.partitions_for_topic(t)
                                                                            or ())]
        if len({tp.topic for tp in partitions}) != len(topics):
            self._consumer.close()
            raise AssertionError("a delivery topic does not exist yet")
        self._positions = {tp: int(end) for tp, end in self._consumer.end_offsets(partitions).items()}
        self._assign()
        self._thread = threading.Thread(target=self._run, name="test-cluster-counter", daemon=True)

    def _new_consumer(self) -> KafkaConsumer:
        return KafkaConsumer(**self._kafka.client_options(), group_id=None, client_id="test-cluster-counter",
                             isolation_level="read_committed", enable_auto_commit=False)

    def _assign(self) -> None:
        self._consumer.assign(list(self._positions))
        for tp, offset in self._positions.items():
            self._consumer.seek(tp, offset)

    def start(self) -> DeliveryCounter:
        self._thread.start()
        return self

    def _run(self) -> None:
        last_read = time.monotonic()
        while not self._stop.is_set():
            polled = self._consumer.poll(timeout_ms=200, max_records=5000)
            now = time.time()
            with self._lock:
                for tp, batch in polled.items():
                    for message in batch:
                        self._positions[tp] = message.offset + 1
                        source = dict(message.headers or ()).get(SOURCE_HEADER)
                        if source is not None:
                            self.counts[source] += 1
                            self.seen.append((now, message.timestamp / 1000.0))
            if polled:
                last_read = time.monotonic()
            elif time.monotonic() - last_read > self._idle_s:
                self._consumer.close()
                self._consumer = self._new_consumer()
                self._assign()
                self.replaced += 1
                last_read = time.monotonic()
        self._consumer.close()

    def wait_for(self, keys: set[bytes], timeout_s: float, settle_s: float = 5.0) -> None:
        """Until a delivery of every source record of `keys` has been read (or `timeout_s` passed), then `settle_s`
        more, so that a late duplicate would be counted too."""
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            with self._lock:
                if keys <= self.counts.keys():
                    break
            time.sleep(0.5)
        time.sleep(settle_s)

    def first_read_after(self, produced_after: float) -> float | None:
        """When the first delivery the gate produced after `produced_after` was read committed."""
        with self._lock:
            return min((read for read, produced in self.seen if produced > produced_after), default=None)

    def close(self) -> None:
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(timeout=30)
        else:
            self._consumer.close()


def _describe(kafka: KafkaAccess, topics: Sequence[str] | None = None) -> dict[str, list[dict[str, Any]]]:
    """Each topic's partitions (leader, replicas, in-sync replicas), by partition number."""
    admin = KafkaAdminClient(**kafka.client_options(), client_id="test-cluster-admin")
    try:
        described = admin.describe_topics(list(topics) if topics is not None else None)
    finally:
        admin.close()
    return {t["name"]: sorted(t["partitions"], key=lambda p: int(p["partition_index"])) for t in described}


def under_replicated(kafka: KafkaAccess) -> list[str]:
    """The partitions of every topic of the cluster whose in-sync replicas are fewer than their replicas."""
    found = []
    for topic, partitions in _describe(kafka).items():
        found += [f"{topic}/{p['partition_index']}" for p in partitions
                  if len(p["isr_nodes"]) < len(p["replica_nodes"])]
    return found


def wait_in_sync(kafka: KafkaAccess, timeout_s: float) -> float:
    """Until every partition of the cluster has all its replicas in sync; the seconds that took."""
    began = time.monotonic()
    while True:
        try:
            lagging = under_replicated(kafka)
        except KafkaError as exc:  # a broker may still be electing leaders: ask again
            lagging = [repr(exc)]
        if not lagging:
            return time.monotonic() - began
        assert time.monotonic() - began < timeout_s, f"still not in sync after {timeout_s:.0f}s: {lagging[:5]}"
        time.sleep(0.25)


def replication(kafka: KafkaAccess) -> dict[str, tuple[set[int], str]]:
    """Each topic's replica counts and its effective min.insync.replicas (broker defaults included)."""
    from confluent_kafka.admin import AdminClient
    from confluent_kafka.admin._config import ConfigResource

    topics = _describe(kafka)
    admin = AdminClient(dict(kafka.librdkafka_options()))
    futures = admin.describe_configs([ConfigResource("topic", name) for name in topics])
    found = {}
    for resource, future in futures.items():
        config = future.result(timeout=30)
        found[resource.name] = ({len(p["replica_nodes"]) for p in topics[resource.name]},
                                str(config["min.insync.replicas"].value))
    return found
