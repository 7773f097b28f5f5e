"""Raw audit records as chain entries, and where chaining resumes from the chain's tail."""

from __future__ import annotations

import base64
import dataclasses
import datetime as dt
import hashlib
import json
from typing import Any

import pytest

from broker.domain.audit import Chain, Entry, Signer, new_signing_key, verify
from broker.domain.audit_records import (
    UNRECOGNISED,
    Delivered,
    Source,
    batch_record,
    catalog_change,
    catalog_contents,
    decision_record,
    decision_terms,
    raw_entry,
    records_digest,
    resume_from_tail,
)
from broker.domain.plans import FieldRule, Plan, Scope
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


# -- what producers write ------------------------------------------------------------------------------------------
def _plan(**changes: Any) -> Plan:
    plan = Plan(subscriber="leicester-city-council", role="dph", stream="ukhsa.positive-tests",
                purpose="health-protection", allow=True, reasons=(), agreements=("t1-leicester",),
                fields=(FieldRule("dob", "generalise", "age-band", "age_band", {"at": "specimen_date"}),),
                jurisdiction=("utla", "ltla"), areas=frozenset({"E06000016"}),
                expiry=dt.datetime(2022, 6, 30, tzinfo=dt.UTC), revision="c-0123456789ab/4")
    return dataclasses.replace(plan, **changes)


def _delivered(offset: int, source_offset: int, key: bytes | None = b"k", value: bytes | None = b"v",
               source_partition: int = 0) -> Delivered:
    return Delivered(offset, key, value, Source("ingest.ukhsa.positive-tests", source_partition, source_offset))


def test_the_records_digest_is_sha256_over_length_prefixed_keys_and_values() -> None:
    expected = hashlib.sha256(b"\x00\x00\x00\x02k1" + b"\x00\x00\x00\x03abc"
                              + b"\xff\xff\xff\xff" + b"\x00\x00\x00\x00").hexdigest()
    assert records_digest([(b"k1", b"abc"), (None, b"")]) == expected
    # The lengths keep boundaries: moving a byte from a key to its value changes the digest.
    assert records_digest([(b"ab", b"c")]) != records_digest([(b"a", b"bc")])


def test_a_batch_record_covers_its_records_in_offset_order_and_names_their_sources() -> None:
    delivered = [_delivered(12, 7, value=b"second"), _delivered(11, 5, value=b"first"),
                 _delivered(13, 2, source_partition=3)]

    body = batch_record("deliver.x", 0, delivered, _plan(), "worker-1", AT)

    assert (body["first_offset"], body["last_offset"], body["records"], body["offsets"]) == (11, 13, 3, [[11, 13]])
    assert body["records_digest"] == records_digest([(b"k", b"first"), (b"k", b"second"), (b"k", b"v")])
    assert body["sources"] == [
        {"topic": "ingest.ukhsa.positive-tests", "partition": 0, "first_offset": 5, "last_offset": 7, "records": 2},
        {"topic": "ingest.ukhsa.positive-tests", "partition": 3, "first_offset": 2, "last_offset": 2, "records": 1}]
    assert (body["revision"], body["subscriber"], body["role"], body["worker"]) == (
        "c-0123456789ab/4", "leicester-city-council", "dph", "worker-1")


def test_a_batch_interleaved_with_another_writers_records_lists_its_own_offsets() -> None:
    body = batch_record("deliver.x", 0, [_delivered(o, o) for o in (3, 4, 7, 9, 10)], _plan(), "w", AT)
    assert (body["first_offset"], body["last_offset"], body["offsets"]) == (3, 10, [[3, 4], [7, 7], [9, 10]])


def test_a_batch_record_of_nothing_is_refused() -> None:
    with pytest.raises(ValueError, match="at least one"):
        batch_record("deliver.x", 0, [], _plan(), "w", AT)


def test_a_decision_record_carries_the_engines_decision_id_and_both_revisions() -> None:
    body = decision_record(_plan(allow=False, reasons=("no agreement in force",)), "4a1f-opa", "c-0123456789ab",
                           "worker-1", AT)
    assert {k: body[k] for k in ("allow", "reasons", "decision_id", "revision", "catalog_revision", "expiry")} == {
        "allow": False, "reasons": ["no agreement in force"], "decision_id": "4a1f-opa",
        "revision": "c-0123456789ab/4", "catalog_revision": "c-0123456789ab", "expiry": "2022-06-30T00:00:00+00:00"}
    assert body["fields"] == [{"field": "dob", "transform": "generalise", "method": "age-band", "as": "age_band"}]
    assert json.loads(json.dumps(body)) == body  # goes onto the audit topic as JSON as it is


def test_decision_terms_leave_out_who_asked_and_when_so_a_repeated_decision_compares_equal() -> None:
    assert decision_terms(_plan(), "c-1") == decision_terms(_plan(), "c-1")
    assert decision_terms(_plan(), "c-1") != decision_terms(_plan(allow=False), "c-1")
    assert decision_terms(_plan(), "c-1") != decision_terms(_plan(revision="c-1/5"), "c-1")


def test_a_decision_records_which_fields_hold_in_which_areas_and_a_change_of_scope_is_a_new_decision() -> None:
    band = FieldRule("dob", "generalise", "age-band", "age_band", {"at": "specimen_date"})
    district = Scope(("t1-charnwood",), frozenset({"E07000130"}), (FieldRule("name", "keep", None, "name", {}),))
    county = Scope(("t1-county",), frozenset({"E07000130", "E07000129"}), (band,))
    plan = _plan(agreements=("t1-charnwood", "t1-county"), scopes=(district, county))
    assert decision_terms(plan, "c-1")["scopes"] == [
        {"agreements": ["t1-charnwood"], "areas": ["E07000130"],
         "fields": [{"field": "name", "transform": "keep", "method": None, "as": "name"}]},
        {"agreements": ["t1-county"], "areas": ["E07000129", "E07000130"],
         "fields": [{"field": "dob", "transform": "generalise", "method": "age-band", "as": "age_band"}]}]
    widened = dataclasses.replace(district, areas=frozenset({"E07000130", "E07000129"}))
    assert decision_terms(plan, "c-1") != decision_terms(_plan(agreements=plan.agreements, scopes=(widened, county)),
                                                         "c-1")


def test_a_catalog_change_names_its_control_record_who_and_what() -> None:
    document = {"revision": "c-1", "bodies": {"b": {}, "a": {}}, "streams": {"s": {}}, "agreements": {"t1-x": {}}}
    by = {"body": "accord", "role": "operator", "person": "Ops on call"}
    body = catalog_change("catalog-applied", "catalog", 41, by, AT, catalog_contents(document))
    assert body == {"change": "catalog-applied", "control": {"key": "catalog", "offset": 41}, "by": by,
                    "at": AT, "revision": "c-1", "bodies": ["a", "b"], "streams": ["s"], "agreements": ["t1-x"]}
    assert catalog_contents(None) == {"revision": None}


@pytest.mark.parametrize("key", [b"catalog-change", b"delivery-batch", b"policy-decision"])
def test_an_edited_record_of_each_kind_is_named_by_verify(key: bytes) -> None:
    chain, entries = Chain(SIGNER, interval=2), []
    for offset in range(3):
        kind, body = raw_entry(key, json.dumps({"n": offset}).encode(), Source("_accord.audit", 0, offset))
        entries.extend(chain.append(kind, AT, body))
    forged = dataclasses.replace(entries[1], body={**entries[1].body, "event": {"n": 99}})

    problem = verify([entries[0], forged, *entries[2:]], {SIGNER.key_id: SIGNER.public_key}).first_problem
    assert problem is not None and (problem.seq, problem.kind) == (1, "tampered")
    missing = verify([entries[0], *entries[2:]], {SIGNER.key_id: SIGNER.public_key}).first_problem
    assert missing is not None and (missing.seq, missing.kind) == (1, "missing")
