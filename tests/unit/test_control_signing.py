"""Signed control records: only what the trusted key signed is folded into the policy state, and never a replay."""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from broker.domain.audit import key_id
from broker.domain.control import PolicyState, admit
from broker.domain.control_signing import (
    MAX_APPEND_DELAY_MS,
    SIGNATURE_HEADER,
    SIGNED_AT_HEADER,
    Refusal,
    Refused,
    Signature,
    sign,
)
from broker.domain.messages import ControlRecord
from broker.domain.topics import CONTROL_TOPIC
from broker.security.control_keys import ControlSigner, TrustedControlKeys, control_signing_key, public_key_path

KEY = Ed25519PrivateKey.generate()
NOW_MS = 1_750_000_000_000
GRANT = {"id": "g-1", "subscriber": "blaby-district-council", "stream": "ukhsa.positive-tests"}


def trusted(ident: str) -> Ed25519PublicKey | None:
    return KEY.public_key() if ident == key_id(KEY.public_key()) else None


def record(key: str, value: Mapping[str, object] | None, *, offset: int = 0, signed_ms: int = NOW_MS,
           appended_ms: int | None = None, signer: Ed25519PrivateKey | None = KEY, stamped: bool = True,
           topic: str = CONTROL_TOPIC) -> ControlRecord:
    payload = None if value is None else json.dumps(dict(value)).encode()
    headers = () if signer is None else tuple(sign(signer, topic, key, payload, signed_ms * 1000).headers())
    return ControlRecord(offset, key, payload, signed_ms if appended_ms is None else appended_ms, CONTROL_TOPIC,
                         headers, stamped)


def refusal(state: PolicyState, rec: ControlRecord) -> Refusal | None:
    after, refused = admit(state, rec, trusted)
    if refused is not None:
        assert (after.grants, after.revoked, after.catalog) == (state.grants, state.revoked, state.catalog)
        assert after.offset == rec.offset + 1  # the reader moves past it, and nothing else changes
    return None if refused is None else refused.reason


def test_a_record_the_trusted_key_signed_is_applied() -> None:
    state, refused = admit(PolicyState(), record("grant/g-1", GRANT), trusted)
    assert refused is None and dict(state.grants["g-1"]) == GRANT
    gone, refused = admit(state, record("grant/g-1", None, offset=1, signed_ms=NOW_MS + 1), trusted)
    assert refused is None and "g-1" not in gone.grants  # a signed tombstone removes it


@pytest.mark.parametrize(("forged", "reason"), [
    (record("grant/g-1", GRANT, signer=None), Refusal.UNSIGNED),
    (record("grant/g-1", GRANT, signer=Ed25519PrivateKey.generate()), Refusal.UNKNOWN_KEY),
    (record("revocation/t1-leicester", None, signer=None), Refusal.UNSIGNED),
    (record("grant/g-1", GRANT, stamped=False), Refusal.NOT_BROKER_STAMPED),
    (record("grant/g-1", GRANT, appended_ms=NOW_MS + MAX_APPEND_DELAY_MS + 1), Refusal.STALE),
    (record("grant/g-1", GRANT, topic="_accord.control.elsewhere"), Refusal.BAD_SIGNATURE),
], ids=["unsigned", "another-key", "unsigned-tombstone", "producer-timestamp", "signed-long-before", "other-topic"])
def test_a_record_no_trusted_key_signed_for_this_topic_now_is_refused(forged: ControlRecord, reason: Refusal) -> None:
    assert refusal(PolicyState(), forged) == reason


def test_a_signed_record_altered_in_key_value_or_time_is_refused() -> None:
    genuine = record("grant/g-1", GRANT)
    wider = json.dumps({**GRANT, "subscriber": "police"}).encode()
    headers = dict(genuine.headers)
    later = tuple((n, str(int(v) + 1).encode() if n == SIGNED_AT_HEADER else v) for n, v in genuine.headers)
    for altered in (ControlRecord(0, "grant/g-2", genuine.payload, NOW_MS, CONTROL_TOPIC, genuine.headers, True),
                    ControlRecord(0, "grant/g-1", wider, NOW_MS, CONTROL_TOPIC, genuine.headers, True),
                    ControlRecord(0, "grant/g-1", genuine.payload, NOW_MS, CONTROL_TOPIC, later, True)):
        assert refusal(PolicyState(), altered) == Refusal.BAD_SIGNATURE
    garbled = tuple((n, b"x" * 64 if n == SIGNATURE_HEADER else v) for n, v in headers.items())
    assert refusal(PolicyState(), ControlRecord(0, "grant/g-1", genuine.payload, NOW_MS, CONTROL_TOPIC, garbled,
                                                True)) == Refusal.BAD_SIGNATURE


def test_an_old_grant_appended_again_after_its_revocation_is_refused() -> None:
    granted = record("grant/g-1", GRANT, offset=0, signed_ms=NOW_MS)
    revoked = record("grant/g-1", None, offset=1, signed_ms=NOW_MS + 60_000)
    state = PolicyState()
    for rec in (granted, revoked):
        state, refused = admit(state, rec, trusted)
        assert refused is None
    # Within minutes: the signature is good and the broker stamp recent, but the key has a newer record.
    soon = ControlRecord(2, granted.key, granted.payload, NOW_MS + 90_000, CONTROL_TOPIC, granted.headers, True)
    assert refusal(state, soon) == Refusal.REPLAYED
    # Months later, even to a reader that never saw the revocation (its record deleted by an administrator).
    months = ControlRecord(2, granted.key, granted.payload, NOW_MS + 90 * 86_400_000, CONTROL_TOPIC,
                           granted.headers, True)
    assert refusal(PolicyState(), months) == Refusal.STALE


def test_the_signer_never_reuses_or_goes_back_in_time() -> None:
    clock = iter([5_000, 5_000, 4_000, 9_000, 9_000])
    signer = ControlSigner(KEY, now_us=lambda: next(clock))
    times = [signer.sign("catalog", b"{}").signed_at_us for _ in range(4)]
    assert times == [5_000, 5_001, 5_002, 9_000]
    assert signer.sign("k", None).key_id == key_id(KEY.public_key())


def test_a_signature_needs_all_three_headers() -> None:
    headers = record("grant/g-1", GRANT).headers
    for missing in range(3):
        assert Signature.from_headers([h for i, h in enumerate(headers) if i != missing]) is None
    assert Signature.from_headers([(n, b"soon" if n == SIGNED_AT_HEADER else v) for n, v in headers]) is None


def test_the_key_is_made_once_0600_and_a_gate_trusts_it_once_it_exists(tmp_path: Path) -> None:
    keys = TrustedControlKeys(public_key_path(tmp_path))
    assert keys("0123456789abcdef") is None  # no key yet: nothing is trusted
    key = control_signing_key(tmp_path)
    assert (tmp_path / "control-signing.key").stat().st_mode & 0o777 == 0o600
    assert control_signing_key(tmp_path).private_bytes_raw() == key.private_bytes_raw()
    ident = key_id(key.public_key())
    assert keys(ident) is not None and keys("0123456789abcdef") is None
    assert isinstance(admit(PolicyState(), record("grant/g-1", GRANT, signer=key), keys)[1], type(None))
    assert isinstance(admit(PolicyState(), record("grant/g-1", GRANT), keys)[1], Refused)
