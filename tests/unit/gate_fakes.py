"""In-memory stand-ins for the gate's ports (a transactional stage, the control topic) and a policy engine that asks
Accord's real policies."""

from __future__ import annotations

import copy
import datetime as dt
import json
import threading
from collections import deque
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from broker.adapters.registry_memory import InMemorySchemaRegistry
from broker.catalog import revision_of
from broker.demo.synthetic import positive_tests
from broker.domain.audit import key_id
from broker.domain.control_signing import sign
from broker.domain.geography import LaTable
from broker.domain.geography_files import load_la_table
from broker.domain.messages import ControlRecord, Evaluation, Record
from broker.domain.residence import ResidenceTable
from broker.domain.topics import AUDIT_TOPIC, CONTROL_TOPIC, ingest_topic
from broker.errors import PolicyEngineError, ServiceError
from broker.services.backfill import BackfillLogSource, HistorySource
from broker.services.gate import (
    AuditAppender,
    Gate,
    GateCounters,
    GateParts,
    OptOutSource,
    TransactionBounds,
    WithheldCounter,
)
from broker.services.planner import PLAN_RULE, Planner
from broker.services.serde import AvroDeserializer, AvroSerializer, SerializationContext
from tests.unit.policy_server import policy_server

T1 = "ukhsa.positive-tests"
T1_SCHEMA: dict[str, Any] = json.loads(
    (Path(__file__).resolve().parents[2] / "schemas/ukhsa.positive-tests.avsc").read_text(encoding="utf-8"))
INGEST = ingest_topic(T1)
LA_TABLE: LaTable = load_la_table()
SPECIMEN_DAY = dt.date(2020, 6, 24)
START = dt.datetime(2020, 6, 26, 9, 0, tzinfo=dt.UTC)


# -- the stage ---------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Sent:
    topic: str
    value: bytes | None
    key: bytes | None
    headers: dict[str, bytes]


@dataclass
class Transaction:
    sent: list[Sent] = field(default_factory=list)
    consumed: list[Record] = field(default_factory=list)
    outcome: str = "open"  # then "committed" or "aborted"
    audit: list[Sent] = field(default_factory=list)  # what was sent to the audit topic, kept apart from `sent`
    flushed: int = 0  # how many sends the last flush covered: only their placements are known
    fenced: bool = False  # committed with every assigned partition's position


class FakeStage:
    """Queued batches in, transactions out; `after_poll` runs once a batch is handed over (a concurrent writer).

    Every send takes the topic's next offset (partition 0), aborted or not, as on a real broker; a send's placement
    may be read only once a flush covered it.
    """

    def __init__(self) -> None:
        self.batches: deque[list[Record]] = deque()
        self.calls: list[str] = []
        self.transactions: list[Transaction] = []
        self.after_poll: Callable[[], None] | None = None
        self.fail_on_send: int | None = None  # the n-th send of a transaction raises, as a lost broker would
        self.offsets: dict[str, int] = {}
        self.assigned: dict[tuple[str, int], int] = {}  # (ingest topic, partition) -> position
        self.subscriptions: list[tuple[list[str], list[str]]] = []  # (topics, from_start) of each subscribe()

    def queue(self, *records: Record) -> None:
        self.batches.append(list(records))

    def poll(self, timeout_s: float, max_records: int | None = None) -> list[Record]:
        self.calls.append("poll")
        batch = self.batches.popleft() if self.batches else []
        if self.after_poll is not None:
            self.after_poll()
        return batch

    def subscribe(self, topics: Any, from_start: Any = ()) -> None:
        self.calls.append("subscribe")
        assert self._open() is None, "subscribe() inside an open transaction"
        self.subscriptions.append((list(topics), list(from_start)))

    def begin(self) -> None:
        self.calls.append("begin")
        assert self._open() is None, "begin() inside an open transaction"
        self.transactions.append(Transaction())

    def send(self, topic: str, value: bytes | None, key: bytes | None = None,
             headers: Any = ()) -> Callable[[], tuple[int, int]]:
        self.calls.append("send")
        transaction = self._open()
        assert transaction is not None, f"send to {topic} outside a transaction"
        if self.fail_on_send is not None and len(transaction.sent) + 1 >= self.fail_on_send:
            raise ServiceError(f"producing to {topic} failed")
        (transaction.audit if topic == AUDIT_TOPIC else transaction.sent).append(Sent(topic, value, key,
                                                                                     dict(headers)))
        offset = self.offsets[topic] = self.offsets.get(topic, -1) + 1
        number = len(transaction.sent) + len(transaction.audit)

        def placed() -> tuple[int, int]:
            assert transaction.flushed >= number, f"the offset of a send to {topic} was read before a flush"
            return 0, offset
        return placed

    def flush(self) -> None:
        self.calls.append("flush")
        transaction = self._open()
        if transaction is not None:
            transaction.flushed = len(transaction.sent) + len(transaction.audit)

    def positions(self) -> dict[tuple[str, int], int]:
        return dict(self.assigned)

    def commit(self, consumed: Any, fenced: bool = False) -> None:
        self.calls.append("commit")
        transaction = self._open()
        assert transaction is not None, "commit() without a transaction"
        transaction.consumed, transaction.outcome, transaction.fenced = list(consumed), "committed", fenced

    def abort(self) -> None:
        self.calls.append("abort")
        transaction = self._open()
        if transaction is not None:
            transaction.outcome = "aborted"

    def committed(self) -> list[Sent]:
        return [s for t in self.transactions if t.outcome == "committed" for s in t.sent]

    def aborted(self) -> list[Sent]:
        return [s for t in self.transactions if t.outcome == "aborted" for s in t.sent]

    def audited(self, outcome: str = "committed") -> list[dict[str, Any]]:
        """The audit records sent in transactions that ended so, as (key decoded) → body pairs in a dict each."""
        return [{"kind": (s.key or b"").decode(), **json.loads(s.value or b"")}
                for t in self.transactions if t.outcome == outcome for s in t.audit]

    def _open(self) -> Transaction | None:
        return self.transactions[-1] if self.transactions and self.transactions[-1].outcome == "open" else None


# -- the control topic ----------------------------------------------------------------------------------
CONTROL_KEY = Ed25519PrivateKey.generate()  # the governance service's control-signing key, for these tests
CONTROL_PUBLIC = CONTROL_KEY.public_key()


def trusted(ident: str) -> Ed25519PublicKey | None:
    """The gate's trusted keys: CONTROL_KEY's public key only."""
    return CONTROL_PUBLIC if ident == key_id(CONTROL_PUBLIC) else None


class FakeControl:
    """The control topic; like ControlReader it keeps a position, so `read_to` returns only records not read yet.

    `append` writes as the governance service does, signed with CONTROL_KEY and stamped by the broker at
    `timestamp_ms`; `append_record` writes whatever a test forges."""

    def __init__(self) -> None:
        self.records: list[ControlRecord] = []
        self.end = 0
        self.position = 0

    def append(self, key: str, value: dict[str, Any] | None, timestamp_ms: int | None = None,
               signer: Ed25519PrivateKey | None = CONTROL_KEY) -> int:
        at_ms = 1_000 * (self.end + 1) if timestamp_ms is None else timestamp_ms
        payload = None if value is None else json.dumps(value).encode()
        headers = () if signer is None else tuple(
            sign(signer, CONTROL_TOPIC, key, payload, at_ms * 1000 + self.end).headers())
        return self.append_record(key, payload, at_ms, headers)

    def append_record(self, key: str, payload: bytes | None, timestamp_ms: int,
                      headers: tuple[tuple[str, bytes], ...] = (), broker_stamped: bool = True) -> int:
        offset = self.end
        self.records.append(ControlRecord(offset, key, payload, timestamp_ms, CONTROL_TOPIC, headers,
                                          broker_stamped))
        self.end += 1
        return offset

    def append_catalog(self, document: Mapping[str, Any]) -> int:
        return self.append("catalog", {"kind": "catalog", "revision": document["revision"], "document": document})

    def end_offset(self) -> int:
        return self.end

    def read_to(self, end: int, timeout_s: float = 10.0) -> list[ControlRecord]:
        found = [r for r in self.records if self.position <= r.offset < end]
        self.position = max(self.position, end)
        return found


# -- the policy engine ------------------------------------------------------------------------------------
class FakePolicyEngine:
    """The PolicyEngine port answered by Accord's real policies (a session's OPA, tests/unit/policy_server.py) over
    this engine's own data; only the engine's data store and its faults are simulated.

    `failure` makes every evaluation raise; `read_only` ignores put_data (another writer owns OPA's data); `stop()`
    and `restart()` take it down and bring it back empty of data.
    """

    def __init__(self) -> None:
        self.data: dict[str, dict[str, Any]] = {}
        self.requests: list[tuple[str, dict[str, Any]]] = []
        self.failure: Exception | None = None
        self.read_only = False
        self.decisions = 0
        self.down = False  # stopped, or refusing its bundle: not ready, and every call fails as OPA's would
        self.health_checks = 0

    def ready(self) -> bool:
        self.health_checks += 1
        return not self.down

    def stop(self) -> None:
        self.down = True

    def restart(self) -> None:
        """Back with its bundle's policies but none of the data written over REST, as a restarted OPA is."""
        self.down, self.data = False, {}

    def put_data(self, path: str, document: Mapping[str, Any]) -> None:
        if self.down:
            raise PolicyEngineError("OPA unreachable")
        if not self.read_only:
            self.data[path] = copy.deepcopy(dict(document))

    def evaluate(self, rule: str, input_doc: Mapping[str, Any]) -> Any:
        self.requests.append((rule, copy.deepcopy(dict(input_doc))))
        if self.failure is not None:
            raise self.failure
        if self.down:
            raise PolicyEngineError("OPA unreachable")
        return policy_server().evaluate(rule, input_doc, self.data)

    def evaluate_with_id(self, rule: str, input_doc: Mapping[str, Any]) -> Evaluation:
        result = self.evaluate(rule, input_doc)
        self.decisions += 1
        return Evaluation(result, f"decision-{self.decisions}")

    def plan_requests(self) -> list[dict[str, Any]]:
        return [request for rule, request in self.requests if rule == PLAN_RULE]


class HeldRefresh(FakePolicyEngine):
    """Questions asked on a gate's refresh thread wait until `release` is set; others are answered at once."""

    def __init__(self) -> None:
        super().__init__()
        self.release = threading.Event()
        self.refresh_asked = threading.Event()

    def evaluate(self, rule: str, input_doc: Mapping[str, Any]) -> Any:
        if threading.current_thread().name.endswith("-refresh"):
            self.refresh_asked.set()
            assert self.release.wait(10), "the test never released the refresh"
        return super().evaluate(rule, input_doc)


# -- a small compiled catalog -------------------------------------------------------------------------------
def keep() -> dict[str, Any]:
    return {"transform": "keep", "method": None, "as": None, "params": {}}


DPH_TIER: dict[str, Any] = {"name": "dph", "roles": ["dph"], "other_fields": "keep", "fields": {"nhs_number": keep()}}
ANALYST_TIER: dict[str, Any] = {
    "name": "analyst", "roles": ["analyst"], "other_fields": "drop",
    "fields": {"lsoa": keep(), "sex": keep(),
               "dob": {"transform": "generalise", "method": "age-band", "as": "age_band",
                       "params": {"at": "specimen_date"}}},
}


def agreement(subscriber: str, area: str, *tiers: dict[str, Any], purpose: str = "health-protection",
              valid_until: str = "2022-06-30T00:00:00Z", level: str = "normal") -> dict[str, Any]:
    return {
        "template": None, "publisher": "ukhsa", "subscriber": subscriber, "stream": T1, "purpose": purpose,
        "legal_basis": ["copi-reg-3-4", "uk-gdpr-6-1-e", "uk-gdpr-9-2-i"], "tiers": list(tiers or [DPH_TIER]),
        "row_scope": {"areas": sorted(LA_TABLE.areas_served(area))},
        "valid_from": "2020-03-20T00:00:00Z", "valid_until": valid_until, "review_date": "2020-09-30",
        "emergency_level_required": level, "signatories": [],
    }


def catalog_document(**agreements: dict[str, Any]) -> dict[str, Any]:
    """Leicester (dph + analyst), Nottingham and Leicestershire county (dph), plus `agreements` by id."""
    fields = {f["name"]: {"tags": list(f.get("accord.tags", []))} for f in T1_SCHEMA["fields"]}
    document: dict[str, Any] = {
        "la_vintage": LA_TABLE.vintage,
        "bodies": {},
        "streams": {T1: {"owner": "ukhsa", "subject": f"{INGEST}-value", "classification": "special-category",
                         "jurisdiction": ["utla", "ltla"], "fields": fields}},
        "agreements": {
            "t1-leicester": agreement("leicester-city-council", "E06000016", DPH_TIER, ANALYST_TIER),
            "t1-nottingham": agreement("nottingham-city-council", "E06000018"),
            "t1-leicestershire": agreement("leicestershire-county-council", "E10000018"),
            **agreements,
        },
    }
    return {"revision": revision_of(document), **document}


# -- a gate wired to the fakes --------------------------------------------------------------------------------
def rotated_master(version: int) -> bytes:
    """The unit tests' master secret of pseudonym key `version` (2 and later)."""
    return f"unit-test-pseudonym-master-v{version}".encode()



class FakeClock:
    def __init__(self, now: dt.datetime = START) -> None:
        self.now = now

    def __call__(self) -> dt.datetime:
        return self.now


@dataclass
class GateHarness:
    gate: Gate
    stage: FakeStage
    control: FakeControl
    engine: FakePolicyEngine
    registry: InMemorySchemaRegistry
    clock: FakeClock
    statuses: list[dict[str, Any]]
    ensured: dict[str, int]  # delivery topics the gate made, with their partitions
    serialize: AvroSerializer
    decisions: list[dict[str, Any]]  # policy-decision audit records, as the gate wrote them

    def record(self, offset: int, place: str = "leicester", **changes: Any) -> Record:
        """A synthetic T1 case of `place`, Confluent-framed as ingest writes it, at `offset` of partition 0."""
        value = {**positive_tests(SPECIMEN_DAY, {place: 1}, seed=offset)[0], **changes}
        return self.raw(offset, self.serialize(value, SerializationContext(INGEST)))

    def raw(self, offset: int, value: bytes | None) -> Record:
        return Record(INGEST, 0, offset, f"key-{offset}".encode(), value, ())

    def delivered(self, topic: str) -> list[Sent]:
        return [s for s in self.stage.committed() if s.topic == topic]

    def decode(self, sent: Sent) -> dict[str, Any] | None:
        return AvroDeserializer(self.registry)(sent.value, SerializationContext(sent.topic))


def make_gate(document: Mapping[str, Any] | None = None, clock: FakeClock | None = None,
              replan_every_s: float = 10.0, residence: ResidenceTable | None = None,
              audit: AuditAppender | None = None, counters: GateCounters | None = None,
              optout: OptOutSource | None = None, optout_key: bytes = b"\0" * 16,
              withheld: WithheldCounter | None = None,
              history: HistorySource | None = None, backfill_log: BackfillLogSource | None = None,
              worker: str = "worker-1", stage: FakeStage | None = None,
              registry: InMemorySchemaRegistry | None = None,
              bounds: TransactionBounds | None = None,
              adopt_stream: Callable[[str, Mapping[str, Any]], Mapping[str, Any] | None] | None = None,
              engine: FakePolicyEngine | None = None, refresh_in_background: bool = False
              ) -> GateHarness:
    """A gate over T1 whose control topic holds `document` (default: catalog_document()); not started yet."""
    control, engine, registry = FakeControl(), engine or FakePolicyEngine(), registry or InMemorySchemaRegistry()
    stage = stage or FakeStage()
    clock = clock or FakeClock()
    statuses: list[dict[str, Any]] = []
    ensured: dict[str, int] = {}
    decisions: list[dict[str, Any]] = []
    control.append_catalog(document or catalog_document())
    parts = GateParts(stage=stage, control=control, control_keys=trusted, planner=Planner(engine, check_every_s=0),
                      registry=registry,
                      schemas={T1: T1_SCHEMA}, la_table=LA_TABLE, pseudonym_secret=b"unit-test-pseudonym-secret",
                      ensure_topics=ensured.update, status=lambda worker, status: statuses.append(status),
                      audit=audit or (lambda kind, record: decisions.append({"kind": kind, **record})),
                      residence=residence, pseudonym_masters=rotated_master, optout=optout,
                      optout_key=optout_key, withheld=withheld, history=history, backfill_log=backfill_log,
                      adopt_stream=adopt_stream)
    gate = Gate(parts, worker, clock=clock, replan_every_s=replan_every_s, counters=counters, bounds=bounds,
                refresh_in_background=refresh_in_background)
    return GateHarness(gate, stage, control, engine, registry, clock, statuses, ensured,
                       AvroSerializer(registry, json.dumps(T1_SCHEMA)), decisions)
