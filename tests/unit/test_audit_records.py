"""Raw audit records as chain entries, and where chaining resumes from the chain's tail."""

from __future__ import annotations

import base64

import pytest

from broker.domain.audit import Chain, Entry, Signer, new_signing_key
from broker.domain.audit_records import UNRECOGNISED, Source, raw_entry, resume_from_tail
from broker.errors import AuditError

AT = "2026-01-01T00:00:00.000000Z"
SIGNER = Signer(new_signing_key())


def _chain(offsets: list[int], interval: int = 3) -> list[Entry]:
    chain, written = Chain(SIGNER, interval=interval), []
    for offset in offsets:
        kind, body = raw_entry(b"governance", b'{"n": %d}' % offset, Source("_accord.audit", 0, offset))
        written.extend(chain.append(kind, AT, body))
    return written


def test_a_governance_record_is_a_governance_event_naming_where_it_came_from() -> None:
    kind, body = raw_entry(b"governance", b'{"type": "raised"}', Source("_accord.audit", 0, 7))
    assert kind == "governance-event"
    assert body == {"source": {"topic": "_accord.audit", "partition": 0, "offset": 7}, "event": {"type": "raised"}}


@pytest.mark.parametrize("key", [b"catalog-change", b"delivery-batch", b"policy-decision"])
def test_other_producers_keys_are_their_kinds(key: bytes) -> None:
    assert raw_entry(key, b"{}", Source("a", 0, 0))[0] == key.decode()


def test_an_unknown_key_and_a_value_that_is_not_json_are_still_chained() -> None:
    kind, body = raw_entry(b"mystery", b"NaN", Source("a", 0, 3))
    assert kind == UNRECOGNISED
    assert body["key"] == base64.b64encode(b"mystery").decode()
    assert base64.b64decode(body["raw_base64"]) == b"NaN"
    assert "event" not in body


def test_an_empty_chain_resumes_at_the_first_raw_record() -> None:
    resume = resume_from_tail([], whole=True)
    assert resume is not None
    assert (resume.last, resume.unsigned, resume.next_offset) == (None, 0, 0)


def test_resume_continues_after_the_last_chained_record_and_counts_unsigned_entries() -> None:
    entries = _chain([10, 11, 12, 13, 14])  # 3 entries, a checkpoint, 2 entries
    resume = resume_from_tail(entries, whole=True)
    assert resume is not None
    assert (resume.last, resume.unsigned, resume.next_offset) == (entries[-1], 2, 15)


def test_resume_after_a_checkpoint_uses_the_record_before_it() -> None:
    entries = _chain([4, 5, 6])
    resume = resume_from_tail(entries, whole=True)
    assert resume is not None
    assert (resume.last.kind if resume.last else None, resume.unsigned, resume.next_offset) == ("checkpoint", 0, 7)


def test_a_tail_without_a_checkpoint_asks_for_more() -> None:
    entries = _chain([0, 1, 2, 3, 4])
    assert resume_from_tail(entries[-2:], whole=False) is None
    assert resume_from_tail(entries[-3:], whole=False) is not None


def test_an_entry_that_names_no_raw_record_is_refused() -> None:
    entries = Chain(SIGNER).append("governance-event", AT, {"n": 1})
    with pytest.raises(AuditError, match=r"entry 0 .* does not name the raw record"):
        resume_from_tail(entries, whole=True)
