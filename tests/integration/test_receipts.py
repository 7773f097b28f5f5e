"""Proof of delivery on the real Kafka, OPA, registry, gate, API, governance service (with its audit chainer) and
PostgreSQL: a subscriber registers its own key and acknowledges what it read with its own Kafka login; the API
verifies the signature and the records' hash and refuses a tampered receipt, another body's topic and an unknown
or retired key; the PostgreSQL and file sinks with receipts configured acknowledge what they store (the file
sink once the files holding it are committed), and
`accord audit receipts` shows that acknowledged and the rest not yet."""

from __future__ import annotations

import json
import signal
import subprocess
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from typer.testing import CliRunner

from broker.adapters.kafka_access import KafkaAccess
from broker.adapters.kafka_partitions import KafkaPartitionReader
from broker.adapters.postgres import PostgresDatabase
from broker.cli import app
from broker.config import Settings
from broker.demo.synthetic import spread
from broker.domain.kafka_acls import subscriber_user
from broker.domain.messages import Record
from broker.domain.receipts import Claim, fingerprint, public_key_text, range_digest, sign
from broker.errors import ServiceError
from broker.local import postgres_server
from broker.local.stack import Endpoints
from broker.runtime.gate import GateThread
from broker.security.receipt_keys import load_receipt_key
from tests.conftest import bearer, kafka_env
from tests.integration.gate_support import T1, publish, specimen_day, start_gate, topic_for
from tests.integration.governance_process import GovernanceProcess
from tests.integration.test_file_sink import start_sink as start_file_sink
from tests.integration.test_file_sink import write_config as file_sink_config
from tests.integration.test_postgres_sink import start_sink, write_config

BODY, OTHER = "leicester-city-council", "nottingham-city-council"
TOPIC = topic_for(BODY, "dph")
PATIENCE_S = 180.0   # a bound for failing, never a measurement
runner = CliRunner()


@pytest.fixture(scope="module")
def gate(services: Endpoints, applied_catalog: dict[str, Any]) -> Iterator[GateThread]:
    worker = start_gate(services, "test-receipts", "receipts-worker")
    yield worker
    worker.stop()
    assert worker.failure is None, worker.failure


@pytest.fixture(scope="module")
def governance(services: Endpoints, applied_catalog: dict[str, Any], local_settings: Settings,
               tmp_path_factory: pytest.TempPathFactory) -> Iterator[GovernanceProcess]:
    """`accord governance serve`: it registers keys, and its audit chainer chains what the API and gate audit."""
    process = GovernanceProcess(services, local_settings, tmp_path_factory.mktemp("governance"))
    process.start()
    yield process
    process.stop()


def wait_for(condition: Callable[[], bool], what: str) -> None:
    deadline = time.monotonic() + PATIENCE_S
    while not condition():
        assert time.monotonic() < deadline, f"gave up waiting for {what}"
        time.sleep(0.3)


def register(governance: GovernanceProcess, key: Ed25519PrivateKey, body: str = BODY) -> str:
    with httpx.Client(base_url=governance.url, timeout=30, trust_env=False) as client:
        answer = client.post("/receipt-keys", json={"public_key": public_key_text(key.public_key())},
                             headers=bearer(body, "dph", "receipts-test"))
    assert answer.status_code == 201, answer.text
    assert answer.json()["key_id"] == fingerprint(key.public_key())
    return str(answer.json()["key_id"])


def delivered(kafka: KafkaAccess, start: int, want: int) -> list[Record]:
    """At least `want` committed records of Leicester's DPH topic from `start`, read with its own Kafka login."""
    reader = KafkaPartitionReader(kafka, TOPIC, client_id="receipts-test")
    try:
        reader.seek({0: start})
        found: list[Record] = []

        def enough() -> bool:
            found.extend(reader.poll(1000, 0.5))
            return len(found) >= want
        wait_for(enough, f"{want} deliveries")
        return found
    finally:
        reader.close()


def end_of(kafka: KafkaAccess) -> int:
    reader = KafkaPartitionReader(kafka, TOPIC, client_id="receipts-test")
    try:
        return reader.end_offsets().get(0, 0)
    finally:
        reader.close()


def receipts_report(services: Endpoints, *options: str) -> list[dict[str, Any]]:
    result = runner.invoke(app, ["audit", "receipts", "--body", BODY, "--json", *options],
                           env=kafka_env(services.kafka))
    assert result.exit_code == 0, result.output
    return [json.loads(line) for line in result.output.splitlines() if line.startswith("{")]


def partition(report: list[dict[str, Any]]) -> dict[str, Any]:
    return next((p for p in report if (p["topic"], p["partition"]) == (TOPIC, 0)),
                {"acknowledged": [], "unacknowledged": [], "delivered": []})


def acknowledged(services: Endpoints, first: int, last: int, key_id: str) -> bool:
    return {"first_offset": first, "last_offset": last, "key_id": key_id} in partition(
        receipts_report(services))["acknowledged"]


def test_a_subscribers_receipt_verifies_and_tampered_foreign_or_unknown_ones_are_refused(
        services: Endpoints, gate: GateThread, governance: GovernanceProcess,
        kafka_as: Callable[[str], KafkaAccess]) -> None:
    key = Ed25519PrivateKey.generate()
    key_id = register(governance, key)
    dph = kafka_as(subscriber_user(BODY, "dph"))
    start = end_of(dph) if _topic_exists(dph) else 0
    prefix = f"R{uuid.uuid4().hex[:6].upper()}"
    publish(services, T1, spread(specimen_day(), 20, ["leicester"], prefix=prefix))
    records = delivered(dph, start, 20)
    first, last = records[0].offset, records[-1].offset
    claim = Claim(TOPIC, 0, first, last, range_digest(records), key_id)

    with httpx.Client(base_url=services.api_url, timeout=30, trust_env=False) as client:
        def post(c: Claim, signature: str, body: str = BODY, stream: str = T1) -> httpx.Response:
            return client.post(f"/deliveries/{stream}/receipts", json={**c.to_json(), "signature": signature},
                               headers=bearer(body, "dph", "receipts-test"))

        accepted = post(claim, sign(key, claim))
        assert accepted.status_code == 201, accepted.text
        assert accepted.json()["receipt"]["records"] == len(records)
        assert post(claim, sign(key, claim)).status_code == 201          # idempotent per range

        tampered = Claim(TOPIC, 0, first, last, "0" * 64, key_id)
        refused = post(tampered, sign(key, tampered))
        assert refused.status_code == 409 and "not for what was delivered" in refused.json()["error"]
        shifted = Claim(TOPIC, 0, first, last - 1, claim.records_digest, key_id)
        assert post(shifted, sign(key, claim)).status_code == 422                 # the signature is not for it
        other_topic = Claim(topic_for(OTHER, "dph"), 0, 0, 0, claim.records_digest, key_id)
        foreign = post(other_topic, sign(key, other_topic))
        assert foreign.status_code == 403 and "only its own delivery topic" in foreign.json()["error"]
        assert post(claim, sign(key, claim), body=OTHER).status_code == 403       # Nottingham sending it
        stranger = Ed25519PrivateKey.generate()
        unknown = Claim(TOPIC, 0, first, last, claim.records_digest, fingerprint(stranger.public_key()))
        answer = post(unknown, sign(stranger, unknown))
        assert answer.status_code == 422 and "no receipt key" in answer.json()["error"]
        beyond = Claim(TOPIC, 0, first, last + 1_000, claim.records_digest, key_id)
        assert post(beyond, sign(key, beyond)).status_code == 416
        too_long = Claim(TOPIC, 0, 0, 1_000_000, claim.records_digest, key_id)
        assert post(too_long, sign(key, too_long)).status_code == 400
        assert post(claim, "bm90IGEgc2lnbmF0dXJl").status_code == 422
        assert client.post(f"/deliveries/{T1}/receipts", json={"topic": TOPIC},
                           headers=bearer(BODY, "dph")).status_code == 422                 # malformed: not 500

        wait_for(lambda: acknowledged(services, first, last, key_id), "the receipt on the audit chain")
        with httpx.Client(base_url=governance.url, timeout=30, trust_env=False) as gov:
            retired = gov.post(f"/receipt-keys/{key_id}/retire", headers=bearer(BODY, "dph", "receipts-test"))
            assert retired.status_code == 200, retired.text
            assert gov.post(f"/receipt-keys/{key_id}/retire",
                            headers=bearer(OTHER, "dph", "receipts-test")).status_code == 403
        after = post(claim, sign(key, claim))
        assert after.status_code == 422 and "retired" in after.json()["error"]


def _topic_exists(kafka: KafkaAccess) -> bool:
    try:
        end_of(kafka)
    except ServiceError:   # the reader refuses a topic nothing was delivered to yet
        return False
    return True


def test_the_postgres_sink_acknowledges_what_it_stores_and_the_rest_is_listed_as_not_yet(
        services: Endpoints, gate: GateThread, governance: GovernanceProcess, postgres: str, tmp_path: Path,
        kafka_as: Callable[[str], KafkaAccess]) -> None:
    out = tmp_path / "keys"
    token = bearer(BODY, "dph", "receipts-test")["Authorization"].removeprefix("Bearer ")
    made = runner.invoke(app, ["credentials", "receipt-key", "--body", BODY, "--out", str(out), "--register",
                               "--token", token], env={"ACCORD_GOVERNANCE_URL": governance.url})
    assert made.exit_code == 0, made.output
    (private,) = out.glob("*.key")
    assert private.stat().st_mode & 0o777 == 0o600
    key_id = fingerprint(load_receipt_key(private).public_key())
    assert f"registered receipt key {key_id} for {BODY}" in made.output

    prefix = f"P{uuid.uuid4().hex[:6].upper()}"
    table = f"t1_{prefix.lower()}"
    config = write_config(tmp_path, services, postgres, table)
    with config.open("a") as yaml_file:
        yaml_file.write(f'receipts: {{key_file: "{private}", api_url: "{services.api_url}"}}\n')
    dph = kafka_as(subscriber_user(BODY, "dph"))
    # The topic is shared with earlier tests: the claim checked is over the offsets this test's rows landed in.
    begun = end_of(dph)
    publish(services, T1, spread(specimen_day(), 50, ["leicester"], prefix=prefix))
    password = postgres_server.password_file(Settings().secrets_dir).read_text().strip()
    log = tmp_path / "sink.log"
    with PostgresDatabase(postgres, password) as database:
        def rows() -> int:
            if not database.query("SELECT to_regclass(%s) IS NOT NULL", (table,))[0][0]:
                return 0
            return int(database.query(f"SELECT count(*) FROM {table} WHERE specimen_id LIKE %s",
                                      (prefix + "-%",))[0][0])
        sink = start_sink(config, log)
        try:
            wait_for(lambda: rows() == 50, "the sink's 50 rows")
            stored_end = end_of(dph)
            # Everything the sink stored from this test's first row to the end is acknowledged, with its key.
            try:
                wait_for(lambda: _covered(partition(receipts_report(services)), begun, stored_end, key_id),
                         f"receipts of offsets {begun}-{stored_end - 1}; sink log:\n{log.read_text()[-2000:]}")
            except AssertionError as exc:   # what stayed unacknowledged, for whoever reads the failure
                found = partition(receipts_report(services))
                raise AssertionError(f"{exc}\nunacknowledged runs (first 10): {found['unacknowledged'][:10]}; "
                                     f"acknowledged: {len(found['acknowledged'])} receipts") from None
        finally:
            sink.send_signal(signal.SIGTERM)
            try:
                sink.wait(timeout=60)
            except subprocess.TimeoutExpired:
                sink.kill()
                sink.wait()

    later = f"Q{uuid.uuid4().hex[:6].upper()}"
    publish(services, T1, spread(specimen_day(), 10, ["leicester"], prefix=later))
    tail = delivered(dph, stored_end, 10)
    first, last = tail[0].offset, tail[-1].offset

    def tail_unacknowledged() -> bool:
        # Each of these records in an unacknowledged run (a run ends at a transaction marker between batches).
        runs = partition(receipts_report(services))["unacknowledged"]
        return all(any(a <= r.offset <= b for a, b in runs) for r in tail)
    wait_for(tail_unacknowledged, f"offsets {first}-{last} listed as not yet acknowledged")
    text = runner.invoke(app, ["audit", "receipts", "--body", BODY], env=kafka_env(services.kafka))
    assert text.exit_code == 0, text.output
    assert f"with key {key_id} (signature verified)" in text.output and "not yet acknowledged" in text.output
    # Verifying with a key that is not the body's fails: the listing is checked, not just printed.
    other = tmp_path / "other.pub"
    other.write_text(public_key_text(Ed25519PrivateKey.generate().public_key()))
    refused = runner.invoke(app, ["audit", "receipts", "--body", BODY, "--key", str(other)],
                            env=kafka_env(services.kafka))
    assert refused.exit_code == 1 and "does not verify" in refused.output


def _covered(part: dict[str, Any], begun: int, end: int, key_id: str) -> bool:
    """Every delivered offset from `begun` to below `end` acknowledged, and some by `key_id`."""
    return (bool(part["delivered"]) and all(b < begun or a >= end for a, b in part["unacknowledged"])
            and any(r["key_id"] == key_id for r in part["acknowledged"]))


def test_the_file_sink_acknowledges_a_batch_once_the_files_holding_it_are_committed(
        services: Endpoints, gate: GateThread, governance: GovernanceProcess, tmp_path: Path,
        kafka_as: Callable[[str], KafkaAccess]) -> None:
    key = Ed25519PrivateKey.generate()
    key_id = register(governance, key)
    private = tmp_path / "receipt.key"
    private.write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                          serialization.NoEncryption()))
    private.chmod(0o600)
    config = file_sink_config(tmp_path, services, "csv", drop="drop")
    with config.open("a") as yaml_file:
        yaml_file.write(f'receipts: {{key_file: "{private}", api_url: "{services.api_url}"}}\n')
    prefix = f"F{uuid.uuid4().hex[:6].upper()}"
    dph = kafka_as(subscriber_user(BODY, "dph"))
    begun = end_of(dph)     # the topic is shared with earlier tests: the claim is over this test's offsets
    publish(services, T1, spread(specimen_day(), 50, ["leicester"], prefix=prefix))
    stored_end = delivered(dph, begun, 50)[-1].offset + 1
    log = tmp_path / "sink.log"
    sink = start_file_sink(config, log)
    try:
        # Files close 3 s after their first row, so every delivered record is in a committed file before long,
        # and only then acknowledged with this key.
        wait_for(lambda: _covered(partition(receipts_report(services)), begun, stored_end, key_id),
                 f"receipts of offsets {begun}-{stored_end - 1}; sink log:\n{log.read_text()[-2000:]}")
    finally:
        sink.send_signal(signal.SIGTERM)
        try:
            sink.wait(timeout=60)
        except subprocess.TimeoutExpired:
            sink.kill()
            sink.wait()
    manifests = sorted((tmp_path / "drop").glob("*.manifest.json"))
    assert manifests and sum(json.loads(m.read_text())["rows"] for m in manifests) >= 50
