"""The file sink on the real Kafka, OPA, registry and gate: a real gate delivers 3,000 T1 records to Leicester's DPH;
the sink, a subprocess acting as that role's own Kafka login, is killed with SIGKILL while a file is half written,
and restarted. Then no half-written file is left (only hidden temporaries ever held one), every manifest's SHA-256,
size and row count match its file, no two files hold the same delivered offset, and this test's rows are there
exactly once with their values, in CSV and in Parquet."""

from __future__ import annotations

import collections
import csv
import datetime as dt
import hashlib
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

import pyarrow.parquet as pq
import pytest

from broker.config import Settings
from broker.demo.synthetic import spread
from broker.domain.kafka_acls import subscriber_user
from broker.local.stack import Endpoints
from broker.runtime.gate import GateThread
from broker.security.api_tokens import issue, signing_key, write_token
from broker.security.kafka_identities import password_path
from tests.integration.gate_support import T1, publish, specimen_day, start_gate, topic_for

BODY = "leicester-city-council"
LOGIN = subscriber_user(BODY, "dph")
TOPIC = topic_for(BODY, "dph")
TOTAL = 3_000
MANIFEST = ".manifest.json"
FIELDS = ("name", "dob", "sex", "postcode", "lsoa", "nhs_number", "specimen_date")


@pytest.fixture(scope="module")
def gate(services: Endpoints, applied_catalog: dict[str, Any]) -> Iterator[GateThread]:
    runner = start_gate(services, "test-file-sink-gate", "test-file-sink-worker")
    yield runner
    runner.stop()
    assert runner.failure is None, runner.failure


def write_config(directory: Path, services: Endpoints, kind: str, drop: str = "drop") -> Path:
    secrets = Settings().secrets_dir
    write_token(directory / "registry.token", issue(signing_key(secrets), BODY, "dph", "file-sink-test",
                                                    dt.timedelta(hours=2), dt.datetime.now(dt.UTC)))
    config = directory / "sink.yaml"
    # Files close at 400 rows or 3 s after their first row, so a kill finds one open and the last rows are
    # committed without a clean stop.
    config.write_text(f"""sink: files
body: {BODY}
role: dph
kafka: {{bootstrap: "{services.kafka.bootstrap}", password_file: "{password_path(secrets, LOGIN)}"}}
registry: {{url: "{services.registry_url}", token_file: registry.token}}
files: {{directory: {drop}, format: {kind}, max_rows: 400, max_seconds: 3}}
deliveries:
  - {{stream: {T1}, prefix: t1}}
""")
    return config


def start_sink(config: Path, log: Path) -> subprocess.Popen[bytes]:
    with log.open("ab") as out:
        return subprocess.Popen([sys.executable, "-m", "broker", "connect", "run", str(config), "--batch", "250"],
                                stdout=out, stderr=subprocess.STDOUT)


def wait_for(condition: Callable[[], bool], what: str, log: Path, timeout_s: float = 300.0) -> None:
    deadline = time.monotonic() + timeout_s
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"{what} did not happen within {timeout_s:.0f}s; sink log:\n{log.read_text()[-3000:]}")
        time.sleep(0.2)


def committed(drop: Path) -> list[Path]:
    """The files a sync may pick up: those with a manifest, in sequence order."""
    return sorted(drop / p.name[:-len(MANIFEST)] for p in drop.glob(f"*{MANIFEST}"))


def rows_of(path: Path) -> list[dict[str, Any]]:
    if path.suffix == ".parquet":
        return list(pq.read_table(path).to_pylist())
    with path.open(newline="", encoding="utf-8") as data:
        return list(csv.DictReader(data))


class Drop:
    """The sink's folder as a sync sees it; a committed file never changes, so each is read once."""

    def __init__(self, path: Path, prefix: str) -> None:
        self.path, self.prefix = path, prefix
        self._mine: dict[Path, list[dict[str, Any]]] = {}

    def mine(self) -> list[dict[str, Any]]:
        """This test's rows in the committed files (the topic holds other tests' rows too, some narrowed)."""
        for f in committed(self.path):
            if f not in self._mine:
                self._mine[f] = [r for r in rows_of(f) if str(r.get("specimen_id")).startswith(self.prefix + "-")]
        return [r for f in sorted(self._mine) for r in self._mine[f]]


def kill_mid_file(sink: subprocess.Popen[bytes], drop: Drop, log: Path) -> list[str]:
    """SIGKILL the sink at a moment it holds a half-written file, after some of this test's rows were committed;
    it is frozen (SIGSTOP) while the folder is looked at, so it cannot close that file in between."""
    def frozen_mid_file() -> bool:
        if sink.poll() is not None:
            raise AssertionError(f"the sink stopped ({sink.returncode}):\n{log.read_text()[-3000:]}")
        os.kill(sink.pid, signal.SIGSTOP)
        if list(drop.path.glob(".t1-*.partial")) and len(drop.mine()) >= 100:
            return True
        os.kill(sink.pid, signal.SIGCONT)
        return False
    wait_for(frozen_mid_file, "a half-written file after 100 committed rows", log)
    os.kill(sink.pid, signal.SIGKILL)
    sink.wait()
    return sorted(p.name for p in drop.path.glob(".*.partial"))


@pytest.mark.parametrize("kind", ["csv", "parquet"])
def test_a_killed_file_sink_leaves_only_complete_files_with_every_row_once(services: Endpoints, gate: GateThread,
                                                                           tmp_path: Path, kind: str) -> None:
    prefix = f"F{uuid.uuid4().hex[:6].upper()}"
    cases = spread(specimen_day(), TOTAL, ["leicester"], prefix=prefix)
    config, log = write_config(tmp_path, services, kind), tmp_path / "sink.log"
    drop = Drop(tmp_path / "drop", prefix)

    publish(services, T1, cases[: TOTAL // 2])
    sink = start_sink(config, log)
    try:
        half_written = kill_mid_file(sink, drop, log)
        assert half_written, "the sink was killed with a file open"
        assert all(not (drop.path / name[1:-len(".partial")]).exists() for name in half_written)
        publish(services, T1, cases[TOTAL // 2:])
        sink = start_sink(config, log)
        wait_for(lambda: len(drop.mine()) >= TOTAL, f"all {TOTAL} rows in committed files", log)
        sink.send_signal(signal.SIGTERM)
        assert sink.wait(timeout=60) == 0, log.read_text()[-3000:]
    finally:
        if sink.poll() is None:
            sink.kill()
            sink.wait()

    assert sorted(p.name for p in drop.path.iterdir() if p.name.startswith(".")) == [".t1.positions.json"]
    files = committed(drop.path)
    assert sorted(p.name for p in drop.path.iterdir() if not p.name.startswith(".")) == sorted(
        [f.name for f in files] + [f.name + MANIFEST for f in files])  # no file without its manifest
    check_manifests(files, kind)
    rows = drop.mine()
    assert collections.Counter(r["specimen_id"] for r in rows).most_common(1)[0][1] == 1
    assert {r["specimen_id"]: tuple(r[f] for f in FIELDS) for r in rows} == {
        c["specimen_id"]: tuple(cell(c[f], kind) for f in FIELDS) for c in cases}
    status = subprocess.run([sys.executable, "-m", "broker", "connect", "status", str(config)],
                            capture_output=True, text=True, check=True).stdout
    (line,) = [line for line in status.splitlines() if line.startswith(TOPIC)]
    assert line.split()[-1] == "0", status  # lag: every committed delivery is in a committed file


def check_manifests(files: list[Path], kind: str) -> None:
    """Each manifest matches its file, and the files' offset ranges follow one another without overlap."""
    previous: dict[str, int] = {}
    for number, path in enumerate(files, start=1):
        manifest = json.loads((path.parent / (path.name + MANIFEST)).read_text())
        data = path.read_bytes()
        assert (manifest["sha256"], manifest["bytes"]) == (hashlib.sha256(data).hexdigest(), len(data)), path
        assert (manifest["file"], manifest["format"], manifest["topic"]) == (path.name, kind, TOPIC)
        assert manifest["rows"] == len(rows_of(path)) and manifest["sequence"] == number
        for partition, span in manifest["partitions"].items():
            assert previous.get(partition, -1) < span["first_offset"] <= span["last_offset"]
            assert span["last_offset"] < manifest["positions"][partition]
            previous[partition] = span["last_offset"]


def cell(value: Any, kind: str) -> Any:
    """A published value as the file holds it: Parquet keeps the type; CSV holds text (dates ISO, null empty)."""
    if kind == "parquet":
        return value
    return "" if value is None else value.isoformat() if isinstance(value, dt.date) else str(value)


def test_a_folder_that_cannot_be_written_is_reported_and_waited_for(services: Endpoints, gate: GateThread,
                                                                      tmp_path: Path) -> None:
    # The share is not mounted: where the folder should be, a file is in the way.
    prefix = f"W{uuid.uuid4().hex[:6].upper()}"
    cases = spread(specimen_day(), 40, ["leicester"], prefix=prefix)
    (tmp_path / "share").write_text("not a folder")
    config, log = write_config(tmp_path, services, "csv", "share/drop"), tmp_path / "sink.log"
    drop = Drop(tmp_path / "share" / "drop", prefix)
    publish(services, T1, cases)
    sink = start_sink(config, log)
    try:
        wait_for(lambda: "drop: Not a directory" in log.read_text() and sink.poll() is None,
                 "the error naming the folder, with the sink still running", log)
        assert f"cannot list {drop.path}: Not a directory" in log.read_text()
        (tmp_path / "share").unlink()  # mounted at last
        wait_for(lambda: len(drop.mine()) >= len(cases), f"all {len(cases)} rows in committed files", log)
        sink.send_signal(signal.SIGTERM)
        assert sink.wait(timeout=60) == 0, log.read_text()[-3000:]
    finally:
        if sink.poll() is None:
            sink.kill()
            sink.wait()
    assert sorted(r["specimen_id"] for r in drop.mine()) == sorted(c["specimen_id"] for c in cases)
    check_manifests(committed(drop.path), "csv")
