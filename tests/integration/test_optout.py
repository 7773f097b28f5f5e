"""The National Data Opt-out on the real Kafka, OPA and gate: `accord optout load` keeps the list as keyed hashes,
and an opted-out patient's row is withheld from a subscriber whose agreement rests on section 251 support (planning)
while the COPI-notice subscriber still receives it; the withheld rows are counted per subscriber, not quarantined."""

from __future__ import annotations

import json
import os
import random
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from broker.adapters.kafka_log import KafkaLog
from broker.adapters.metrics import withheld_count
from broker.config import Settings
from broker.demo.synthetic import positive_tests
from broker.domain.audit_records import WITHHELD_BATCH
from broker.domain.kafka_acls import SERVICE_USERS
from broker.domain.optout import NO_NHS_NUMBER, OPTED_OUT, check_digit
from broker.domain.topics import AUDIT_TOPIC, OPTOUT_TOPIC, quarantine_topic
from broker.local.stack import Endpoints
from broker.runtime.gate import GateThread
from broker.security.kafka_identities import password_path
from tests.integration.gate_support import (
    PLANNING_ROLE,
    T1,
    Receiver,
    end_offsets,
    publish,
    specimen_day,
    start_gate,
    topic_for,
)

LEICESTER = "leicester-city-council"
PLANNING = topic_for(LEICESTER, PLANNING_ROLE)
COPI = topic_for(LEICESTER, "dph")


def nhs_number(rng: random.Random) -> str:
    """A valid number in the range NHS England reserves for testing (999 000 0000 to 999 999 9999)."""
    while True:
        first = f"999{rng.randint(0, 999_999):06d}"
        digit = check_digit(first)
        if digit is not None:
            return f"{first}{digit}"


@pytest.fixture(scope="module")
def gate(services: Endpoints, applied_catalog: dict[str, Any]) -> Iterator[GateThread]:
    runner = start_gate(services, "test-optout", "optout-worker")
    yield runner
    runner.stop()
    assert runner.failure is None, runner.failure


def _load(services: Endpoints, secrets: Path, listing: Path) -> subprocess.CompletedProcess[str]:
    # As the list's keeper runs it: logged in to Kafka as the opt-out user, the only one that may write the list
    # (the session's state directory, with the opt-out key the gate hashes with, is in this process's environment).
    user = SERVICE_USERS["optout"]
    env = {**os.environ, "ACCORD_KAFKA_BOOTSTRAP": services.kafka.bootstrap, "ACCORD_KAFKA_USERNAME": user,
           "ACCORD_KAFKA_SECURITY_PROTOCOL": "SASL_PLAINTEXT",
           "ACCORD_KAFKA_PASSWORD_FILE": str(password_path(secrets, user))}
    return subprocess.run([sys.executable, "-m", "broker", "optout", "load", str(listing)], capture_output=True,
                          text=True, env=env, timeout=300, check=False)


def _read(services: Endpoints, topic: str, start: int, key: bytes | None = None) -> list[dict[str, Any]]:
    """The JSON records of one-partition `topic` from `start` (with `key`, if given)."""
    log = KafkaLog(services.kafka, client_id="test-optout-read")
    try:
        records = log.read(topic, max_records=100_000, timeout_s=3.0, start_offset=start)
    finally:
        log.close()
    return [json.loads(r.value or b"{}") for r in records if key is None or r.key == key]


def _withheld(reason: str) -> float:
    return withheld_count(LEICESTER, PLANNING_ROLE, T1, reason)


def test_an_opted_out_patient_is_withheld_from_planning_and_delivered_under_copi(
        services: Endpoints, gate: GateThread, receiver: Receiver, local_settings: Settings, tmp_path: Path) -> None:
    rng = random.Random()
    opted, kept = nhs_number(rng), nhs_number(rng)
    listing = tmp_path / "optout.txt"
    listing.write_text(f"# the day's opt-outs\n{opted}\n")
    loaded = _load(services, local_settings.secrets_dir, listing)
    assert loaded.returncode == 0, loaded.stderr
    assert "1 patients opted out" in loaded.stdout
    assert opted not in loaded.stdout + loaded.stderr

    # Only keyed hashes are on the list's topic: the number is in no key and no value.
    log = KafkaLog(services.kafka, client_id="test-optout-read")
    try:
        entries = log.read(OPTOUT_TOPIC, max_records=100_000, timeout_s=2.0)
    finally:
        log.close()
    assert entries and all(opted.encode() not in (e.key or b"") + (e.value or b"") for e in entries)

    starts = end_offsets(services.kafka, [PLANNING, COPI, AUDIT_TOPIC, quarantine_topic(T1)])
    before = {reason: _withheld(reason) for reason in (OPTED_OUT, NO_NHS_NUMBER)}
    cases = positive_tests(specimen_day(), {"leicester": 3}, prefix=f"O{rng.randint(0, 10**6):06d}",
                           seed=rng.randint(0, 10**6))
    for case, number in zip(cases, (opted, kept, None), strict=True):
        case["nhs_number"] = number
    sources = publish(services, T1, cases)
    number_of = {source: case["nhs_number"] for source, case in sources.items()}

    def ours(_: dict[str, Any], headers: dict[str, bytes]) -> bool:
        return headers.get("accord.source") in sources

    # The COPI notice is exempt: Leicester's DPH receives all three rows. They and the planning deliveries of the same
    # records are committed in one gate transaction, so the planning topic is complete once these are here.
    copi = receiver.records(COPI, starts[COPI], ours, want=3, timeout_s=120)
    assert sorted(str(v["nhs_number"]) for v, _ in copi) == sorted([opted, kept, "None"])
    planning = receiver.records(PLANNING, starts[PLANNING], ours, want=1, timeout_s=60)
    assert [number_of[h["accord.source"]] for _, h in planning] == [kept]
    assert planning[0][0]["nhs_number"] not in (kept, None), "the planning tier pseudonymises the NHS number"

    # Counted per subscriber and reason (the gate counts a batch right after committing it).
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline and any(_withheld(r) < before[r] + 1 for r in (OPTED_OUT, NO_NHS_NUMBER)):
        time.sleep(0.2)
    assert _withheld(OPTED_OUT) - before[OPTED_OUT] == 1
    assert _withheld(NO_NHS_NUMBER) - before[NO_NHS_NUMBER] == 1
    # Audited with the batch, as withheld (rule and reason counts, the ingest offsets), never a value. The batch's
    # audit record is in its transaction, so it is there once the deliveries above are.
    ours_audited = [a for a in _read(services, AUDIT_TOPIC, starts[AUDIT_TOPIC], WITHHELD_BATCH.encode())
                    if a["topic"] == PLANNING and any(
                        f"{s['topic']}/{s['partition']}/{o}".encode() in sources
                        for s in a["sources"] for first, last in s["offsets"] for o in range(first, last + 1))]
    assert sum(a["reasons"].get(OPTED_OUT, 0) for a in ours_audited) == 1
    assert sum(a["reasons"].get(NO_NHS_NUMBER, 0) for a in ours_audited) == 1
    assert all(a["rule"] == "national-data-opt-out" and opted not in json.dumps(a) for a in ours_audited)
    # Lawful withholding is not quarantine: none of our rows went there.
    placed = [q.get("source", {}) for q in _read(services, quarantine_topic(T1), starts[quarantine_topic(T1)])]
    places = {f"{p.get('topic')}/{p.get('partition')}/{p.get('offset')}".encode() for p in placed}
    assert not places & set(sources), "withheld rows are not quarantined"
