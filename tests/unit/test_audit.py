"""Audit trail: what an operator sees when a trail is clean, altered, cut, reordered or signed by a stranger."""

from __future__ import annotations

import base64
import dataclasses
import json
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from broker.domain.audit import (
    CHECKPOINT,
    GENESIS,
    Chain,
    Entry,
    Signer,
    entry_hash,
    from_json_line,
    key_id,
    new_signing_key,
    to_json_line,
    verify,
)
from broker.errors import AuditError

SIGNER = Signer(new_signing_key())
KEYS = {SIGNER.key_id: SIGNER.public_key}
AT = "2024-03-01T09:00:00Z"


def trail(count: int, *, interval: int = 5, signer: Signer = SIGNER) -> list[Entry]:
    """`count` policy decisions with a checkpoint after every `interval` of them."""
    chain = Chain(signer, interval=interval)
    entries: list[Entry] = []
    for n in range(count):
        entries += chain.append("policy-decision", AT, {"n": n, "subscriber": "leicester-city-council"})
    return entries


def rehash(entry: Entry, **changes: Any) -> Entry:
    """A forger's edit: change fields and recompute the entry's own hash so it looks self-consistent."""
    edited = dataclasses.replace(entry, **changes)
    return dataclasses.replace(edited, hash=entry_hash(edited.seq, edited.kind, edited.at, edited.body, edited.prev))


def relink(entries: list[Entry]) -> list[Entry]:
    """A forger's full rewrite: renumber and rehash everything, which only the checkpoint signatures can catch."""
    out: list[Entry] = []
    for seq, entry in enumerate(entries):
        out.append(rehash(entry, seq=seq, prev=out[-1].hash if out else GENESIS))
    return out


def problem(entries: list[Entry], **options: Any) -> tuple[int, str, str]:
    found = verify(entries, KEYS, **options).first_problem
    assert found is not None
    return found.seq, found.kind, found.message


def test_a_clean_trail_verifies_and_counts_entries_checkpoints_and_unsigned_tail() -> None:
    entries = trail(12, interval=5)  # 5 decisions, checkpoint, 5 decisions, checkpoint, 2 decisions
    report = verify(entries, KEYS)
    assert report.ok
    assert (report.entries, report.checkpoints, report.unsigned_tail) == (14, 2, 2)
    assert [e.seq for e in entries] == list(range(14))
    assert [e.seq for e in entries if e.kind == CHECKPOINT] == [5, 11]


def test_checkpoints_vouch_for_the_entry_just_before_them_with_the_signers_key() -> None:
    checkpoint = trail(5, interval=5)[-1]
    assert checkpoint.kind == CHECKPOINT
    assert checkpoint.body["upto"] == 4
    assert checkpoint.body["head"] == checkpoint.prev
    assert checkpoint.body["key_id"] == SIGNER.key_id == key_id(SIGNER.public_key)
    assert len(SIGNER.key_id) == 16
    SIGNER.public_key.verify(
        base64.b64decode(checkpoint.body["signature"]), f"accord-audit-checkpoint\n4\n{checkpoint.prev}".encode()
    )


def test_the_first_entry_links_to_64_zeros_and_the_hash_is_sha256_of_canonical_json() -> None:
    first = trail(1)[0]
    assert first.prev == "0" * 64
    assert first.hash == entry_hash(0, "policy-decision", AT, {"subscriber": "leicester-city-council", "n": 0}, GENESIS)


@pytest.mark.parametrize("k", [0, 3, 5, 9])
def test_altering_any_body_field_of_entry_k_is_reported_as_tampered_at_k(k: int) -> None:
    entries = trail(12)
    for name in entries[k].body:
        altered = list(entries)
        altered[k] = dataclasses.replace(entries[k], body={**entries[k].body, name: "changed"})
        assert problem(altered) == (k, "tampered", f"entry {k} was altered: its hash does not match its content")


def test_a_rehashed_edit_breaks_the_link_from_the_next_entry() -> None:
    entries = trail(12)
    entries[3] = rehash(entries[3], body={"n": 3, "subscriber": "someone-else"})
    seq, kind, message = problem(entries)
    assert (seq, kind) == (4, "broken-link")
    assert "entry 4 does not follow entry 3" in message


@pytest.mark.parametrize("k", [0, 4, 5, 13])
def test_deleting_entry_k_is_reported_as_missing_at_k(k: int) -> None:
    entries = trail(14)
    del entries[k]
    seq, kind, message = problem(entries)
    assert (seq, kind) == (k, "missing")
    assert f"entry {k} is missing" in message


def test_swapping_two_entries_is_reported_where_the_order_breaks() -> None:
    entries = trail(12)
    entries[6], entries[7] = entries[7], entries[6]
    assert problem(entries)[:2] == (6, "missing")


def test_a_replayed_entry_is_reported_where_the_next_entry_belongs() -> None:
    entries = trail(4)
    assert problem([*entries, entries[1]])[:2] == (len(entries), "broken-link")


def test_a_checkpoint_signed_by_an_unknown_key_is_reported_with_its_key_id() -> None:
    stranger = Signer(new_signing_key())
    entries = trail(5, interval=5, signer=stranger)
    seq, kind, message = problem(entries)
    assert (seq, kind) == (5, "unknown-key")
    assert stranger.key_id in message


def test_a_checkpoint_whose_head_was_changed_without_the_key_has_a_bad_signature() -> None:
    entries = trail(7, interval=5)
    forged = {**entries[5].body, "head": "f" * 64}
    entries = relink([*entries[:5], dataclasses.replace(entries[5], body=forged), *entries[6:]])
    assert problem(entries)[:2] == (5, "bad-signature")


def test_a_signature_that_is_not_base64_is_a_bad_signature() -> None:
    entries = trail(5, interval=5)
    entries[5] = rehash(entries[5], body={**entries[5].body, "signature": "not base64!"})
    assert problem(entries)[:2] == (5, "bad-signature")


def test_a_validly_signed_checkpoint_for_the_wrong_head_is_reported_as_tampered() -> None:
    entries = trail(5, interval=5)
    wrong = "f" * 64
    body = {**entries[5].body, "head": wrong, "signature": SIGNER.sign(4, wrong)}
    entries[5] = rehash(entries[5], body=body)
    seq, kind, message = problem(entries)
    assert (seq, kind) == (5, "tampered")
    assert "checkpoint 5 vouches for a different entry 4" in message


def test_rewriting_history_and_every_hash_is_caught_by_the_next_checkpoint() -> None:
    entries = trail(10, interval=5)
    entries[7] = dataclasses.replace(entries[7], body={"n": 99})
    assert problem(relink(entries))[:2] == (11, "tampered")


def test_cutting_off_the_final_checkpoint_is_reported_only_when_a_checkpoint_tail_is_required() -> None:
    chain = Chain(SIGNER, interval=5)
    entries = [entry for n in range(8) for entry in chain.append("delivery-batch", AT, {"n": n})]
    closing = chain.checkpoint(AT)
    assert closing is not None
    assert verify([*entries, closing], KEYS, require_checkpoint_tail=True).ok

    cut = entries[:-1]
    lenient = verify(cut, KEYS)
    assert lenient.ok and lenient.unsigned_tail == 2
    seq, kind, message = problem(cut, require_checkpoint_tail=True)
    assert (seq, kind) == (6, "unsigned-tail")
    assert "entries 6 to 7 follow the last checkpoint" in message


def test_the_timer_checkpoint_is_skipped_when_nothing_new_was_written() -> None:
    chain = Chain(SIGNER, interval=5)
    assert chain.checkpoint(AT) is None
    chain.append("governance-event", AT, {"dispute": "D1"})
    assert chain.checkpoint(AT) is not None
    assert chain.checkpoint(AT) is None


def test_a_resumed_chain_continues_seq_links_and_the_count_to_the_next_checkpoint() -> None:
    first = trail(8, interval=5)  # 0..4, checkpoint 5, 6..8
    stored = verify(first, KEYS)
    chain = Chain.resume(first[-1], SIGNER, interval=5, unsigned=stored.unsigned_tail)
    assert (chain.next_seq, chain.head) == (9, first[-1].hash)
    later = chain.append("catalog-change", AT, {"n": 0})
    assert [(e.seq, e.kind) for e in later] == [(9, "catalog-change")]
    assert later[0].prev == first[-1].hash
    # 6, 7, 8 were already unsigned, so the fifth entry since checkpoint 5 brings the next one.
    later += chain.append("catalog-change", AT, {"n": 1})
    assert [(e.seq, e.kind) for e in later[1:]] == [(10, "catalog-change"), (11, CHECKPOINT)]
    assert verify([*first, *later], KEYS, require_checkpoint_tail=True).ok


def test_resuming_from_nothing_starts_a_new_trail() -> None:
    chain = Chain.resume(None, SIGNER)
    assert chain.append("policy-decision", AT, {})[0].prev == GENESIS


def test_callers_cannot_write_checkpoints_or_bodies_that_are_not_json() -> None:
    chain = Chain(SIGNER)
    with pytest.raises(ValueError, match="only the chain writes"):
        chain.append(CHECKPOINT, AT, {})
    with pytest.raises(AuditError, match="'policy-decision' audit entry is not JSON"):
        chain.append("policy-decision", AT, {"when": object()})
    with pytest.raises(AuditError, match="not JSON"):
        chain.append("policy-decision", AT, {"rate": float("nan")})
    assert chain.next_seq == 0


def test_json_lines_round_trip_and_are_one_line_of_sorted_compact_json() -> None:
    entries = trail(6, interval=5)
    entries += Chain.resume(entries[-1], SIGNER).append("delivery-batch", AT, {"note": "line\nbreak é"})
    lines = [to_json_line(entry) for entry in entries]
    assert all("\n" not in line for line in lines)
    assert lines[0].startswith('{"at":"2024-03-01T09:00:00Z","body":{"n":0,')
    assert "é" in lines[-1]
    read = [from_json_line(line, n) for n, line in enumerate(lines, start=1)]
    assert read == entries
    assert verify(read, KEYS).ok


@pytest.mark.parametrize(
    ("line", "expected"),
    [
        ("", "audit line 7: not JSON"),
        ("{not json", "audit line 7: not JSON"),
        ("[1, 2]", "audit line 7: expected a JSON object, got list"),
        ('{"seq": 0}', "audit line 7: fields must be exactly seq, kind, at, body, prev, hash (missing: kind, at"),
        (json.dumps({"seq": "0", "kind": "k", "at": AT, "body": {}, "prev": GENESIS, "hash": GENESIS}), "'seq' must"),
        (json.dumps({"seq": True, "kind": "k", "at": AT, "body": {}, "prev": GENESIS, "hash": GENESIS}), "'seq' must"),
        (json.dumps({"seq": -1, "kind": "k", "at": AT, "body": {}, "prev": GENESIS, "hash": GENESIS}), "negative"),
        (json.dumps({"seq": 0, "kind": "k", "at": AT, "body": [], "prev": GENESIS, "hash": GENESIS}), "'body' must"),
        ('{"seq":0,"kind":"k","at":"t","body":{"x":NaN},"prev":"","hash":""}', "NaN is not JSON"),
        (
            json.dumps({"seq": 0, "kind": "k", "at": AT, "body": {}, "prev": GENESIS, "hash": GENESIS, "extra": 1}),
            "unexpected: extra",
        ),
    ],
)
def test_malformed_lines_raise_audit_error_naming_the_line(line: str, expected: str) -> None:
    with pytest.raises(AuditError) as caught:
        from_json_line(line, 7)
    assert "audit line 7" in str(caught.value)
    assert expected in str(caught.value)


_json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.text(max_size=8),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=4), inner, max_size=3),
    max_leaves=6,
)
_bodies = st.lists(st.dictionaries(st.text(max_size=6), _json_values, max_size=4), min_size=1, max_size=25)


def _mutate(entry: Entry, field: str) -> Entry:
    if field == "body":
        return dataclasses.replace(entry, body={**entry.body, "mutated": not entry.body.get("mutated", False)})
    if field == "seq":
        return dataclasses.replace(entry, seq=entry.seq + 1)
    if field in ("prev", "hash"):
        flipped = "1" if getattr(entry, field)[0] == "0" else "0"
        return dataclasses.replace(entry, **{field: flipped + getattr(entry, field)[1:]})
    return dataclasses.replace(entry, **{field: getattr(entry, field) + "x"})


@given(
    bodies=_bodies,
    interval=st.integers(min_value=1, max_value=6),
    pick=st.integers(min_value=0),
    field=st.sampled_from(["seq", "kind", "at", "body", "prev", "hash"]),
)
def test_any_single_entry_mutation_is_reported_at_exactly_that_entry(
    bodies: list[dict[str, Any]], interval: int, pick: int, field: str
) -> None:
    chain = Chain(SIGNER, interval=interval)
    entries = [entry for body in bodies for entry in chain.append("delivery-batch", AT, body)]
    assert verify(entries, KEYS).ok
    k = pick % len(entries)
    entries[k] = _mutate(entries[k], field)
    report = verify(entries, KEYS)
    assert report.first_problem is not None
    assert report.first_problem.seq == k
