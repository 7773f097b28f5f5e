"""The files source against the real API and Kafka: a publisher's CSV, with bad rows of every kind, published
through `POST /streams/{stream}/records` with Idempotency-Keys; each bad row kept with its line and reason, each
good row on the ingest topic (read read_committed) exactly once, also when `accord connect run` is killed with
SIGKILL mid-load and started again."""

from __future__ import annotations

import csv
import json
import os
import signal
import subprocess
import sys
import time
import uuid
from collections import Counter
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from broker.adapters.kafka_partitions import KafkaPartitionReader
from broker.adapters.registry_http import HttpSchemaRegistry
from broker.demo.synthetic import nhs_number
from broker.domain.topics import ingest_topic
from broker.local.stack import Endpoints
from broker.runtime import sources
from broker.services.ingest import REQUEST_KEY_HEADER
from broker.services.serde import AvroDeserializer, SerializationContext
from connectors.config import load_source
from tests.conftest import SCHEMAS, bearer, service_tokens

STREAM = "ukhsa.positive-tests"
MILLION = int(os.environ.get("ACCORD_TEST_SOURCE_ROWS", "1000000"))  # smaller only to try the test out
FIELDS = [f["name"] for f in json.loads((SCHEMAS / f"{STREAM}.avsc").read_text())["fields"]]
# Every hundredth row is bad, the kinds in turn: what the source refuses, and what the API quarantines.
BAD = ("bad date", "bad NHS number", "unknown code", "missing required field")
REASONS = {"bad date": "specimen_date: '31/02/2020' is not a date", "bad NHS number": "nhs_number is",
           "unknown code": "ethnicity is not in its code list", "missing required field": "name: a value is required"}


def row(prefix: str, i: int) -> tuple[dict[str, str], str | None]:
    """Row `i` of the file (its line is i + 2, the header being line 1) and its kind of badness, if any."""
    good = {"specimen_id": f"{prefix}-{i}", "nhs_number": nhs_number(i), "name": "Alex Example", "dob": "07/03/1984",
            "sex": "FEMALE", "ethnicity": "H", "address": "1 Example Road, Leicester", "postcode": "LE1 1AA",
            "occupation": "", "specimen_date": "22/06/2020", "lab_report_date": "23/06/2020", "test_type": "PCR",
            "pillar": "PILLAR_2", "lsoa": "E01013627", "msoa": "E02002807", "ltla": "E06000016", "utla": "E06000016"}
    if i % 100 != 37:
        return good, None
    kind = BAD[(i // 100) % len(BAD)]
    changed = {"bad date": {"specimen_date": "31/02/2020"}, "bad NHS number": {"nhs_number": "9434765918"},
               "unknown code": {"ethnicity": "Q"}, "missing required field": {"name": ""}}[kind]
    return good | changed, kind


def write_csv(path: Path, prefix: str, rows: int) -> dict[int, str]:
    """The file, and the line of each bad row with its kind."""
    bad: dict[int, str] = {}
    with path.open("w", newline="", encoding="utf-8") as out:
        writer = csv.DictWriter(out, FIELDS)
        writer.writeheader()
        for i in range(rows):
            values, kind = row(prefix, i)
            writer.writerow(values)
            if kind is not None:
                bad[i + 2] = kind
    return bad


def write_config(tmp: Path, services: Endpoints, name: str, data: Path) -> Path:
    (tmp / "api.token").write_text(bearer("ukhsa", "ig-lead")["Authorization"].removeprefix("Bearer "))
    config = tmp / "source.yaml"
    config.write_text(f"""\
source: files
name: {name}
stream: {STREAM}
state_dir: state
api: {{url: "{services.api_url}", token_file: api.token}}
schema_file: {SCHEMAS / f"{STREAM}.avsc"}
files: {{path: {data}}}
""")
    return config


def ends(services: Endpoints) -> dict[int, int]:
    reader = KafkaPartitionReader(services.kafka, ingest_topic(STREAM), client_id="test-source-ends")
    try:
        return reader.end_offsets()
    finally:
        reader.close()


def published(services: Endpoints, since: Mapping[int, int], name: str) -> Counter[str]:
    """The specimen ids on the ingest topic (read_committed) after `since`, sent by the source `name` (its batches'
    Idempotency-Keys start with its name); each with how many times it is there."""
    mark = f"accord-source:{name}:".encode()
    reader = KafkaPartitionReader(services.kafka, ingest_topic(STREAM), client_id="test-source-read")
    registry = HttpSchemaRegistry(services.registry_url, token=service_tokens())
    decode = AvroDeserializer(registry)
    found: Counter[str] = Counter()
    try:
        reader.seek(since)
        end = reader.end_offsets()
        context = SerializationContext(ingest_topic(STREAM))
        while any(reader.positions()[p] < offset for p, offset in end.items()):
            for record in reader.poll(10_000, 2.0):
                if any(k == REQUEST_KEY_HEADER and v.startswith(mark) for k, v in record.headers):
                    value = decode(record.value, context)
                    assert value is not None
                    found[str(value["specimen_id"])] += 1
    finally:
        registry.close()
        reader.close()
    return found


def check_rejects(state: Path, bad: Mapping[int, str], name: str) -> None:
    """Every bad row once in the rejects file, with its file, line and the reason of its kind."""
    rejects = [json.loads(line) for line in (state / "rejects.jsonl").read_text().splitlines()]
    lines = Counter(int(r["where"].rsplit(":", 1)[1]) for r in rejects)
    assert lines == Counter(bad.keys()), "each bad row once, by its line"
    for reject in rejects:
        line = int(reject["where"].rsplit(":", 1)[1])
        assert reject["where"] == f"{name}:{line}"
        assert REASONS[bad[line]] in reject["reason"], (bad[line], reject)
        assert reject["by"] == ("api" if bad[line] in ("bad NHS number", "unknown code") else "source")


def test_a_million_row_csv_with_one_percent_bad_rows(services: Endpoints, applied_catalog: dict[str, Any],
                                                      tmp_path: Path) -> None:
    prefix = f"SRC{uuid.uuid4().hex[:8].upper()}"
    data = tmp_path / "cases.csv"
    bad = write_csv(data, prefix, MILLION)
    name = f"files-{prefix.lower()}"
    config = load_source(write_config(tmp_path, services, name, data))
    before = ends(services)
    started = time.monotonic()
    summary = sources.run(config)
    seconds = time.monotonic() - started
    print(f"{MILLION} rows in {seconds:.0f}s: {summary.line()}")  # shown with -s: the suite's budget
    kinds = Counter(bad.values())
    assert len(bad) == MILLION // 100 and set(kinds) == set(BAD)
    assert summary.run.rows == MILLION
    assert summary.run.accepted == MILLION - len(bad)
    assert summary.run.kept_out == len(bad)
    assert summary.run.rejected == kinds["bad date"] + kinds["missing required field"]
    assert summary.run.quarantined == kinds["bad NHS number"] + kinds["unknown code"]
    check_rejects(tmp_path / "state", bad, data.name)
    copies = published(services, before, name)
    good = {f"{prefix}-{i}" for i in range(MILLION) if i + 2 not in bad}
    assert set(copies) == good and set(copies.values()) == {1}, "every accepted row on the ingest topic once"
    again = sources.run(config)
    assert again.run.rows == 0, "a file published to its end is not taken again"


def start(config: Path, log: Path) -> subprocess.Popen[bytes]:
    with log.open("ab") as out:
        return subprocess.Popen([sys.executable, "-m", "broker", "connect", "run", str(config)],
                                stdout=out, stderr=subprocess.STDOUT)


def wait_for(condition: Callable[[], bool], what: str, log: Path, timeout_s: float = 600.0) -> None:
    deadline = time.monotonic() + timeout_s
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"{what} did not happen within {timeout_s:.0f}s; log:\n{log.read_text()[-3000:]}")
        time.sleep(0.05)


def stored_rows(state: Path) -> int:
    try:
        return int(json.loads((state / "position.json").read_text())["totals"]["rows"])
    except (FileNotFoundError, ValueError, KeyError):
        return 0


def test_kill_9_during_a_file_load_then_restart_loses_and_repeats_nothing(
        services: Endpoints, applied_catalog: dict[str, Any], tmp_path: Path) -> None:
    rows = 60_000
    prefix = f"KIL{uuid.uuid4().hex[:8].upper()}"
    data = tmp_path / "cases.csv"
    bad = write_csv(data, prefix, rows)
    name = f"files-{prefix.lower()}"
    config, log, state = write_config(tmp_path, services, name, data), tmp_path / "source.log", tmp_path / "state"
    before = ends(services)
    for at_least in (10_000, 30_000):  # killed twice, mid-load, wherever it is then (a POST in flight or not)
        process = start(config, log)
        try:
            wait_for(lambda: stored_rows(state) >= at_least or process.poll() is not None,  # noqa: B023
                     f"{at_least} rows stored", log)
            assert process.poll() is None, f"the source ended before it was killed:\n{log.read_text()[-3000:]}"
        finally:
            os.kill(process.pid, signal.SIGKILL)
            process.wait()
        assert stored_rows(state) < rows
    process = start(config, log)
    try:
        assert process.wait(timeout=900) == 0, log.read_text()[-3000:]
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
    assert "summary: rows read" in log.read_text()
    check_rejects(state, bad, data.name)
    copies = published(services, before, name)
    assert set(copies) == {f"{prefix}-{i}" for i in range(rows) if i + 2 not in bad}
    assert set(copies.values()) == {1}, "nothing repeated"
    totals = json.loads((state / "position.json").read_text())["totals"]
    assert totals == {"rows": rows, "accepted": rows - len(bad), "quarantined": len(bad) // 2,
                      "rejected": len(bad) - len(bad) // 2}
    shown = subprocess.run([sys.executable, "-m", "broker", "connect", "status", str(config)], capture_output=True,
                           text=True, timeout=120, check=True).stdout
    assert f"rows read {rows}, accepted {rows - len(bad)}, quarantined {len(bad)}" in shown
    newest = max(bad)
    assert f"cases.csv:{newest}: {REASONS[bad[newest]]}" in shown


def test_a_watched_folder_publishes_each_file_once_across_restarts(
        services: Endpoints, applied_catalog: dict[str, Any], tmp_path: Path) -> None:
    prefix = f"WAT{uuid.uuid4().hex[:8].upper()}"
    drop = tmp_path / "drop"
    drop.mkdir()
    name = f"files-{prefix.lower()}"
    config, log, state = write_config(tmp_path, services, name, drop), tmp_path / "source.log", tmp_path / "state"
    config.write_text(config.read_text().replace(f"files: {{path: {drop}}}",
                                                 f"files: {{path: {drop}, watch: true, poll_s: 0.3, settle_s: 0.5}}"))
    before = ends(services)

    def published_files() -> set[str]:
        try:
            return set(json.loads((state / "position.json").read_text())["position"]["done"])
        except (FileNotFoundError, ValueError, KeyError):
            return set()

    def stop(process: subprocess.Popen[bytes]) -> None:
        process.send_signal(signal.SIGTERM)
        assert process.wait(timeout=120) == 0, log.read_text()[-3000:]

    part = {n: [row(f"{prefix}{n}", i)[0] for i in range(300)] for n in ("a", "b", "c")}

    def drop_file(n: str) -> None:
        partial = drop / f"{n}.csv.partial"  # written under a name the source skips, then renamed whole
        with partial.open("w", newline="", encoding="utf-8") as out:
            writer = csv.DictWriter(out, FIELDS)
            writer.writeheader()
            writer.writerows(part[n])
        partial.rename(drop / f"{n}.csv")

    process = start(config, log)
    try:
        drop_file("b")
        drop_file("a")
        wait_for(lambda: published_files() == {"a.csv", "b.csv"}, "a.csv and b.csv published", log)
    finally:
        stop(process)
    process = start(config, log)  # a restart: a and b are in the ledger, c is new
    try:
        drop_file("c")
        wait_for(lambda: published_files() == {"a.csv", "b.csv", "c.csv"}, "c.csv published", log)
    finally:
        stop(process)
    copies = published(services, before, name)
    assert set(copies) == {f"{prefix}{n}-{i}" for n in part for i in range(300) if i % 100 != 37}
    assert set(copies.values()) == {1}
    assert "summary: rows read 600" in log.read_text() and "summary: rows read 300" in log.read_text()
