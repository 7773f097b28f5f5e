"""Idempotent publishing on the real Kafka: a request retried with the same Idempotency-Key publishes one copy,
whether the retry reaches the same API process, another API instance, one started after a restart, or two instances
at the same moment; the same key with another body is refused with 409.

The session's API process is one instance; the others run in this process over the session's Kafka as the API's own
Kafka user (`accord.api`, so its ACLs are exercised), each with its own producers and its own follower of the keys
topic: what they share is only what Kafka holds, as two API processes would.
"""

from __future__ import annotations

import json
import uuid
from collections import Counter
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from typing import Any

import httpx
from fastapi.testclient import TestClient

from broker.adapters.kafka_access import KafkaAccess
from broker.adapters.kafka_log import KafkaLog
from broker.api.app import create_api_app
from broker.api.auth import Guard
from broker.config import Settings
from broker.demo.synthetic import nhs_number
from broker.domain.messages import Record
from broker.domain.topics import ingest_topic, quarantine_topic
from broker.local.stack import Endpoints
from broker.runtime.api import open_ingest
from broker.security.api_tokens import verifier_for
from broker.services.ingest import REQUEST_KEY_HEADER, read_quarantine
from tests.conftest import bearer, opa_as
from tests.integration.gate_support import partition_ends

STREAM = "ukhsa.positive-tests"


def _ukhsa() -> dict[str, str]:
    return bearer("ukhsa", "ig-lead")  # signed when asked: the session makes its token key at start


def _case(prefix: str, n: int, **overrides: Any) -> dict[str, Any]:
    case = {
        "specimen_id": f"{prefix}-{n}", "nhs_number": nhs_number(n), "name": "Alex Example", "dob": "1984-03-07",
        "sex": "FEMALE", "ethnicity": "H", "address": "1 Example Road, Leicester", "postcode": "LE1 1AA",
        "occupation": None, "specimen_date": "2020-06-22", "lab_report_date": "2020-06-23", "test_type": "PCR",
        "pillar": "PILLAR_2", "lsoa": "E01013627", "msoa": "E02002807", "ltla": "E06000016", "utla": "E06000016",
    }
    return case | overrides


def _body(prefix: str) -> dict[str, Any]:
    # Two good records and one the checks refuse (its NHS number's check digit is wrong): all are published once.
    return {"records": [_case(prefix, 1), _case(prefix, 2), _case(prefix, 3, nhs_number="9434765918")]}


def _since(kafka: KafkaAccess) -> tuple[dict[int, int], dict[int, int]]:
    """Where the ingest and quarantine topics end before a test publishes: it reads only what comes after."""
    return partition_ends(kafka, ingest_topic(STREAM)), partition_ends(kafka, quarantine_topic(STREAM))


def _after(kafka: KafkaAccess, topic: str, since: dict[int, int]) -> list[Record]:
    log = KafkaLog(kafka, client_id="test-idempotency-count")
    try:
        return log.read(topic, max_records=1_000_000, timeout_s=4.0, start_offset=since,
                        partitions=sorted(since) or None)
    finally:
        log.close()


def _copies(kafka: KafkaAccess, since: tuple[dict[int, int], dict[int, int]]) -> Counter[bytes]:
    """Records on the ingest topic (committed, every partition) by the Idempotency-Key of the request that sent them."""
    return Counter(value for r in _after(kafka, ingest_topic(STREAM), since[0])
                   for name, value in r.headers if name == REQUEST_KEY_HEADER)


def _quarantined(kafka: KafkaAccess, prefix: str, since: tuple[dict[int, int], dict[int, int]]) -> int:
    entries = [json.loads(r.value) for r in _after(kafka, quarantine_topic(STREAM), since[1]) if r.value]
    return sum(isinstance(e.get("record"), dict) and str(e["record"].get("specimen_id", "")).startswith(f"{prefix}-")
               for e in entries)


@contextmanager
def _instance(kafka: KafkaAccess, services: Endpoints) -> Iterator[TestClient]:
    """Another API instance: its own Kafka clients (as `accord.api`), the session's token key and OPA."""
    settings = Settings()
    guard = Guard(verifier_for(settings.secrets_dir).verify, opa_as(services.opa_url, "reader"))
    with open_ingest(kafka, services.registry_url, settings) as (ingest, log), \
            TestClient(create_api_app(ingest, lambda stream, limit: read_quarantine(log, stream, limit),
                                      guard=guard)) as client:
        yield client


def _post(client: httpx.Client | TestClient, key: str, body: dict[str, Any]) -> Any:
    return client.post(f"/streams/{STREAM}/records", json=body, headers={**_ukhsa(), "Idempotency-Key": key})


def test_a_retried_request_publishes_one_copy_across_instances_and_restarts(
        services: Endpoints, applied_catalog: dict[str, Any], kafka_as: Callable[[str], KafkaAccess]) -> None:
    key, prefix = f"retry-{uuid.uuid4()}", f"IDEM-{uuid.uuid4().hex[:10]}"
    since = _since(services.kafka)
    api = httpx.Client(base_url=services.api_url, timeout=60)
    try:
        first = _post(api, key, _body(prefix))
        assert first.status_code == 200, first.text
        assert (first.json()["accepted"], first.json()["quarantined"]) == (2, 1)
        assert "Idempotent-Replayed" not in first.headers
        same_process = _post(api, key, _body(prefix))
        with _instance(kafka_as("accord.api"), services) as other:
            other_instance = _post(other, key, _body(prefix))
        # A restart: nothing of the instances before survives but what Kafka holds.
        with _instance(kafka_as("accord.api"), services) as restarted:
            after_restart = _post(restarted, key, _body(prefix))
            changed = _post(restarted, key, {"records": [_case(prefix, 9)]})
    finally:
        api.close()
    for retry in (same_process, other_instance, after_restart):
        assert retry.status_code == 200, retry.text
        assert retry.headers["Idempotent-Replayed"] == "true" and retry.json() == first.json()
    assert changed.status_code == 409 and "different request body" in changed.json()["error"]
    assert _copies(services.kafka, since)[key.encode()] == 2, "each accepted record once, however often it was retried"
    assert _quarantined(services.kafka, prefix, since) == 1, "the refused record quarantined once"


def test_a_retry_racing_the_first_request_on_another_instance_publishes_one_copy(
        services: Endpoints, applied_catalog: dict[str, Any], kafka_as: Callable[[str], KafkaAccess]) -> None:
    keys = [f"race-{uuid.uuid4()}" for _ in range(6)]
    bodies = {key: _body(f"RACE-{uuid.uuid4().hex[:10]}") for key in keys}
    since = _since(services.kafka)
    api = httpx.Client(base_url=services.api_url, timeout=60)
    try:
        with _instance(kafka_as("accord.api"), services) as other, \
                ThreadPoolExecutor(max_workers=4) as pool:
            # Each key is sent to both instances at once (twice to the other one): they race for it.
            futures = {key: [pool.submit(_post, client, key, bodies[key]) for client in (api, other, other)]
                       for key in keys}
            answers = {key: [f.result() for f in sent] for key, sent in futures.items()}
    finally:
        api.close()
    copies = _copies(services.kafka, since)
    for key, sent in answers.items():
        assert [r.status_code for r in sent] == [200, 200, 200], [r.text for r in sent]
        assert sent[0].json() == sent[1].json() == sent[2].json()
        assert sum("Idempotent-Replayed" not in r.headers for r in sent) == 1, "exactly one of them published"
        assert copies[key.encode()] == 2


def test_requests_without_a_key_still_publish_each_time(services: Endpoints, applied_catalog: dict[str, Any]) -> None:
    prefix = f"NOKEY-{uuid.uuid4().hex[:10]}"
    body = {"records": [_case(prefix, 1)]}
    for _ in range(2):
        response = httpx.post(f"{services.api_url}/streams/{STREAM}/records", json=body, headers=_ukhsa(), timeout=60)
        assert response.status_code == 200 and response.json()["accepted"] == 1, response.text
    bad_key = httpx.post(f"{services.api_url}/streams/{STREAM}/records", json=body, timeout=60,
                         headers={**_ukhsa(), "Idempotency-Key": "x" * 300})
    assert bad_key.status_code == 400 and "Idempotency-Key must be 1 to 255" in bad_key.json()["error"]
