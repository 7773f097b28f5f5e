"""The end of the audit trail: an export ends with a checkpoint signed on request, and the newest checkpoint anchored
on the governance log shows a trail cut after its last checkpoint, cut exactly at a checkpoint, or rewritten."""

from __future__ import annotations

import dataclasses
from typing import Any

import pytest

from broker.domain.audit import CHECKPOINT, EXPORT, Anchor, Chain, Entry, Signer, new_signing_key, verify
from broker.domain.audit_records import ANCHOR, anchor_event, anchor_from_event, export_request, sealed_at
from broker.domain.governance import GovernanceState, apply
from broker.errors import AuditError
from tests.unit.test_audit import AT, KEYS, SIGNER, problem, relink

CHAIN = "_accord.audit.chain"


def exported(count: int, *, interval: int = 5, request: str = "r-1") -> list[Entry]:
    """`count` delivery batches, a checkpoint every `interval`, then an export request and the checkpoint that
    signs it: what `accord audit export` writes."""
    chain = Chain(SIGNER, interval=interval)
    entries = [e for n in range(count) for e in chain.append("delivery-batch", AT, {"n": n})]
    return entries + chain.append(EXPORT, AT, {"event": export_request(request, "User:accord.admin", AT)})


def anchor_of(entries: list[Entry], signer: Signer = SIGNER) -> Anchor:
    """What the chainer publishes on the governance log for the newest checkpoint of `entries`."""
    return signer.anchor(CHAIN, [e for e in entries if e.kind == CHECKPOINT][-1])


def test_an_export_request_is_signed_at_once_so_every_export_ends_with_a_checkpoint() -> None:
    entries = exported(7, interval=100)
    request, seal = entries[-2:]
    assert (request.kind, seal.kind) == (EXPORT, CHECKPOINT)
    assert seal.body["upto"] == request.seq
    assert sealed_at(entries, "r-1") == seal.seq
    assert sealed_at(entries, "another request") is None
    assert sealed_at(entries[:-1], "r-1") is None  # chained, not yet signed
    report = verify(entries, KEYS, require_checkpoint_tail=True, anchor=anchor_of(entries))
    assert (report.ok, report.unsigned_tail, report.anchored) == (True, 0, seal.seq)


def test_cutting_entries_after_the_last_checkpoint_is_reported_as_truncated() -> None:
    entries = exported(12)  # checkpoints at 5 and 11, batches 12 to 13, the request 14, its checkpoint 15
    cut = entries[:-3]  # ends with batch 12, after checkpoint 11
    assert verify(cut, KEYS).ok  # sound in itself: only the anchor knows the trail went on
    seq, kind, message = problem(cut, anchor=anchor_of(entries))
    assert (seq, kind) == (13, "truncated")
    assert "at least 3 entries (13 to 15) are missing from its end" in message
    assert problem(cut, require_checkpoint_tail=True)[:2] == (12, "unsigned-tail")


def test_a_cut_exactly_at_a_checkpoint_names_how_many_entries_are_missing() -> None:
    entries = exported(1000, interval=100)  # a checkpoint after every 100 batches (100, 201, ... 1009), 1010, 1011
    cut = entries[:202]  # ends with checkpoint 201
    assert cut[-1].kind == CHECKPOINT
    lenient = verify(cut, KEYS, require_checkpoint_tail=True)
    assert lenient.ok  # the defect: a cut at a checkpoint is invisible to the trail itself
    seq, kind, message = problem(cut, anchor=anchor_of(entries), require_checkpoint_tail=True)
    assert (seq, kind) == (202, "truncated")
    assert "at least 810 entries (202 to 1011) are missing from its end" in message


def test_a_rewritten_tail_is_caught_by_the_export_checkpoint() -> None:
    entries = exported(8)  # checkpoint 5, batches 6 to 8, the request 9, its checkpoint 10
    rewritten = list(entries)
    rewritten[7] = dataclasses.replace(entries[7], body={"n": 99})
    assert problem(relink(rewritten))[:2] == (10, "tampered")


def test_a_rewritten_tail_without_its_checkpoint_is_caught_by_the_anchor() -> None:
    entries = exported(8)
    anchor = anchor_of(entries)
    # The forger drops the export's checkpoint (which the key they lack would have to sign again) and rewrites the
    # unsigned entries before it: the trail is sound in itself, and signed up to checkpoint 5.
    rewritten = [*entries[:7], dataclasses.replace(entries[7], body={"n": 99}), *entries[8:10]]
    assert verify(relink(rewritten), KEYS).ok
    assert problem(relink(rewritten), anchor=anchor)[:2] == (10, "truncated")
    # Padding it back to the anchor's length does not help: the anchored entry's hash differs.
    padded = relink([*rewritten, dataclasses.replace(entries[5], seq=10)])
    seq, kind, message = problem(padded, anchor=anchor)
    assert (seq, kind) == (10, "tampered")
    assert "entry 10 is not the checkpoint of the governance log's anchor" in message


def test_an_anchor_is_trusted_only_when_a_trusted_key_signed_it_for_this_chain_and_checkpoint() -> None:
    entries = exported(4)
    stranger = anchor_of(entries, Signer(new_signing_key()))
    assert problem(entries, anchor=stranger)[:2] == (stranger.seq, "unknown-key")
    moved = dataclasses.replace(anchor_of(entries), seq=2)
    assert problem(entries, anchor=moved)[:2] == (2, "bad-signature")
    elsewhere = dataclasses.replace(anchor_of(entries), chain="_accord.audit.other.chain")
    assert problem(entries, anchor=elsewhere)[:2] == (elsewhere.seq, "bad-signature")
    with pytest.raises(ValueError, match="only checkpoints are anchored"):
        SIGNER.anchor(CHAIN, entries[0])


def test_an_anchor_travels_as_a_governance_event_that_changes_no_governance_state() -> None:
    anchor = anchor_of(exported(3))
    event = anchor_event(anchor, "e-1", AT)
    assert event["type"] == ANCHOR
    assert anchor_from_event(event, CHAIN) == anchor
    assert anchor_from_event(event, "_accord.audit.test.chain") is None
    assert anchor_from_event({"type": "raised", "data": {}}, CHAIN) is None
    assert anchor_from_event("not an event", CHAIN) is None
    after = apply(GovernanceState(), 0, event)
    assert after == dataclasses.replace(GovernanceState(), offset=1)


@pytest.mark.parametrize("data", [{"seq": "7"}, {"seq": True}, {"seq": -1}, {"seq": 7, "hash": 1}])
def test_a_malformed_anchor_of_the_chain_is_an_error_not_skipped(data: dict[str, Any]) -> None:
    good = anchor_event(anchor_of(exported(3)), "e-1", AT)
    with pytest.raises(AuditError, match=r"anchor of _accord\.audit\.chain on the governance log is malformed"):
        anchor_from_event({**good, "data": {**good["data"], **data}}, CHAIN)
