"""What the HTTP and PostgreSQL source tests share: a publisher's API token, the committed records of the sitrep
stream's ingest topic (decoded with the registry) for the trusts a test made up, and `accord connect run` as a
subprocess with the rows its state directory has stored."""

from __future__ import annotations

import datetime as dt
import io
import json
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any

from fastavro import parse_schema, schemaless_reader

from broker.adapters.kafka_log import KafkaLog
from broker.adapters.registry_http import HttpSchemaRegistry
from broker.config import Settings
from broker.domain.topics import ingest_topic
from broker.domain.wire import unframe
from broker.local.stack import Endpoints
from broker.local.toolchain import REPO_ROOT
from broker.security.api_tokens import issue, signing_key, write_token
from tests.conftest import service_tokens

STREAM = "nhse.hospital-sitrep"
SCHEMA_FILE = REPO_ROOT / "schemas" / f"{STREAM}.avsc"


def api_token(directory: Path) -> Path:
    """A token of NHS England's IG lead (the stream's publisher) for the session's API, in a file."""
    path = directory / "api.token"
    write_token(path, issue(signing_key(Settings().secrets_dir), "nhse", "ig-lead", "source-test",
                            dt.timedelta(hours=2), dt.datetime.now(dt.UTC)))
    return path


def published(services: Endpoints, trust_prefix: str, timeout_s: float = 20.0) -> list[dict[str, Any]]:
    """Every committed record on the stream's ingest topic whose trust code starts with `trust_prefix`."""
    log = KafkaLog(services.kafka, client_id="test-source-count")
    try:
        records = log.read(ingest_topic(STREAM), max_records=10_000_000, timeout_s=timeout_s)
    finally:
        log.close()
    registry = HttpSchemaRegistry(services.registry_url, token=service_tokens())
    schemas: dict[int, Any] = {}
    found = []
    try:
        for record in records:
            if record.value is None or trust_prefix.encode() not in record.value:
                continue  # another test's record (the trust code is in the Avro body as it is)
            schema_id, body = unframe(record.value)
            if schema_id not in schemas:
                schemas[schema_id] = parse_schema(json.loads(registry.schema_by_id(schema_id)))
            value = schemaless_reader(io.BytesIO(body), schemas[schema_id], None)
            if isinstance(value, dict) and str(value.get("trust_ods_code", "")).startswith(trust_prefix):
                found.append(value)
    finally:
        registry.close()
    return found


def copies(records: list[dict[str, Any]], field: str) -> Counter[Any]:
    return Counter(r[field] for r in records)

def start(config: Path, log: Path, *options: str) -> subprocess.Popen[bytes]:
    with log.open("ab") as out:
        return subprocess.Popen([sys.executable, "-m", "broker", "connect", "run", str(config), *options],
                                stdout=out, stderr=subprocess.STDOUT)


def stored_rows(state: Path) -> int:
    try:
        return int(json.loads((state / "position.json").read_text())["totals"]["rows"])
    except (FileNotFoundError, ValueError, KeyError):
        return 0


def wait_for(condition: Callable[[], bool], what: str, log: Path, timeout_s: float = 600.0) -> None:
    deadline = time.monotonic() + timeout_s
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"{what} did not happen within {timeout_s:.0f}s; log:\n{log.read_text()[-3000:]}")
        time.sleep(0.1)
