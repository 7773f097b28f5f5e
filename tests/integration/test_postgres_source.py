"""The PostgreSQL source on the real PostgreSQL, API and Kafka: `accord connect run` on a table of 50,000 sitrep
rows (watermark `updated_at`, shared by seven rows at a time, tie-broken by `id`), killed with SIGKILL midway;
1,000 rows are added, the source runs again to the end, and the ingest topic (read committed) holds each row
exactly once. And: rows sharing the watermark across a batch's end and rows added between runs; a row whose
watermark is newer than the safety lag waits for a later run."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from broker.adapters.postgres import PostgresDatabase
from broker.config import Settings
from broker.local import postgres_server
from broker.local.stack import Endpoints
from broker.runtime import sources
from connectors.config import load_source
from tests.integration.pull_source_support import (
    SCHEMA_FILE,
    STREAM,
    api_token,
    copies,
    published,
    start,
    stored_rows,
    wait_for,
)

TOTAL, ADDED = 50_000, 1_000


@pytest.fixture
def database(postgres: str) -> Iterator[PostgresDatabase]:
    password = postgres_server.password_file(Settings().secrets_dir).read_text().strip()
    with PostgresDatabase(postgres, password) as db:
        yield db


def make_table(db: PostgresDatabase, table: str) -> None:
    db.apply([(f"CREATE TABLE {table} (id bigserial PRIMARY KEY, trust text NOT NULL, day date NOT NULL, "
               "inpatients integer NOT NULL, absences integer NOT NULL, updated_at timestamptz NOT NULL)", [()]),
              (f"CREATE INDEX ON {table} (updated_at, id)", [()])])


def add_rows(db: PostgresDatabase, table: str, prefix: str, first: int, count: int, since: str) -> None:
    """Rows numbered `first`.. (the number is `absences`, unique), seven to a watermark value from `since`."""
    db.apply([(f"INSERT INTO {table} (trust, day, inpatients, absences, updated_at) "
               f"SELECT %s || (n %% 97), current_date - 3 - (n %% 300), n %% 50, n, "
               "%s::timestamptz + ((n - %s::int) / 7) * interval '1 second' "
               "FROM generate_series(%s::int, %s::int) AS n",
               [(prefix, since, first, first, first + count - 1)])])


def write_config(directory: Path, services: Endpoints, dsn: str, table: str, name: str, lag_s: float = 1.0,
                 rows: int = 1000, follow: bool = False) -> Path:
    config = directory / "source.yaml"
    config.write_text(f"""source: postgres
name: {name}
stream: {STREAM}
state_dir: state
api: {{url: "{services.api_url}", token_file: {api_token(directory).name}}}
schema_file: "{SCHEMA_FILE}"
columns: {{trust_ods_code: trust, date: day, covid_inpatients: inpatients, staff_absences: absences,
          mv_beds: inpatients, admissions: inpatients, diagnoses: inpatients, discharges: inpatients}}
batch: {{rows: {rows}}}
postgres:
  dsn: "{dsn}"
  password_file: "{postgres_server.password_file(Settings().secrets_dir)}"
  table: {table}
  watermark: updated_at
  tiebreak: [id]
  safety_lag_s: {lag_s}
  follow: {str(follow).lower()}
  poll_s: 0.5
""")
    return config





@pytest.mark.usefixtures("applied_catalog")  # the catalog naming NHS England the stream's publisher
def test_a_killed_postgres_source_loses_and_repeats_nothing(services: Endpoints, postgres: str,
                                                            database: PostgresDatabase, tmp_path: Path) -> None:
    prefix = f"K{uuid.uuid4().hex[:6].upper()}"
    table = f"sitrep_{prefix.lower()}"
    make_table(database, table)
    add_rows(database, table, prefix, 0, TOTAL, "2020-06-01")
    config, log = write_config(tmp_path, services, postgres, table, f"sitrep-{prefix.lower()}"), tmp_path / "run.log"
    run = start(config, log, "--once")
    try:
        wait_for(lambda: stored_rows(tmp_path / "state") >= 5_000 or run.poll() is not None, "5,000 rows", log)
        assert run.poll() is None, f"the run ended before it was killed:\n{log.read_text()[-3000:]}"
        os.kill(run.pid, signal.SIGKILL)
        run.wait(timeout=30)
    finally:
        if run.poll() is None:
            run.kill()
            run.wait()
    killed_at = stored_rows(tmp_path / "state")
    assert 5_000 <= killed_at < TOTAL
    add_rows(database, table, prefix, TOTAL, ADDED, "2020-07-01")
    again = start(config, log, "--once")
    try:
        assert again.wait(timeout=900) == 0, log.read_text()[-3000:]
    finally:
        if again.poll() is None:
            again.kill()
            again.wait()
    records = published(services, prefix, timeout_s=30.0)
    counts = copies(records, "staff_absences")
    assert [n for n, c in counts.items() if c > 1] == []  # nothing repeated ...
    assert sorted(counts) == list(range(TOTAL + ADDED))   # ... and nothing lost
    assert stored_rows(tmp_path / "state") == TOTAL + ADDED
    assert "summary: rows read" in log.read_text()
    status = subprocess.run([sys.executable, "-m", "broker", "connect", "status", str(config)], capture_output=True,
                            text=True, timeout=120, check=True).stdout
    assert f"rows read {TOTAL + ADDED}, accepted {TOTAL + ADDED}, quarantined 0" in status
    assert "read up to (2020-07-01T" in status and ", 51000)" in status  # the last row's updated_at and id


@pytest.mark.usefixtures("applied_catalog")  # the catalog naming NHS England the stream's publisher
def test_ties_across_batches_rows_added_later_and_the_safety_lag(services: Endpoints, postgres: str,
                                                                  database: PostgresDatabase,
                                                                  tmp_path: Path) -> None:
    prefix = f"T{uuid.uuid4().hex[:6].upper()}"
    table = f"sitrep_{prefix.lower()}"
    make_table(database, table)
    add_rows(database, table, prefix, 0, 30, "2020-06-01")  # 30 rows, 7 to a watermark: ties cross batches of 4
    config = load_source(write_config(tmp_path, services, postgres, table, f"ties-{prefix.lower()}", lag_s=3600,
                                      rows=4))
    first = sources.run(config, once=True)
    assert (first.run.rows, first.run.accepted) == (30, 30)
    # More rows sharing the last watermark value (tie-broken by their higher ids), and one just written: newer
    # than the safety lag (an hour), so it waits: a transaction still open could yet commit an older row.
    database.apply([(f"INSERT INTO {table} (trust, day, inpatients, absences, updated_at) "
                     "VALUES (%s, current_date - 3, 1, %s, timestamptz '2020-06-01' + interval '4 seconds')",
                     [(f"{prefix}x", 30), (f"{prefix}x", 31)]),
                    (f"INSERT INTO {table} (trust, day, inpatients, absences, updated_at) "
                     "VALUES (%s, current_date - 3, 1, 32, now())", [(f"{prefix}y",)])])
    second = sources.run(config, once=True)
    assert (second.run.rows, second.run.accepted) == (2, 2)
    counts = copies(published(services, prefix), "staff_absences")
    assert sorted(counts) == list(range(32)) and set(counts.values()) == {1}
    status_position, totals, _ = sources.status(config)
    assert totals.accepted == 32 and status_position is not None


@pytest.mark.usefixtures("applied_catalog")  # the catalog naming NHS England the stream's publisher
def test_a_followed_table_publishes_rows_as_they_come_until_stopped(services: Endpoints, postgres: str,
                                                                   database: PostgresDatabase,
                                                                   tmp_path: Path) -> None:
    prefix = f"F{uuid.uuid4().hex[:6].upper()}"
    table = f"sitrep_{prefix.lower()}"
    make_table(database, table)
    add_rows(database, table, prefix, 0, 20, "2020-06-01")
    config = write_config(tmp_path, services, postgres, table, f"follow-{prefix.lower()}", lag_s=0, rows=8,
                          follow=True)
    log = tmp_path / "run.log"
    run = start(config, log)
    try:
        wait_for(lambda: stored_rows(tmp_path / "state") == 20, "the first 20 rows", log)
        add_rows(database, table, prefix, 20, 15, "2020-06-02")
        wait_for(lambda: stored_rows(tmp_path / "state") == 35, "the 15 rows added while it follows", log)
        run.send_signal(signal.SIGTERM)
        assert run.wait(timeout=120) == 0, log.read_text()[-3000:]
    finally:
        if run.poll() is None:
            run.kill()
            run.wait()
    counts = copies(published(services, prefix), "staff_absences")
    assert sorted(counts) == list(range(35)) and set(counts.values()) == {1}
