"""Runs gate workers on the real Kafka, OPA and registry: `accord gate serve` and the in-process gates of tests."""

from __future__ import annotations

import gc
import logging
import os
import signal
import threading
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, field
from typing import Any

import uvicorn

from broker.adapters.kafka_access import KafkaAccess
from broker.adapters.kafka_control import ControlReader, ControlWriter, ensure_control_topics, ensure_optout_topic
from broker.adapters.kafka_history import BackfillLogReader, HistoryReader, ensure_backfill_topic
from broker.adapters.kafka_transactions import TransactionalStage, fence_transactions
from broker.adapters.metrics import PrometheusBackfillCounters, PrometheusGateCounters, count_withheld
from broker.adapters.rdkafka_transactions import RdkafkaTransactionalStage
from broker.adapters.readiness_probes import kafka_probe, opa_probe, registry_probe
from broker.adapters.registry_http import HttpSchemaRegistry
from broker.api.auth import Guard
from broker.api.gate_app import create_gate_app
from broker.api.readiness import add_readiness
from broker.clock import Clock
from broker.config import Settings
from broker.domain.gate_slots import gate_transactional_id, slot_worker_id
from broker.domain.geography import LaTable
from broker.domain.geography_files import load_la_table, load_residence
from broker.domain.topics import AUDIT_TOPIC, OPTOUT_TOPIC, STATUS_TOPIC, ingest_topic
from broker.domain.trusts import TrustTable, load_trust_table
from broker.errors import ConfigError
from broker.runtime.api import ensure_applied_stream_topics, ensure_partitioned, ensure_stream_topics
from broker.security.api_tokens import ServiceTokens
from broker.security.control_keys import trusted_keys
from broker.security.opa_tokens import WRITER, opa_engine
from broker.security.secrets import optout_secret, pseudonym_master, pseudonym_secret
from broker.services.gate import Gate, GateParts
from broker.services.ingest import load_stream_schemas
from broker.services.planner import Planner
from broker.services.stream_schemas import StreamSchemas

log = logging.getLogger(__name__)
# OPA questions of one re-plan asked at once (services/planner.py): 4 kept OPA's two cores busy while the gate's
# thread prepared the next request; more gained nothing measurable.
PLAN_CONCURRENCY = 4


@dataclass(frozen=True)
class GateEndpoints:
    kafka: KafkaAccess
    opa_url: str
    registry_url: str


@contextmanager
def open_gate(endpoints: GateEndpoints, settings: Settings, worker: str,
              transaction_timeout_ms: int = 10_000, la_table: LaTable | None = None,
              clock: Clock | None = None, transactional_id: str | None = None) -> Iterator[Gate]:
    """A gate worker for every stream in the settings' schemas directory, with its topics, and for every stream an
    applied catalog adds later (its schema from the registry: services/stream_schemas.py); closed on exit.
    `la_table` replaces the settings' one and its trust lookup (the benchmark compares tables); `clock` the wall
    clock (tests of time-based behaviour, such as a legal basis ending); `transactional_id` the one its
    transactions are fenced by (default `accord-gate-<worker>`)."""
    schemas = load_stream_schemas(settings.schemas_dir)
    kafka = endpoints.kafka
    transactional_id = transactional_id or f"accord-gate-{worker}"
    # Fence first: whatever a crashed predecessor in this slot left open is aborted now, not after the topics,
    # clients and plans below are ready (read_committed readers of its partitions wait until then).
    fence_transactions(kafka, transactional_id)
    ensure_stream_topics(kafka, schemas, settings.catalog_dir)
    ensure_control_topics(kafka)
    ensure_optout_topic(kafka)
    ensure_backfill_topic(kafka)
    secret_env = settings.pseudonym_secret.get_secret_value() if settings.pseudonym_secret else None
    with ExitStack() as stack:
        engine = opa_engine(endpoints.opa_url, settings, WRITER)
        stack.callback(engine.close)
        registry = HttpSchemaRegistry(endpoints.registry_url, token=ServiceTokens(settings.secrets_dir, "gate"))
        stack.callback(registry.close)
        control = ControlReader(kafka, client_id=f"accord-gate-control-{worker}")
        stack.callback(control.close)
        status = ControlWriter(kafka, client_id=f"accord-gate-status-{worker}")
        stack.callback(status.close)
        optout = ControlReader(kafka, client_id=f"accord-gate-optout-{worker}", topic=OPTOUT_TOPIC)
        stack.callback(optout.close)
        transport = RdkafkaTransactionalStage if settings.gate_transport == "librdkafka" else TransactionalStage
        stage = transport(kafka, settings.gate_group, [ingest_topic(s) for s in schemas], transactional_id,
                          transaction_timeout_ms=transaction_timeout_ms, start_from=settings.gate_start_from)
        stack.callback(stage.close)
        history = HistoryReader(kafka, client_id=f"accord-gate-history-{worker}")
        stack.callback(history.close)
        backfill_log = BackfillLogReader(kafka, client_id=f"accord-gate-backfill-{worker}")
        stack.callback(backfill_log.close)
        streams = StreamSchemas(lambda: None, registry)

        def adopt(stream: str, entry: Mapping[str, Any]) -> dict[str, Any] | None:
            schema = streams.schema_of(stream, entry)
            if schema is not None:
                ensure_applied_stream_topics(kafka, stream, entry)
            return schema

        table = la_table or load_la_table(settings.geography_dir)
        # The trust lookup names districts of the LA table shipped beside it; a table given in its place (the
        # benchmark's 28 authorities of before) has no lookup of its own, so trusts are not resolved to areas there.
        trusts = load_trust_table(settings.geography_dir, table) if la_table is None else TrustTable()
        planner = Planner(engine, concurrency=PLAN_CONCURRENCY)
        stack.callback(planner.close)
        parts = GateParts(
            stage=stage, control=control, control_keys=trusted_keys(settings.secrets_dir, settings.control_public_key),
            planner=planner, registry=registry, schemas=schemas,
            la_table=table, trusts=trusts,
            pseudonym_secret=pseudonym_secret(secret_env, settings.secrets_dir),
            pseudonym_masters=lambda version: pseudonym_master(settings.secrets_dir, version),
            ensure_topics=lambda counts: ensure_partitioned(kafka, counts),
            residence=load_residence(settings.residence_lookup, settings.geography_dir),
            status=lambda w, value: _ignore(status.append(w, value, topic=STATUS_TOPIC)),
            audit=lambda kind, record: _ignore(status.append(kind, record, topic=AUDIT_TOPIC)),
            optout=optout, optout_key=optout_secret(settings.secrets_dir), withheld=count_withheld,
            history=history, backfill_log=backfill_log, backfill_counters=PrometheusBackfillCounters(),
            adopt_stream=adopt,
        )
        yield Gate(parts, worker, clock=clock, counters=PrometheusGateCounters(), ready=stage.ready,
                   refresh_in_background=True)


def _ignore(_: Any) -> None:
    return None


@dataclass
class GateThread:
    """A gate worker looping on its own thread until stopped (tests, the demo, `accord gate serve`)."""

    endpoints: GateEndpoints
    settings: Settings
    worker: str
    clock: Clock | None = None
    transactional_id: str | None = None  # default `accord-gate-<worker>` (open_gate)
    started: threading.Event = field(default_factory=threading.Event)
    stopping: threading.Event = field(default_factory=threading.Event)
    failure: BaseException | None = None
    gate: Gate | None = None
    _thread: threading.Thread | None = None

    def start(self, timeout_s: float = 60.0) -> GateThread:
        self._thread = threading.Thread(target=self._main, name=f"gate-{self.worker}", daemon=True)
        self._thread.start()
        if not self.started.wait(timeout_s) or self.failure is not None:
            self.stop()
            raise RuntimeError(f"gate worker {self.worker} did not start: {self.failure}")
        return self

    def _main(self) -> None:
        try:
            with open_gate(self.endpoints, self.settings, self.worker, clock=self.clock,
                           transactional_id=self.transactional_id) as gate:
                self.gate = gate
                gate.start()
                while not gate.ready() and not self.stopping.is_set():
                    gate.step()
                if not self.stopping.is_set():
                    gate.anchor()
                self.started.set()
                gate.run(self.stopping.is_set)
        except BaseException as exc:
            self.failure = exc
            log.exception("gate worker %s stopped", self.worker)
            self.started.set()

    def problem(self) -> str | None:
        """None while the loop runs and delivers; else why not (readiness)."""
        if not self.alive():
            return f"the gate loop of {self.worker} stopped: {self.failure}"
        if self.gate is not None and self.gate.held:
            return "delivery paused: the policy engine is not ready"
        return None

    def alive(self) -> bool:
        return self._thread is not None and self._thread.is_alive() and self.started.is_set()

    def stop(self) -> None:
        self.stopping.set()
        if self._thread is not None:
            self._thread.join(timeout=30)


def worker_identity(settings: Settings, worker: str | None = None) -> tuple[str, str]:
    """(worker name, transactional id) of `accord gate serve`: a worker the operator names (`--worker-id`,
    ACCORD_GATE_WORKER_ID) is `accord-gate-<name>`, any other is its slot's `<group>-<slot>`. Both stay the same
    across restarts, so a restarted worker fences its predecessor's open transaction at once."""
    named = worker or settings.gate_worker_id
    transactional_id = gate_transactional_id(settings.gate_group, settings.gate_slot, named)
    return named or slot_worker_id(settings.gate_group, settings.gate_slot), transactional_id


def serve(endpoints: GateEndpoints, settings: Settings, host: str, port: int, worker: str | None,
          workers: int = 1) -> None:
    """`workers` gate workers in this process, in the slots from the settings' slot on, behind one HTTP face."""
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    runners = _start_runners(endpoints, settings, worker, workers)
    freeze_startup_heap()

    def health() -> tuple[bool, dict[str, Any]]:
        details = [_detail(runner) for runner in runners]
        alive = all(runner.alive() for runner in runners)
        return alive, details[0] if len(details) == 1 else {"workers": details}

    threading.Thread(target=exit_when_a_loop_stops, args=(runners, _terminate_self), name="gate-loops-watch",
                     daemon=True).start()
    try:
        app = create_gate_app(health, guard=Guard.from_settings(settings))
        loops = {"gate loop" if len(runners) == 1 else f"gate loop {r.worker}": r.problem for r in runners}
        add_readiness(app, {"kafka": kafka_probe(endpoints.kafka), "opa": opa_probe(endpoints.opa_url),
                            "registry": registry_probe(endpoints.registry_url)} | loops)
        uvicorn.run(app, host=host, port=port, log_level="warning")
    finally:
        for runner in runners:
            runner.stop()


def freeze_startup_heap() -> None:
    """Once the workers have started: what they loaded (the ONS tables, schemas, plans) stays for the life of the
    process, so keep the cyclic garbage collector from walking it again. Its full collections had walked it every
    few seconds under load, each a 150-170 ms pause in delivery (3 ms after this); garbage made later is collected
    as before."""
    gc.collect()
    gc.freeze()


def _terminate_self() -> None:
    os.kill(os.getpid(), signal.SIGTERM)    # uvicorn shuts down; `serve` stops the other workers and returns


def exit_when_a_loop_stops(runners: Sequence[GateThread], terminate: Callable[[], None],
                           every_s: float = 1.0) -> None:
    """Once a worker's loop has stopped on an error (fenced by another live worker of its slot, say), end the
    process: a supervisor starts it again, and the new worker takes its slot over, instead of a live process whose
    worker delivers nothing."""
    while True:
        stopped = [r for r in runners if r.failure is not None]
        if stopped:
            log.error("gate worker %s stopped (%s); the process ends so that it is started again",
                      stopped[0].worker, stopped[0].failure)
            terminate()
            return
        time.sleep(every_s)


def _start_runners(endpoints: GateEndpoints, settings: Settings, worker: str | None,
                   workers: int) -> list[GateThread]:
    if workers < 1:
        raise ConfigError(f"--workers is how many gate workers to run, at least 1, not {workers}")
    if workers > 1 and (worker or settings.gate_worker_id):
        raise ConfigError("--workers runs workers in consecutive slots; a worker id (--worker-id, "
                          "ACCORD_GATE_WORKER_ID) names one worker only: leave it out or use --workers 1")
    runners: list[GateThread] = []
    try:
        for offset in range(workers):
            in_slot = settings.model_copy(update={"gate_slot": settings.gate_slot + offset})
            name, transactional_id = worker_identity(in_slot, worker)
            log.info("gate worker %s writes with transactional id %s", name, transactional_id)
            runners.append(GateThread(endpoints, in_slot, name, transactional_id=transactional_id).start())
    except BaseException:
        for runner in runners:
            runner.stop()
        raise
    return runners


def _detail(runner: GateThread) -> dict[str, Any]:
    gate = runner.gate
    detail: dict[str, Any] = {"worker": runner.worker}
    if gate is not None:
        detail |= {"policy_engine_ready": not gate.held, "control_offset": gate.state.offset,
                   "catalog_revision": gate.state.catalog_revision,
                   "deliveries": sorted(d.topic for ds in gate.deliveries.values() for d in ds),
                   "history": list(gate.history_progress)}
    return detail
