"""History on a new grant on the real Kafka, OPA and registry: an agreement with `backfill: P28D` switched on after
five weeks of history delivers exactly its subscriber's rows of the last 28 days under today's plan, once."""

from __future__ import annotations

import datetime as dt
import os
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

import pytest

from broker.adapters.kafka_access import KafkaAccess
from broker.adapters.kafka_history import BackfillLogReader
from broker.adapters.kafka_log import KafkaLog
from broker.adapters.registry_http import HttpSchemaRegistry
from broker.catalog import load_and_compile
from broker.config import Settings
from broker.demo.synthetic import positive_tests
from broker.domain.backfill import BackfillLog, Replay
from broker.domain.geography_files import load_la_table
from broker.domain.kafka_acls import SERVICE_USERS
from broker.domain.messages import Outgoing
from broker.local.stack import Endpoints
from broker.local.toolchain import REPO_ROOT
from broker.runtime.gate import GateEndpoints, GateThread, open_gate
from broker.services import policy_changes
from broker.services.gate import Gate
from broker.services.ingest import Ingest, load_stream_schemas
from tests.conftest import TEST_OPERATOR, control_writer, kafka_env, opa_as, service_tokens
from tests.integration.gate_support import (
    SIGNATORIES,
    T1,
    Receiver,
    end_offsets,
    make_test_catalog,
    publish,
    topic_for,
)

GRANT = "t1-test-blaby-history"
BLABY_EH = topic_for("blaby-district-council", "environmental-health")
OTHERS = [topic_for("leicestershire-county-council", "dph"), topic_for("leicester-city-council", "dph"),
          topic_for("leicestershire-county-council", "analyst")]
FIELDS = {"specimen_id", "lsoa", "specimen_date"}
# Blaby's environmental health team is switched on with the past four weeks (the 2020 case: the line list
# needed was the past fortnight's, not only tomorrow's). Same purpose as the test catalog's expired Blaby
# agreement: one role receives a stream for one purpose.
AGREEMENT = f"""agreement: {GRANT}
stream: {T1}
subscriber: blaby-district-council
purpose: outbreak-control
legal_basis: [copi-reg-3-4, uk-gdpr-6-1-e, uk-gdpr-9-2-i]
backfill: P28D
tiers:
  eh: {{roles: [environmental-health], fields: {{specimen_id: keep, lsoa: keep, specimen_date: keep}}}}
valid_from: 2026-01-01T00:00:00Z
valid_until: 2027-12-31T00:00:00Z
review_date: 2027-06-30
""" + SIGNATORIES % ("blaby-district-council", "environmental-health")


class _Stamped:
    """The ingest's record log, stamping every record with one moment: history published after the fact."""

    def __init__(self, log: KafkaLog, moment: dt.datetime) -> None:
        self._log, self._ms = log, int(moment.timestamp() * 1000)

    def publish(self, topic: str, value: bytes, key: bytes | None = None,
                headers: Sequence[tuple[str, bytes]] = ()) -> tuple[int, int]:
        return self._log.publish(topic, value, key=key, headers=headers, timestamp_ms=self._ms)

    def publish_all(self, records: Sequence[Outgoing]) -> list[tuple[int, int]]:
        return [self.publish(r.topic, r.value, r.key, r.headers) for r in records]


def _publish_history(services: Endpoints, prefix: str, ages: Sequence[int],
                     per_place: dict[str, int] | None = None) -> dict[str, str]:
    """Per day `ages` days ago, stamped that day, two Blaby cases and one each of Charnwood and Leicester (or
    `per_place`)."""
    settings = Settings()
    schemas = load_stream_schemas(settings.schemas_dir)
    now = dt.datetime.now(dt.UTC)
    log = KafkaLog(services.kafka, client_id="test-history")
    registry = HttpSchemaRegistry(services.registry_url, token=service_tokens())
    placed: dict[str, str] = {}
    try:
        for age in ages:
            moment = now - dt.timedelta(days=age)
            ingest = Ingest(_Stamped(log, moment), registry, schemas, load_la_table(settings.geography_dir),
                            lambda: now.date())
            cases = positive_tests(moment.date() - dt.timedelta(days=1),
                                   per_place or {"blaby": 2, "charnwood": 1, "leicester": 1},
                                   prefix=f"{prefix}D{age}")
            outcomes = ingest.publish(T1, cases, source="test")
            assert [o.status for o in outcomes] == ["accepted"] * len(cases), [o.reasons for o in outcomes]
            placed |= {cases[o.index]["specimen_id"]: f"{o.partition}/{o.offset}" for o in outcomes}
    finally:
        registry.close()
        log.close()
    return placed


def _apply(services: Endpoints, document: dict[str, Any]) -> None:
    engine, writer = opa_as(services.opa_url), control_writer(services.kafka, client_id="test-backfill")
    try:
        policy_changes.apply_catalog(writer, engine, document, by=TEST_OPERATOR)
    finally:
        engine.close()
        writer.close()


@pytest.fixture(scope="module")
def with_history(services: Endpoints, applied_catalog: dict[str, Any], tmp_path_factory: pytest.TempPathFactory
                 ) -> Iterator[dict[str, Any]]:
    """The session's catalog plus the Blaby agreement asking for history; the session's is put back after."""
    directory = make_test_catalog(tmp_path_factory.mktemp("backfill"))
    (directory / "agreements" / f"{GRANT}.yaml").write_text(AGREEMENT)
    document = load_and_compile(directory, REPO_ROOT / "schemas")
    assert document["agreements"][GRANT]["backfill"] == "P28D"
    yield document
    _apply(services, applied_catalog)


def _gate(services: Endpoints, kafka: KafkaAccess, group: str, worker: str) -> GateThread:
    """A gate worker as the gate's own Kafka user, whose ACLs must let it mark and replay history."""
    settings = Settings(gate_group=group, gate_start_from="latest", opa_token_file=services.opa_token_file)
    return GateThread(GateEndpoints(kafka, services.opa_url, services.registry_url), settings, worker).start()


def _accord(args: list[str], env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "broker", *args], capture_output=True, text=True, env=env,
                          timeout=120, check=False)


def _replay_state(services: Endpoints) -> BackfillLog:
    reader = BackfillLogReader(services.kafka, client_id="test-backfill-status")
    try:
        folded = BackfillLog()
        folded.apply_all(reader.read_new())
        return folded
    finally:
        reader.close()


def test_a_grant_with_p28d_replays_its_subscribers_last_four_weeks_once(
        services: Endpoints, with_history: dict[str, Any], receiver: Receiver,
        kafka_as: Callable[[str], KafkaAccess]) -> None:
    prefix = f"H{uuid.uuid4().hex[:6].upper()}"

    def mine(record: dict[str, Any], _: dict[str, bytes]) -> bool:
        return str(record.get("specimen_id", "")).startswith(prefix)

    # Five weeks of history, published before any gate of this test runs: nobody has received it.
    placed = _publish_history(services, prefix, ages=(35, 29, 27, 20, 13, 6, 1))
    group = f"accord-gate-test-backfill-{uuid.uuid4().hex[:8]}"
    as_gate = kafka_as(SERVICE_USERS["gate"])
    gate = _gate(services, as_gate, group, "test-backfill-1")
    try:
        start = end_offsets(services.kafka, [BLABY_EH, *OTHERS])
        _apply(services, with_history)
        received = receiver.records(BLABY_EH, start[BLABY_EH], mine, want=10, timeout_s=90)
        # Blaby's rows of the days within 28 days (27, 20, 13, 6 and 1 days ago), two a day; not 29 or 35 days
        # ago, no Charnwood or Leicester row, and only the fields of today's plan.
        assert sorted(r["specimen_id"] for r, _ in received) == _blaby_ids(prefix, (27, 20, 13, 6, 1)), (
            placed, [h["accord.source"] for _, h in received], _replay_state(services).replays)
        for record, headers in received:
            assert set(record) == FIELDS, record
            assert headers["accord.backfill"] == GRANT.encode()
            assert headers["accord.source"].startswith(f"ingest.{T1}/".encode())
        # Nobody else received anything again.
        assert end_offsets(services.kafka, OTHERS) == {t: start[t] for t in OTHERS}

        # Live rows after the switch come once, from the live gate.
        live = positive_tests(dt.datetime.now(dt.UTC).date() - dt.timedelta(days=1), {"blaby": 2},
                              prefix=f"{prefix}L")
        publish(services, T1, live)
        now_received = receiver.records(BLABY_EH, start[BLABY_EH], mine, want=12, timeout_s=60)
        assert len(now_received) == 12
        assert sum(1 for _, h in now_received if "accord.backfill" not in h) == 2

        state = _replay_state(services).replays[(GRANT, BLABY_EH)]
        assert state.finished and state.backfill == "P28D"
        done, total = state.counts()
        assert done == total > 0
        assert state.delivered >= 10
        assert gate.gate is not None  # the worker's /health shows what it committed
        assert [p["finished"] for p in gate.gate.history_progress if p["grant"] == GRANT] == [True]
        shown = _accord(["backfill", "status"], {**{k: v for k, v in os.environ.items() if not k.startswith(
            "ACCORD_")}, **kafka_env(services.kafka)})
        assert shown.returncode == 0, shown.stderr
        assert f"{GRANT} (P28D) -> {BLABY_EH}" in shown.stdout
        assert f"] 100% {total}/{total} records read, {state.delivered} delivered, done" in shown.stdout
    finally:
        gate.stop()
    assert gate.failure is None, gate.failure

    # Applied again, and the gate restarted (a new worker of the same group): nothing is delivered twice.
    _apply(services, with_history)
    again = _gate(services, as_gate, group, "test-backfill-2")
    try:
        marker = positive_tests(dt.datetime.now(dt.UTC).date() - dt.timedelta(days=1), {"blaby": 1},
                                prefix=f"{prefix}M")
        publish(services, T1, marker)
        after = receiver.records(BLABY_EH, start[BLABY_EH], mine, want=13, timeout_s=60, settle_s=5)
        assert len(after) == 13
        assert len({r["specimen_id"] for r, _ in after}) == 13
    finally:
        again.stop()
    assert again.failure is None, again.failure


def _blaby_ids(prefix: str, ages: Sequence[int]) -> list[str]:
    today = dt.datetime.now(dt.UTC)
    return sorted(f"{prefix}D{age}-BLABY-{(today - dt.timedelta(days=age + 1)):%Y%m%d}-{n:06d}"
                  for age in ages for n in range(2))


def _steps_until(gate: Gate, done: Callable[[Gate], bool], what: str, timeout_s: float = 180.0) -> None:
    deadline = time.monotonic() + timeout_s
    while not done(gate):
        assert time.monotonic() < deadline, f"{what} not within {timeout_s:.0f}s"
        gate.step()


def test_a_replay_stopped_midway_resumes_on_another_worker_without_loss_or_duplicates(
        services: Endpoints, applied_catalog: dict[str, Any], receiver: Receiver,
        kafka_as: Callable[[str], KafkaAccess], tmp_path: Path) -> None:
    prefix = f"R{uuid.uuid4().hex[:6].upper()}"
    grant = f"t1-test-resume-{prefix.lower()}"
    benefits = topic_for("blaby-district-council", "benefits")
    # More than two chunks of one partition (Blaby's rows share a key), so the first worker stops midway.
    _publish_history(services, prefix, ages=(3,), per_place={"blaby": 1200})
    directory = make_test_catalog(tmp_path)
    (directory / "agreements" / f"{grant}.yaml").write_text(
        AGREEMENT.replace(GRANT, grant).replace("environmental-health", "benefits").replace(
            "outbreak-control", "self-isolation-support"))
    document = load_and_compile(directory, REPO_ROOT / "schemas")
    start = end_offsets(services.kafka, [benefits])[benefits]
    settings = Settings(gate_group=f"accord-gate-test-resume-{uuid.uuid4().hex[:8]}", gate_start_from="latest",
                        opa_token_file=services.opa_token_file)
    endpoints = GateEndpoints(kafka_as(SERVICE_USERS["gate"]), services.opa_url, services.registry_url)

    def replay(gate: Gate) -> Replay | None:
        return None if gate.history is None else gate.history.replays.get((grant, benefits))

    try:
        _apply(services, document)
        with open_gate(endpoints, settings, "test-resume-1") as first:
            first.start()
            _steps_until(first, lambda g: (r := replay(g)) is not None and r.delivered > 0, "a first chunk")
            midway = replay(first)
            assert midway is not None and not midway.finished
        with open_gate(endpoints, settings, "test-resume-2") as second:
            second.start()
            _steps_until(second, lambda g: (r := replay(g)) is not None and r.finished, "the rest")
    finally:
        _apply(services, applied_catalog)

    def mine(record: dict[str, Any], _: dict[str, bytes]) -> bool:
        return str(record.get("specimen_id", "")).startswith(prefix)
    received = receiver.records(benefits, start, mine, want=1200, timeout_s=60, settle_s=3)
    assert len(received) == 1200
    assert len({r["specimen_id"] for r, _ in received}) == 1200
