"""Proof of delivery, pure: the receipt's canonical form, signing and verifying, the range hash, the key registry
folded from governance events, and which delivered ranges no receipt acknowledges."""

from __future__ import annotations

import base64
import hashlib
import struct
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat
from typer.testing import CliRunner

from broker.cli import app
from broker.domain.audit import Entry, to_json_line
from broker.domain.messages import Record
from broker.domain.receipt_ledger import fold_key_event, keys_from, ledger, merged, missing, receipt_verifies, report
from broker.domain.receipts import (
    KEY_REGISTERED,
    KEY_RETIRED,
    Claim,
    ReceiptError,
    claims_for,
    fingerprint,
    parse_public_key,
    public_key_text,
    range_digest,
    receipt_record,
    sign,
    signature_valid,
)

TOPIC = "deliver.leicester-city-council.dph.ukhsa.positive-tests"
KEY = Ed25519PrivateKey.from_private_bytes(bytes(range(32)))
DIGEST = "ab" * 32


def claim(**changes: object) -> Claim:
    fields = {"topic": TOPIC, "partition": 0, "first_offset": 10, "last_offset": 19, "records_digest": DIGEST,
              "key_id": fingerprint(KEY.public_key())}
    return Claim(**{**fields, **changes})  # type: ignore[arg-type]


def test_the_canonical_form_is_sorted_compact_json_with_its_kind() -> None:
    ident = fingerprint(KEY.public_key())
    assert claim().message() == (
        '{"first_offset":10,"key_id":"' + ident + '","kind":"accord-delivery-receipt/v1","last_offset":19,'
        '"partition":0,"records_digest":"' + DIGEST + '","topic":"' + TOPIC + '"}').encode()
    raw = KEY.public_key().public_bytes(Encoding.Raw, PublicFormat.Raw)
    assert ident == hashlib.sha256(raw).hexdigest()[:16]


def test_a_signature_verifies_only_for_its_claim_and_its_key() -> None:
    signature = sign(KEY, claim())
    assert signature_valid(KEY.public_key(), claim(), signature)
    for tampered in (claim(last_offset=20), claim(records_digest="cd" * 32), claim(partition=1),
                     claim(topic=TOPIC.replace("dph", "analyst"))):
        assert not signature_valid(KEY.public_key(), tampered, signature)
    assert not signature_valid(Ed25519PrivateKey.generate().public_key(), claim(), signature)
    assert not signature_valid(KEY.public_key(), claim(), "not base64!")
    assert not signature_valid(KEY.public_key(), claim(), base64.b64encode(b"x" * 64).decode())


def test_a_public_key_is_taken_as_pem_or_raw_base64_and_anything_else_is_a_400() -> None:
    public = KEY.public_key()
    pem = public.public_bytes(Encoding.PEM, PublicFormat.SubjectPublicKeyInfo).decode()
    assert fingerprint(parse_public_key(pem)) == fingerprint(parse_public_key(public_key_text(public))) \
        == fingerprint(public)
    for bad in ("", "AAAA", "-----BEGIN PUBLIC KEY-----\nnope\n-----END PUBLIC KEY-----", "é"):
        with pytest.raises(ReceiptError) as refused:
            parse_public_key(bad)
        assert refused.value.status == 400 and "Ed25519 public key" in str(refused.value)


def record(offset: int, value: bytes | None, key: bytes | None = None, partition: int = 0) -> Record:
    return Record(TOPIC, partition, offset, key, value, ())


def test_the_range_hash_is_length_prefixed_keys_and_values_in_offset_order() -> None:
    records = [record(6, b"second", b"k"), record(5, b"first"), record(7, None)]
    expected = hashlib.sha256(
        struct.pack(">i", -1) + struct.pack(">i", 5) + b"first"
        + struct.pack(">i", 1) + b"k" + struct.pack(">i", 6) + b"second"
        + struct.pack(">i", -1) + struct.pack(">i", -1)).hexdigest()
    assert range_digest(records) == expected
    # Boundaries count: the same bytes split differently hash differently.
    assert range_digest([record(0, b"ab"), record(1, b"c")]) != range_digest([record(0, b"a"), record(1, b"bc")])


def test_a_stored_batch_gives_one_claim_per_partition() -> None:
    batch = [record(3, b"a"), record(4, b"b"), record(9, b"x", partition=1), record(5, b"c")]
    first, second = claims_for(batch, "k1")
    assert (first.partition, first.first_offset, first.last_offset, first.key_id) == (0, 3, 5, "k1")
    assert first.records_digest == range_digest(batch[:2] + batch[3:])
    assert (second.partition, second.first_offset, second.last_offset) == (1, 9, 9)
    pieces = claims_for([record(n, b"v") for n in (0, 1, 2, 4, 5, 9)], "k1", max_range=4)
    assert [(c.first_offset, c.last_offset) for c in pieces] == [(0, 2), (4, 5), (9, 9)]
    assert pieces[1].records_digest == range_digest([record(4, b"v"), record(5, b"v")])


def test_runs_merge_and_the_unacknowledged_are_what_no_receipt_covers() -> None:
    assert merged([(5, 9), (0, 3), (4, 4), (20, 21)]) == [(0, 9), (20, 21)]
    assert missing([(0, 99)], []) == [(0, 99)]
    assert missing([(0, 99)], [(0, 99)]) == []
    assert missing([(0, 99)], [(10, 19), (30, 39), (35, 50)]) == [(0, 9), (20, 29), (51, 99)]
    assert missing([(0, 9), (20, 29)], [(5, 24)]) == [(0, 4), (25, 29)]
    assert missing([(10, 19)], [(0, 5), (25, 30)]) == [(10, 19)]


def test_the_report_is_per_topic_partition_of_the_body_only() -> None:
    other = "deliver.manchester-city-council.dph.ukhsa.positive-tests"
    batches = [{"topic": TOPIC, "partition": 0, "offsets": [[0, 4], [7, 9]]},
               {"topic": TOPIC, "partition": 0, "offsets": [[10, 14]]},
               {"topic": TOPIC, "partition": 1, "offsets": [[0, 2]]},
               {"topic": other, "partition": 0, "offsets": [[0, 99]]}]
    receipts = [{"topic": TOPIC, "partition": 0, "first_offset": 0, "last_offset": 9, "key_id": "k1"},
                {"topic": TOPIC, "partition": 0, "first_offset": 0, "last_offset": 9, "key_id": "k1"},
                {"topic": other, "partition": 0, "first_offset": 0, "last_offset": 99, "key_id": "k9"}]
    first, second = report(batches, receipts, "deliver.leicester-city-council.")
    assert (first.topic, first.partition, first.delivered) == (TOPIC, 0, [(0, 4), (7, 14)])
    assert first.acknowledged == [((0, 9), "k1")]      # sent twice, acknowledged once
    assert first.unacknowledged == [(10, 14)]
    assert (second.partition, second.acknowledged, second.unacknowledged) == (1, [], [(0, 2)])
    assert first.to_json()["acknowledged"] == [{"first_offset": 0, "last_offset": 9, "key_id": "k1"}]


def key_event(kind: str, body: str, ident: str, at: str = "2026-12-01T09:00:00Z") -> dict[str, object]:
    return {"type": kind, "at": at, "actor": {"body": body, "role": "dph", "person": "p"},
            "data": {"body": body, "key_id": ident, "public_key": public_key_text(KEY.public_key())}}


def test_keys_are_registered_and_retired_by_their_own_body_only() -> None:
    keys = keys_from([key_event(KEY_REGISTERED, "leicester", "k1"),
                      key_event(KEY_REGISTERED, "blaby", "k1"),                  # not taken over
                      key_event(KEY_RETIRED, "blaby", "k1"),                     # not another body's to retire
                      {"type": "raised", "data": {}}])
    assert keys["k1"].body == "leicester" and keys["k1"].active
    retired = fold_key_event(keys, key_event(KEY_RETIRED, "leicester", "k1", "2026-12-02T09:00:00Z"))
    assert retired["k1"].retired_at == "2026-12-02T09:00:00Z" and not retired["k1"].active
    again = fold_key_event(retired, key_event(KEY_REGISTERED, "leicester", "k1", "2026-12-03T09:00:00Z"))
    assert not again["k1"].active                           # a retired key stays retired


def entry(seq: int, kind: str, event: dict[str, object]) -> Entry:
    return Entry(seq, kind, "2026-12-01T09:00:00Z", {"event": event}, "0" * 64, "")


def test_the_ledger_reads_batches_receipts_and_keys_from_the_chain_and_verifies_receipts() -> None:
    good = receipt_record(claim(), sign(KEY, claim()), 10, {"body": "leicester", "role": "dph", "person": "p"},
                          "2026-12-01T09:00:00Z")
    forged = {**good, "last_offset": 25}
    found = ledger([entry(0, "delivery-batch", {"topic": TOPIC, "partition": 0, "offsets": [[0, 19]]}),
                    entry(1, "governance-event", key_event(KEY_REGISTERED, "leicester", claim().key_id)),
                    entry(2, "delivery-receipt", good), entry(3, "delivery-receipt", forged),
                    entry(4, "policy-decision", {"x": 1})])
    assert len(found.batches) == 1 and found.receipts == [good, forged]
    public = parse_public_key(found.keys[claim().key_id].public_key)
    assert receipt_verifies(good, public)
    assert not receipt_verifies(forged, public)
    assert not receipt_verifies({"topic": TOPIC}, public)


def test_accord_audit_receipts_reads_an_export_and_names_a_receipt_that_does_not_verify(tmp_path: Path) -> None:
    actor = {"body": "leicester-city-council", "role": "dph", "person": "p"}
    topic = "deliver.leicester-city-council.dph.ukhsa.positive-tests"
    good = Claim(topic, 0, 0, 9, DIGEST, fingerprint(KEY.public_key()))
    trail = tmp_path / "trail.jsonl"
    entries = [entry(0, "delivery-batch", {"topic": topic, "partition": 0, "offsets": [[0, 14], [16, 20]]}),
               entry(1, "governance-event", key_event(KEY_REGISTERED, actor["body"], good.key_id)),
               entry(2, "delivery-receipt", receipt_record(good, sign(KEY, good), 10, actor, "t"))]
    trail.write_text("".join(to_json_line(e) + "\n" for e in entries))
    result = CliRunner().invoke(app, ["audit", "receipts", "--body", actor["body"], str(trail)])
    assert result.exit_code == 0, result.output
    assert result.output.splitlines() == [
        f"{topic} [0]", "  not yet acknowledged: 10-14, 16-20",
        f"  acknowledged 0-9 with key {good.key_id} (signature verified)"]
    forged = receipt_record(good, sign(Ed25519PrivateKey.generate(), good), 10, actor, "t")
    trail.write_text("".join(to_json_line(e) + "\n" for e in [*entries, entry(3, "delivery-receipt", forged)]))
    result = CliRunner().invoke(app, ["audit", "receipts", "--body", actor["body"], str(trail)])
    assert result.exit_code == 1 and "does not verify" in result.output
