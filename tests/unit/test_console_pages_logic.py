"""The pure parts of the console's Publisher and Audit pages: paging the quarantine, and the audit search's filters."""

from __future__ import annotations

import datetime as dt
from typing import Any

import pytest
from fastapi import HTTPException

from broker.api.console.audit_trail import matching, moment, names
from broker.api.console.publisher import PAGE, own_streams, quarantine_page
from broker.domain.audit import Entry


def test_a_quarantine_page_holds_page_entries_and_says_whether_more_follow() -> None:
    entries = [{"offset": n} for n in range(2 * PAGE + 1)]
    first, more = quarantine_page(entries, 1)
    assert [e["offset"] for e in first] == list(range(PAGE)) and more
    third, more = quarantine_page(entries, 3)
    assert [e["offset"] for e in third] == [2 * PAGE] and not more
    assert quarantine_page(entries[:PAGE], 1) == (entries[:PAGE], False)
    assert quarantine_page([], 2) == ([], False)


def test_own_streams_are_those_the_body_owns() -> None:
    catalogue = {"streams": [{"id": "ukhsa.a", "owner": "ukhsa"}, {"id": "dhsc.b", "owner": "dhsc"}]}
    assert [s["id"] for s in own_streams(catalogue, "ukhsa")] == ["ukhsa.a"]
    assert own_streams(catalogue, "leicester") == []


def _entry(seq: int, kind: str, at: str, body: dict[str, object]) -> Entry:
    return Entry(seq=seq, kind=kind, at=at, body=body, prev="", hash="")


def test_the_audit_search_filters_by_kind_body_and_time() -> None:
    entries = [
        _entry(1, "governance-event", "2026-12-01T10:00:00+00:00", {"event": {"actor": {"body": "dhsc"}}}),
        _entry(2, "decision", "2026-12-02T10:00:00+00:00", {"subscriber": "leicester", "agreements": ["dhsc.x"]}),
        _entry(3, "governance-event", "2026-12-03T10:00:00+00:00", {"event": {"actor": {"body": "ukhsa"}}}),
    ]

    def seqs(kind: str = "", body: str = "", since: str = "", until: str = "") -> list[int]:
        return [e.seq for e in matching(entries, kind, body, moment(since, "From"), moment(until, "To"))]

    assert seqs() == [1, 2, 3]
    assert seqs(kind="governance-event") == [1, 3]
    assert seqs(body="dhsc") == [1]            # a whole value, not a part of one ("dhsc.x")
    assert seqs(since="2026-12-02") == [2, 3]
    assert seqs(since="2026-12-01T12:00", until="2026-12-02T23:59") == [2]
    assert seqs(kind="governance-event", body="ukhsa", since="2026-12-02") == [3]


def test_names_finds_a_body_anywhere_in_an_entry() -> None:
    assert names({"a": [{"b": ("x", "dhsc")}]}, "dhsc")
    assert not names({"a": 1, "b": None, "c": "dhsc-other"}, "dhsc")


def test_an_unreadable_time_is_a_bad_request_naming_the_field() -> None:
    assert moment("  ", "From") is None
    assert moment("2026-12-07", "From") == dt.datetime(2026, 12, 7, tzinfo=dt.UTC)
    with pytest.raises(HTTPException) as refused:
        moment("yesterday", "To")
    assert refused.value.status_code == 400 and "To must be a date" in str(refused.value.detail)


def test_why_not_answers_only_for_the_subscribers_own_rows() -> None:
    from broker.api.console.why_not import answers

    ingest_refusal = {"source": {"kind": "http", "index": 0},
                      "record": {"specimen_id": "S1", "ltla": "E06000016", "utla": "E06000016"},
                      "reasons": [{"rule": "date-not-future", "field": "specimen_date", "message": "in the future"}]}
    elsewhere = {"source": {"kind": "http", "index": 1}, "record": {"specimen_id": "S2", "ltla": "E07000129"},
                 "reasons": [{"rule": "required", "field": "postcode", "message": "missing"}]}
    gate_ours = {"source": {"kind": "gate", "offset": 41}, "refused_by": {"subscriber": "leicester", "role": "dph"},
                 "reasons": [{"rule": "required", "field": "lsoa", "message": "missing"}]}
    gate_theirs = {"source": {"kind": "gate", "offset": 41}, "refused_by": {"subscriber": "blaby", "role": "eh"},
                   "reasons": [{"rule": "required", "field": "msoa", "message": "missing"}]}
    entries = [ingest_refusal, elsewhere, gate_ours, gate_theirs]

    def rules(specimen: str = "", offset: int | None = None) -> list[str]:
        found = answers(entries, "leicester", "dph", ["E06000016"], specimen, offset)
        return [f"{r['rule']}:{r['field']}" for f in found for r in f["reasons"]]

    assert rules(specimen="S1") == ["date-not-future:specimen_date"]
    assert rules(specimen="S2") == []                  # another area's row: not shown
    assert rules(offset=41) == ["required:lsoa"]       # the gate's refusal for this subscriber only
    assert rules(specimen="nothing") == [] and rules() == []


def test_the_catalogue_lists_what_is_in_force_now_from_the_control_topic() -> None:
    from broker.api.console.catalogue import in_force

    now = dt.datetime(2026, 12, 7, 12, tzinfo=dt.UTC)
    view = {"bodies": {"leicester": "Leicester City Council"}}
    applied = {"agreements": {
        "t1-leicester": {"subscriber": "leicester", "stream": "ukhsa.t1", "template": "t1",
                         "valid_until": "2027-06-01T00:00:00Z"},
        "t1-revoked": {"subscriber": "leicester", "stream": "ukhsa.t1", "valid_until": "2027-06-01T00:00:00Z"},
        "t1-ended": {"subscriber": "leicester", "stream": "ukhsa.t1", "valid_until": "2026-12-07T11:59:59Z"}}}
    grants = {"dispute-d1": {"subscriber": "blaby", "stream": "ukhsa.t1", "valid_until": "2026-12-07T12:05:00Z"}}
    listed = in_force(view, applied, {"t1-revoked": {}}, grants, now)
    assert [(a["kind"], a["id"], a["subscriber"]) for a in listed] == [
        ("agreement", "t1-leicester", "Leicester City Council"), ("grant", "dispute-d1", "blaby")]
    assert listed[1]["valid_until"] == "2026-12-07 12:05 UTC"
    assert in_force(view, None, {}, {}, now) == []


def test_the_catalogue_and_publisher_pages_show_a_stream_applied_since_the_console_started() -> None:
    from broker.api.console.catalogue import with_applied_streams

    own: dict[str, Any] = {"id": "ukhsa.t1", "owner": "ukhsa", "publisher": "UKHSA (ukhsa)", "fields": []}
    view: dict[str, Any] = {"bodies": {"ukhsa": "UK Health Security Agency"}, "streams": [own]}
    applied = {"streams": {
        "ukhsa.t1": {"owner": "ukhsa", "fields": {"other": {"tags": []}}},
        "ukhsa.wastewater": {"owner": "ukhsa", "classification": "official",
                             "fields": {"ltla": {"tags": ["geography:ltla"], "kind": "string"}}}}}
    shown = with_applied_streams(view, applied)
    assert [s["id"] for s in shown["streams"]] == ["ukhsa.t1", "ukhsa.wastewater"]
    assert shown["streams"][0] == own, "the console's own entry stands"
    assert shown["streams"][1]["publisher"] == "UK Health Security Agency (ukhsa)"
    assert shown["streams"][1]["fields"] == [{"name": "ltla", "tags": ["geography:ltla"], "doc": ""}]
    assert [s["id"] for s in own_streams(shown, "ukhsa")] == ["ukhsa.t1", "ukhsa.wastewater"]
    assert with_applied_streams(view, None) == view
