"""The PostgreSQL sink on the real Kafka, OPA, registry and PostgreSQL: a real gate delivers 10,000 T1 records to
Leicester's DPH; the sink, a subprocess acting as that role's own Kafka login, is killed with SIGKILL midway and
restarted; the table then holds exactly the 10,000 rows with their values, none written twice."""

from __future__ import annotations

import datetime as dt
import io
import json
import os
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from fastavro import parse_schema, schemaless_writer

from broker.adapters.postgres import PostgresDatabase
from broker.adapters.registry_memory import InMemorySchemaRegistry
from broker.config import Settings
from broker.demo.synthetic import spread
from broker.domain.kafka_acls import subscriber_user
from broker.domain.messages import Record
from broker.domain.wire import frame
from broker.local import postgres_server
from broker.local.processes import free_port
from broker.local.stack import Endpoints
from broker.runtime.gate import GateThread
from broker.security.api_tokens import issue, signing_key, write_token
from broker.security.kafka_identities import password_path
from connectors.sinks.postgres import PostgresSink
from tests.integration.gate_support import T1, publish, specimen_day, start_gate, topic_for
from tests.unit.sink_fakes import FakeSource

BODY = "leicester-city-council"
LOGIN = subscriber_user(BODY, "dph")  # the sink reads as Leicester's DPH's own Kafka login
TOPIC = topic_for(BODY, "dph")
TOTAL = 10_000


@pytest.fixture(scope="module")
def gate(services: Endpoints, applied_catalog: dict[str, Any]) -> Iterator[GateThread]:
    runner = start_gate(services, "test-sink-gate", "test-sink-worker")
    yield runner
    runner.stop()
    assert runner.failure is None, runner.failure


def write_config(directory: Path, services: Endpoints, dsn: str, table: str) -> Path:
    secrets = Settings().secrets_dir
    token = directory / "registry.token"
    write_token(token, issue(signing_key(secrets), BODY, "dph", "sink-test", dt.timedelta(hours=2),
                             dt.datetime.now(dt.UTC)))
    config = directory / "sink.yaml"
    config.write_text(f"""sink: postgres
body: {BODY}
role: dph
kafka: {{bootstrap: "{services.kafka.bootstrap}", password_file: "{password_path(secrets, LOGIN)}"}}
registry: {{url: "{services.registry_url}", token_file: registry.token}}
postgres: {{dsn: "{dsn}", password_file: "{postgres_server.password_file(secrets)}"}}
deliveries:
  - {{stream: {T1}, table: {table}, key: [specimen_id]}}
""")
    return config


def start_sink(config: Path, log: Path, metrics_port: int | None = None) -> subprocess.Popen[bytes]:
    extra = [] if metrics_port is None else ["--metrics-port", str(metrics_port)]
    with log.open("ab") as out:
        return subprocess.Popen([sys.executable, "-m", "broker", "connect", "run", str(config), "--batch", "500",
                                 *extra], stdout=out, stderr=subprocess.STDOUT)


def scrape(port: int) -> dict[str, float]:
    """The sink's Prometheus samples for the test's topic, by name and labels."""
    try:
        text = httpx.get(f"http://127.0.0.1:{port}/metrics", timeout=5).text
    except httpx.TransportError:
        return {}
    return {name: value for line in text.splitlines() if not line.startswith("#") and TOPIC in line
            for name, value in [(line.rsplit(" ", 1)[0], float(line.rsplit(" ", 1)[1]))]}


def wait_for(condition: Callable[[], bool], what: str, log: Path, timeout_s: float = 300.0) -> None:
    deadline = time.monotonic() + timeout_s
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"{what} did not happen within {timeout_s:.0f}s; sink log:\n{log.read_text()[-3000:]}")
        time.sleep(0.2)


def test_a_killed_sink_loses_and_repeats_nothing(services: Endpoints, gate: GateThread, postgres: str,
                                                 tmp_path: Path) -> None:
    password = postgres_server.password_file(Settings().secrets_dir).read_text().strip()
    with PostgresDatabase(postgres, password) as database:
        check_a_killed_sink(services, postgres, tmp_path, database)


def check_a_killed_sink(services: Endpoints, postgres: str, tmp_path: Path, database: PostgresDatabase) -> None:
    prefix = f"S{uuid.uuid4().hex[:6].upper()}"
    table = f"t1_{prefix.lower()}"
    cases = spread(specimen_day(), TOTAL, ["leicester"], prefix=prefix)
    config, log = write_config(tmp_path, services, postgres, table), tmp_path / "sink.log"

    def rows() -> int:
        exists = database.query("SELECT to_regclass(%s) IS NOT NULL", (table,))[0][0]
        mine = f"SELECT count(*) FROM {table} WHERE specimen_id LIKE %s"
        return int(database.query(mine, (prefix + "-%",))[0][0]) if exists else 0

    publish(services, T1, cases[: TOTAL // 2])
    sink = start_sink(config, log)
    try:
        wait_for(lambda: rows() >= 1000, "the first 1,000 rows", log)
        os.kill(sink.pid, signal.SIGKILL)  # midway: half of the records are not even published yet
        sink.wait()
        stored_at_kill = rows()
        assert 1000 <= stored_at_kill < TOTAL
        # From here on, any record written a second time (re-read past a position that was not stored with its
        # rows) is an upsert's UPDATE: record each in a table of its own.
        database.apply([(f"CREATE TABLE {table}_rewrites (specimen_id text)", [()]),
                        (f"CREATE FUNCTION {table}_rewritten() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN "
                         f"INSERT INTO {table}_rewrites VALUES (NEW.specimen_id); RETURN NEW; END $$", [()]),
                        (f"CREATE TRIGGER rewritten AFTER UPDATE ON {table} FOR EACH ROW "
                         f"EXECUTE FUNCTION {table}_rewritten()", [()])])
        publish(services, T1, cases[TOTAL // 2:])
        port = free_port()
        sink = start_sink(config, log, port)
        wait_for(lambda: rows() >= TOTAL, f"all {TOTAL} rows", log)
        # Metrics: the lag gauges reach 0 on every partition, and what this run stored is counted.
        caught_up = lambda: (lags := [v for k, v in scrape(port).items()  # noqa: E731
                                      if k.startswith("accord_sink_lag_records")]) != [] and not any(lags)
        wait_for(caught_up, "lag 0 in the sink's metrics", log)
        stored_now = scrape(port)[f'accord_sink_records_total{{sink="postgres",topic="{TOPIC}"}}']
        assert stored_now >= TOTAL - stored_at_kill
        sink.send_signal(signal.SIGTERM)
        assert sink.wait(timeout=60) == 0, log.read_text()[-3000:]
    finally:
        if sink.poll() is None:
            sink.kill()
            sink.wait()

    assert rows() == TOTAL
    assert database.query(f"SELECT count(*) FROM {table}_rewrites")[0][0] == 0
    # The delivery topic also holds earlier tests' rows (the sink stores them too): compare this test's own.
    stored = {r[0]: r[1:] for r in database.query(
        f"SELECT specimen_id, name, dob, sex, postcode, lsoa, nhs_number, specimen_date FROM {table} "
        "WHERE specimen_id LIKE %s", (prefix + "-%",))}
    assert stored == {c["specimen_id"]: (c["name"], c["dob"], c["sex"], c["postcode"], c["lsoa"], c["nhs_number"],
                                         c["specimen_date"]) for c in cases}
    types = dict(database.query("SELECT column_name, data_type FROM information_schema.columns WHERE table_name = "
                                "%s", (table,)))
    assert (types["dob"], types["name"], types["lsoa"]) == ("date", "text", "text")
    status = subprocess.run([sys.executable, "-m", "broker", "connect", "status", str(config)],
                            capture_output=True, text=True, check=True).stdout
    (line,) = [line for line in status.splitlines() if line.startswith(TOPIC)]
    assert line.split()[-1] == "0", status  # lag: every committed delivery is in the table


def test_a_record_without_its_key_is_kept_aside_in_the_real_database(postgres: str) -> None:
    # The SQL of the rejected path, run by the real PostgreSQL: rows, the rejected record and the position commit
    # together, and `rejected_count` reads them back.
    registry, day = InMemorySchemaRegistry(), dt.date(2026, 11, 30)
    full = {"type": "record", "name": "PositiveTest", "accord.key": ["specimen_id"], "fields": [
        {"name": "specimen_id", "type": "string"}, {"name": "specimen_date", "type": {"type": "int",
                                                                                       "logicalType": "date"}}]}
    narrowed = {"type": "record", "name": "PositiveTest", "fields": [full["fields"][1]]}
    topic, table = TOPIC, f"t1_rejected_{uuid.uuid4().hex[:6]}"

    def record(offset: int, value: dict[str, Any], avro: dict[str, Any]) -> Record:
        schema_id = registry.register(f"{topic}-value", json.dumps(avro))
        body = io.BytesIO()
        schemaless_writer(body, parse_schema(avro), value)
        return Record(topic, 0, offset, None, frame(schema_id, body.getvalue()),
                      (("accord.source", f"ingest.ukhsa.positive-tests/0/{offset}".encode()),))

    source = FakeSource(topic, [record(0, {"specimen_id": "a", "specimen_date": day}, full),
                                record(1, {"specimen_date": day}, narrowed),
                                record(2, {"specimen_id": "c", "specimen_date": day}, full)])
    password = postgres_server.password_file(Settings().secrets_dir).read_text().strip()
    with PostgresDatabase(postgres, password) as database:
        sink = PostgresSink(source, registry, database, table)
        assert sink.step() == 3
        assert database.query(f'SELECT specimen_id FROM "{table}" ORDER BY 1') == [("a",), ("c",)]
        ((offset, reason, kept),) = database.query(
            'SELECT "offset", reason, record FROM accord_rejected WHERE table_name = %s', (table,))
        assert (offset, kept) == (1, {"specimen_date": str(day)}) and "specimen_id" in reason
        assert sink.rejected_count() == 1 and sink.stored_positions() == {0: 3}
        database.apply([(f'DROP TABLE "{table}"', [()]),
                        ("DELETE FROM accord_rejected WHERE table_name = %s", [(table,)]),
                        ("DELETE FROM accord_positions WHERE table_name = %s", [(table,)])])
