"""Proof of delivery with in-memory ports: the API's use case checking receipts, the governance API registering and
retiring keys, and the sink base sending a receipt after each stored batch (and later, when sending fails)."""

from __future__ import annotations

import datetime as dt
import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import httpx
import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from fastapi import FastAPI
from fastapi.testclient import TestClient

from broker.adapters.receipts_http import HttpReceipts
from broker.adapters.registry_memory import InMemorySchemaRegistry
from broker.api.auth import guarded
from broker.api.receipts import add_receipt_routes
from broker.domain.receipt_ledger import ReceiptKey
from broker.domain.receipts import Claim, ReceiptError, fingerprint, public_key_text, range_digest, sign
from broker.errors import ServiceError
from broker.services.receipts import DeliveryReceipts
from connectors.config import SinkConfig, SinkConfigError, load
from connectors.sinks.postgres import PostgresSink
from tests.unit.auth_fakes import bearer, guard
from tests.unit.deliveries_fakes import MemoryDeliveryLog
from tests.unit.governance_catalog import LEICESTER, catalog
from tests.unit.sink_fakes import FakeDatabase, FakeSource
from tests.unit.test_governance_api import DPH, make_api
from tests.unit.test_postgres_sink import GOOD, delivered, schema

STREAM = "ukhsa.positive-tests"
TOPIC = f"deliver.leicester.dph.{STREAM}"
KEY = Ed25519PrivateKey.generate()
KEY_ID = fingerprint(KEY.public_key())
ACTOR = {"body": "leicester", "role": "dph", "person": "ivan"}


class Keys:
    def __init__(self, *keys: ReceiptKey) -> None:
        self.keys = {k.key_id: k for k in keys}

    def get(self, key_id: str) -> ReceiptKey | None:
        return self.keys.get(key_id)


class Audit:
    def __init__(self) -> None:
        self.records: list[Mapping[str, Any]] = []

    def append(self, record: Mapping[str, Any]) -> None:
        self.records.append(record)


def registered(body: str = "leicester", retired_at: str | None = None, key: Ed25519PrivateKey = KEY) -> ReceiptKey:
    return ReceiptKey(fingerprint(key.public_key()), body, public_key_text(key.public_key()), "2026-12-01T09:00:00Z",
                      "ivan", retired_at)


COUNTED: list[str] = []


def service(*keys: ReceiptKey) -> tuple[DeliveryReceipts, MemoryDeliveryLog, Audit]:
    log, audit = MemoryDeliveryLog(), Audit()
    COUNTED.clear()
    for n in range(10):
        log.append(TOPIC, f"value-{n}".encode())
    log.append(TOPIC, b"other partition", partition=1)
    log.append(TOPIC, b"not committed yet", committed=False)
    clock = lambda: dt.datetime(2026, 12, 1, 10, tzinfo=dt.UTC)  # noqa: E731
    return DeliveryReceipts(log, Keys(*keys), audit, clock, count=COUNTED.append), log, audit


def signed(log: MemoryDeliveryLog, first: int, last: int, **changes: Any) -> tuple[Claim, str]:
    records = [r for r in log._committed(TOPIC, {}) if r.partition == 0 and first <= r.offset <= last]
    fields = {"topic": TOPIC, "partition": 0, "first_offset": first, "last_offset": last,
              "records_digest": range_digest(records), "key_id": KEY_ID, **changes}
    claim = Claim(**fields)
    return claim, sign(KEY, claim)


def test_a_receipt_for_committed_records_is_put_on_the_audit_trail() -> None:
    receipts, log, audit = service(registered())
    claim, signature = signed(log, 2, 7)
    record = receipts.accept(ACTOR, STREAM, claim, signature)
    assert audit.records == [record] and COUNTED == ["accepted"]
    assert (record["records"], record["first_offset"], record["last_offset"], record["key_id"], record["body"]) == (
        6, 2, 7, KEY_ID, "leicester")
    assert record["signature"] == signature and record["at"] == "2026-12-01T10:00:00.000000Z"


def refusal(receipts: DeliveryReceipts, claim: Claim, signature: str, stream: str = STREAM) -> ReceiptError:
    with pytest.raises(ReceiptError) as refused:
        receipts.accept(ACTOR, stream, claim, signature)
    return refused.value


def test_refusals_say_why_with_a_4xx_and_write_nothing() -> None:
    other, old = Ed25519PrivateKey.generate(), Ed25519PrivateKey.generate()
    receipts, log, audit = service(registered(), registered("blaby", key=other),
                                   registered(retired_at="2026-12-01T09:30:00Z", key=old))
    claim, signature = signed(log, 0, 4)
    mismatch = Claim(**{**claim.to_json(), "records_digest": "00" * 32})
    elsewhere = Claim(**{**claim.to_json(), "topic": TOPIC.replace("leicester", "blaby")})
    foreign = Claim(**{**claim.to_json(), "key_id": fingerprint(other.public_key())})
    retired = Claim(**{**claim.to_json(), "key_id": fingerprint(old.public_key())})
    beyond = Claim(**{**claim.to_json(), "last_offset": 10})     # offset 10 is not committed
    cases = [
        (refusal(receipts, elsewhere, sign(KEY, elsewhere)), 403, "acknowledges only its own delivery topic"),
        (refusal(receipts, claim, signature, stream="ukhsa.other"), 403, "acknowledges only its own"),
        (refusal(receipts, Claim(**{**claim.to_json(), "key_id": "0" * 16}), signature), 422, "no receipt key"),
        (refusal(receipts, foreign, sign(other, foreign)), 422, "no receipt key"),
        (refusal(receipts, retired, sign(old, retired)), 422, "was retired"),
        (refusal(receipts, claim, sign(other, claim)), 422, "signature does not verify"),
        (refusal(receipts, mismatch, sign(KEY, mismatch)), 409, "hash to " + claim.records_digest),
        (refusal(receipts, beyond, sign(KEY, beyond)), 416, "beyond what was delivered"),
        (refusal(receipts, Claim(**{**claim.to_json(), "partition": 5}),
                 sign(KEY, Claim(**{**claim.to_json(), "partition": 5}))), 416, "nothing was delivered"),
        (refusal(receipts, Claim(**{**claim.to_json(), "first_offset": 5, "last_offset": 4}),
                 sign(KEY, Claim(**{**claim.to_json(), "first_offset": 5, "last_offset": 4}))), 400, "not a range"),
        (refusal(receipts, Claim(**{**claim.to_json(), "last_offset": 100_000}),
                 sign(KEY, Claim(**{**claim.to_json(), "last_offset": 100_000}))), 400, "at most 100,000 offsets"),
    ]
    for error, status, words in cases:
        assert (error.status, words in str(error)) == (status, True), str(error)
    assert audit.records == []
    assert [str(status) for _, status, _ in cases] == COUNTED      # each refusal counted by its status


def test_the_governance_api_registers_and_retires_a_bodys_own_keys() -> None:
    api = make_api(catalog())
    answer = api.client.post("/receipt-keys", json={"public_key": public_key_text(KEY.public_key())}, headers=DPH)
    assert answer.status_code == 201, answer.text
    assert (answer.json()["key_id"], answer.json()["body"], answer.json()["active"]) == (KEY_ID, LEICESTER, True)
    again = api.client.post("/receipt-keys", json={"public_key": public_key_text(KEY.public_key())}, headers=DPH)
    assert again.status_code == 201
    kinds = [e["type"] for e in api.log.events]
    assert kinds.count("receipt-key-registered") == 1       # registering the same key again writes nothing
    assert api.client.post("/receipt-keys", json={"public_key": "AAAA"}, headers=DPH).status_code == 400
    listed = api.client.get("/receipt-keys", params={"body": LEICESTER}).json()["receipt_keys"]
    assert [k["key_id"] for k in listed] == [KEY_ID]
    assert api.client.post("/receipt-keys/0000000000000000/retire", headers=DPH).status_code == 404
    retired = api.client.post(f"/receipt-keys/{KEY_ID}/retire", headers=DPH)
    assert retired.status_code == 200 and retired.json()["active"] is False
    assert api.governance.state.receipt_keys[KEY_ID].retired_at is not None
    again = api.client.post("/receipt-keys", json={"public_key": public_key_text(KEY.public_key())}, headers=DPH)
    assert again.status_code == 409 and "stays retired" in again.json()["error"]


class Sender:
    key_id = KEY_ID

    def __init__(self) -> None:
        self.sent: list[Claim] = []
        self.failing: Exception | None = None

    def send(self, claim: Claim) -> None:
        if self.failing is not None:
            raise self.failing
        self.sent.append(claim)


def test_the_sink_sends_a_receipt_for_each_stored_batch_and_retries_one_that_failed() -> None:
    registry, day = InMemorySchemaRegistry(), dt.date(2026, 11, 30)
    records = [delivered(registry, n, {"specimen_id": str(n), "specimen_date": day, "lsoa": None}, schema())
               for n in range(6)]
    sender, now = Sender(), [0.0]
    sink = PostgresSink(FakeSource(records[0].topic, records), registry, FakeDatabase(), "t1", ["specimen_id"],
                        receipts=sender, clock=lambda: now[0])
    assert sink.step(max_records=2) == 2
    (first,) = sender.sent
    assert (first.first_offset, first.last_offset, first.records_digest) == (0, 1, range_digest(records[:2]))
    sender.failing = ServiceError("the API did not answer")
    assert sink.step(max_records=2) == 2                    # the data moves on though the receipt failed
    assert [(c.first_offset, c.last_offset) for c in sink.owed] == [(2, 3)] and "retried later" in sink.receipt_error
    sender.failing = None
    assert sink.step(max_records=2) == 2                    # still backing off: owed, not sent
    assert [(c.first_offset, c.last_offset) for c in sink.owed] == [(2, 3), (4, 5)]
    sink.send_receipts()                                    # still backing off
    assert len(sender.sent) == 1
    sink.send_receipts(now=True)                            # as the sink stops: one last try
    assert len(sender.sent) == 3 and sink.owed == []
    records.extend(delivered(registry, n, {"specimen_id": str(n), "specimen_date": day, "lsoa": None}, schema())
                   for n in range(6, 8))
    now[0] = 5.0
    assert sink.step() == 2
    assert [(c.first_offset, c.last_offset) for c in sender.sent] == [(0, 1), (2, 3), (4, 5), (6, 7)]


def test_a_receipt_accord_refuses_is_given_up_and_the_next_ones_sent() -> None:
    registry, day = InMemorySchemaRegistry(), dt.date(2026, 11, 30)
    records = [delivered(registry, n, {"specimen_id": str(n), "specimen_date": day, "lsoa": None}, schema())
               for n in range(4)]
    sender = Sender()
    sink = PostgresSink(FakeSource(records[0].topic, records), registry, FakeDatabase(), "t1", ["specimen_id"],
                        receipts=sender)
    sender.failing = ReceiptError(422, "no receipt key")
    assert sink.step(max_records=2) == 2
    assert sink.owed == [] and "given up" in sink.receipt_error
    sender.failing = None
    assert sink.step(max_records=2) == 2
    assert [(c.first_offset, c.last_offset) for c in sender.sent] == [(2, 3)]


def test_the_sink_config_takes_receipts_with_paths_beside_it_and_names_a_bad_field(tmp_path: Path) -> None:
    path = tmp_path / "sink.yaml"
    path.write_text(GOOD + "receipts: {key_file: keys/r.key, api_url: http://127.0.0.1:8080}\n")
    config = load(path)
    assert isinstance(config, SinkConfig) and config.receipts is not None
    assert (config.receipts.key_file, config.receipts.token_file) == (tmp_path / "keys/r.key",
                                                                      tmp_path / "registry.token")
    path.write_text(GOOD + "receipts: {key_file: r.key, api_url: ftp://x}\n")
    with pytest.raises(SinkConfigError) as caught:
        load(path)
    assert any(line.startswith(f"{path}:9: receipts.api_url: String should match")
               for line in caught.value.problems), caught.value.problems


def answering(status: int, body: dict[str, Any]) -> tuple[HttpReceipts, list[httpx.Request]]:
    seen: list[httpx.Request] = []

    def handle(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        return httpx.Response(status, json=body)
    return HttpReceipts("http://api.test", lambda: "tok", KEY, "leicester", "dph",
                        transport=httpx.MockTransport(handle)), seen


def test_the_http_sender_signs_posts_and_tells_a_retry_from_a_refusal() -> None:
    claim = Claim(TOPIC, 0, 3, 9, "ab" * 32, KEY_ID)
    sender, seen = answering(201, {"accepted": True})
    sender.send(claim)
    (request,) = seen
    assert request.url.path == f"/deliveries/{STREAM}/receipts" and request.headers["Authorization"] == "Bearer tok"
    assert json.loads(request.content) == {**claim.to_json(), "signature": sign(KEY, claim)}
    sender.close()
    for status, kind in ((503, ServiceError), (401, ServiceError), (409, ReceiptError), (422, ReceiptError)):
        sender, _ = answering(status, {"error": "why"})
        with pytest.raises(kind, match="why"):
            sender.send(claim)
        sender.close()


class DownLog(MemoryDeliveryLog):
    def partitions(self, topic: str) -> list[int] | None:
        raise ServiceError("Kafka is not reachable")


def test_the_route_answers_each_refusal_with_its_status_and_an_outage_with_503() -> None:
    receipts, log, audit = service(registered())
    app = FastAPI(**guarded(guard(), "api"))
    add_receipt_routes(app, receipts)
    claim, signature = signed(log, 0, 9)
    with TestClient(app, headers=bearer("leicester", "dph")) as client:
        def post(c: Claim, signature: str) -> Any:
            return client.post(f"/deliveries/{STREAM}/receipts", json={**c.to_json(), "signature": signature})

        accepted = post(claim, signature)
        assert accepted.status_code == 201 and accepted.json()["receipt"]["records"] == 10
        beyond = Claim(**{**claim.to_json(), "last_offset": 11})
        answer = post(beyond, sign(KEY, beyond))
        assert answer.status_code == 416 and "beyond what was delivered" in answer.json()["error"]
        assert client.post(f"/deliveries/{STREAM}/receipts", json={"topic": TOPIC}).status_code == 422
        assert post(Claim(**{**claim.to_json(), "records_digest": "XY"}), signature).status_code == 422
    assert len(audit.records) == 1
    down = DeliveryReceipts(DownLog(), Keys(registered()), audit, lambda: dt.datetime(2026, 12, 1, tzinfo=dt.UTC))
    app = FastAPI(**guarded(guard(), "api"))
    add_receipt_routes(app, down)
    with TestClient(app, headers=bearer("leicester", "dph")) as client:
        outage = client.post(f"/deliveries/{STREAM}/receipts", json={**claim.to_json(), "signature": signature})
    assert outage.status_code == 503 and outage.headers["Retry-After"] == "5"
