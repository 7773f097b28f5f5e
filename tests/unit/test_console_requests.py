"""The access-request pages' pure parts: which form field a governance API refusal is about, and what a waiting
request still needs (N of M, one of each role)."""

from __future__ import annotations

import datetime as dt
from typing import Any

import pytest

from broker.api.console.app import NAVIGATION, Pages
from broker.api.console.requests import field_of, request_resource, reviews_now, still_needed
from broker.security.api_tokens import Identity

REVIEWERS = {"bodies": ["nis"], "roles": ["caldicott-guardian", "ig-lead"], "approvals": 2,
             "one_of_each": ["caldicott-guardian", "ig-lead"], "refusals": 1}


@pytest.mark.parametrize(("message", "field"), [
    ("backfill (history wanted) 'P28' is not an ISO 8601 duration in weeks, days, hours", "backfill"),
    ("duration 'soon' is not an ISO 8601 duration in weeks, days, hours, minutes or seconds", "duration"),
    ("duration P400D must be more than nothing and at most the ladder's grant period", "duration"),
    ("a request needs a justification: say why the data is needed", "justification"),
    ("template t6-vaccination-uptake is for purpose 'health-protection', not 'research'", "purpose"),
    ("template t6-vaccination-uptake rests on copi-reg-3-4; it cannot be used under x", "legal_basis"),
    ("the request names no fields; name the fields needed (minimum necessary)", "fields"),
    ("template t6-vaccination-uptake does not give nhs_number to role(s) dph", "fields"),
    ("cornwall-council cannot ask for rows of E06000016 under t6-vaccination-uptake", "areas"),
    ("unknown template 't9'; templates: t1-positive-tests", "template"),
    ("an open request r-1 already asks for this", "template"),
])
def test_a_refusal_is_shown_beside_the_field_it_names(message: str, field: str) -> None:
    assert field_of(message) == field


def who(body: str, role: str, person: str) -> Identity:
    return Identity(body, role, person, "t", dt.datetime(2026, 1, 1, tzinfo=dt.UTC))


def review(role: str, person: str, verdict: str = "approve") -> dict[str, Any]:
    return {"actor": {"body": "nis", "role": role, "person": person}, "verdict": verdict, "reason": "r"}


def test_what_a_waiting_request_still_needs() -> None:
    waiting = {"state": "awaiting", "reviewers": REVIEWERS, "reviews": []}
    assert still_needed(waiting) == {"approved": 0, "wanted": 2, "left": 2, "roles": REVIEWERS["roles"],
                                     "bodies": ["nis"], "missing_roles": ["caldicott-guardian", "ig-lead"]}
    one = still_needed({**waiting, "reviews": [review("ig-lead", "a")]})
    assert one is not None and (one["approved"], one["left"], one["missing_roles"]) == (1, 1, ["caldicott-guardian"])
    refused_once = still_needed({**waiting, "reviews": [review("ig-lead", "a", "refuse")]})
    assert refused_once is not None and refused_once["approved"] == 0
    assert still_needed({"state": "live", "reviewers": None, "reviews": []}) is None


def test_waiting_for_a_reviewer_who_has_not_reviewed_yet_and_never_the_requester() -> None:
    waiting = {"state": "awaiting", "body": "cornwall-council", "reviewers": REVIEWERS, "reviews": []}
    ig_lead = who("nis", "ig-lead", "a")
    assert reviews_now(ig_lead, waiting)
    assert not reviews_now(ig_lead, {**waiting, "reviews": [review("ig-lead", "a")]})
    assert reviews_now(who("nis", "caldicott-guardian", "b"), {**waiting, "reviews": [review("ig-lead", "a")]})
    assert not reviews_now(who("nis", "dph", "c"), waiting)
    assert not reviews_now(who("cornwall-council", "ig-lead", "d"), {**waiting, "body": "cornwall-council",
                                                                         "reviewers": {**REVIEWERS, "bodies": [
                                                                             "cornwall-council"]}})
    assert not reviews_now(ig_lead, {**waiting, "state": "live"})
    assert request_resource(waiting)["request"]["reviewers"] == REVIEWERS


def rendered(request: dict[str, Any]) -> str:
    return Pages().env.get_template("request.html").render(
        title="t", current="/requests", session=None, navigation=NAVIGATION, request_=request,
        needed=still_needed(request), may_approve=False, may_refuse=False, errors=[], notice=None)


def test_an_expired_request_keeps_its_decision_first_record_and_timeline() -> None:
    approver = {"body": "nis", "role": "ig-lead", "person": "NIS IG lead"}
    expired: dict[str, Any] = {
        "id": "r-1", "state": "expired", "requester": {"body": "cornwall-council", "role": "dph", "person": "DPH"},
        "body": "cornwall-council", "role": "dph", "template": "t6-vaccination-uptake",
        "stream": "nis.vaccination-uptake", "publisher": "nis", "purpose": "health-protection",
        "legal_basis": ["copi-reg-3-4"], "fields": ["lsoa"], "areas": [], "duration": "PT1H", "backfill": None,
        "justification": "why", "made_at": "2026-01-01T00:00:00Z", "tier": 0, "level": "normal", "deadline": None,
        "reviews": [], "reviewers": None,
        "decision": {"outcome": "approved", "reason": "ok", "by": [approver]},
        "decided_at": "2026-01-01T00:10:00Z", "approved_at": "2026-01-01T00:10:00Z",
        "enforced_at": "2026-01-01T00:10:01Z", "first_delivery": {"at": "2026-01-01T00:10:03Z"},
        "approval_to_first_record_s": 2.54, "expired_at": "2026-01-01T01:10:00Z",
        "timeline": [{"at": "2026-01-01T01:10:00Z", "type": "request-expired", "actor": None, "data": {}}]}
    html = rendered(expired)
    assert "2.5 seconds" in html and "2026-01-01T01:10:00Z" in html and "request-expired" in html
    assert "NIS IG lead (ig-lead, nis)" in html and 'id="approve"' not in html
    waiting = {**expired, "state": "awaiting", "decision": None, "approved_at": None, "first_delivery": None,
               "approval_to_first_record_s": None, "expired_at": None, "reviewers": REVIEWERS,
               "reviews": [review("ig-lead", "NIS IG lead")]}
    html = rendered(waiting)
    assert "<strong>1 of 2</strong>" in html and "including one caldicott-guardian" in html
    assert "not approved" in html
