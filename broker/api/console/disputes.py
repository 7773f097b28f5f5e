"""Disputes: the open disputes a person may read in full, by tier with their deadlines (counted down live where the
browser runs scripts); one dispute's timeline and the approvals its tier has so far; and the forms each person may
use (comment, decide or approve, appeal), shown only where OPA would let the person use them.

Everything goes through the governance API as the signed-in person (a short-lived token the console issues for the
session's identity), so the service's own operations and OPA's rules for them decide what is shown and done.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable, Mapping
from typing import Any

from fastapi import FastAPI, Request
from fastapi.responses import RedirectResponse, Response

from broker.api.auth import caller
from broker.api.console.acting import governance_calls, may_post
from broker.api.console.app import Console, GovernanceCalls, Pages, checked_form, checked_form_values
from broker.domain.disputes import OPEN_STATES, parse_stamp
from broker.security.api_tokens import Identity

DECIDE, COMMENT, APPEAL = "/disputes/{ident}/decision", "/disputes/{ident}/comments", "/disputes/{ident}/appeal"
# The outcomes a decider may choose, by kind of dispute (broker.domain.adjudication says what each one enforces).
OUTCOMES: dict[str, tuple[tuple[str, str], ...]] = {
    "challenge": (("granted", "Grant what was asked for"),
                  ("granted-in-part", "Grant part of it: some of the fields or areas asked for"),
                  ("granted-for-period", "Grant what was asked for, until a date"),
                  ("refused", "Refuse: the challenged decision stands")),
    "grant-contested": (("granted", "Withdraw the contested grant"), ("refused", "Refuse: the grant stands")),
    "review": (("granted", "Confirm the access taken"), ("granted-for-period", "Confirm it until a date"),
               ("refused", "End the access now")),
}
DONE = {"comment": "Your comment was added to the dispute's timeline.",
        "decision": "Your decision was recorded. The timeline shows whether the tier has decided.",
        "appeal": "Your appeal was recorded: the dispute is open again at the next tier, with a new deadline."}


def outcomes_for(kind: str) -> tuple[tuple[str, str], ...]:
    if kind == "grant-contested":
        return OUTCOMES["grant-contested"]
    return OUTCOMES["review"] if kind.endswith("-review") else OUTCOMES["challenge"]


def decision_of(fields: Mapping[str, list[str]], kind: str,
                today: dt.date) -> tuple[dict[str, Any], list[tuple[str, str]]]:
    """The governance API's decision body from the decision form, or the form's errors (field id, message)."""
    def one(name: str) -> str:
        return (fields.get(name) or [""])[0].strip()

    outcome, reason = one("outcome"), one("reason")
    errors: list[tuple[str, str]] = []
    body: dict[str, Any] = {"outcome": outcome, "reason": reason}
    if outcome not in dict(outcomes_for(kind)):
        errors.append(("outcome", "Select an outcome"))
    if outcome == "granted-in-part":
        chosen = {name: sorted(set(fields.get(name) or ())) for name in ("fields", "areas")}
        if not chosen["fields"] and not chosen["areas"]:
            errors.append(("part-fields", "Select the fields or the areas you grant"))
        body.update({name: values for name, values in chosen.items() if values})
    if outcome == "granted-for-period":
        until, problem = _until(one("until-day"), one("until-month"), one("until-year"), today)
        if problem:
            errors.append(("until-day", problem))
        else:
            body["until"] = until
    if not reason:
        errors.append(("reason", "Enter the reason for your decision"))
    return body, errors


def _until(day: str, month: str, year: str, today: dt.date) -> tuple[str, str]:
    """The end of a period from the GOV.UK date pattern: the last second (UTC) of the day given."""
    if not (day and month and year):
        return "", "Enter the date the access ends, with a day, month and year"
    try:
        date = dt.date(int(year), int(month), int(day))
    except ValueError:
        return "", "The date the access ends must be a real date, for example 27 3 2027"
    if date <= today:
        return "", "The date the access ends must be in the future"
    return f"{date.isoformat()}T23:59:59Z", ""


def dispute_resource(dispute: Mapping[str, Any], tiers: list[Mapping[str, Any]]) -> dict[str, Any]:
    """What OPA is told about a dispute, as the governance API tells it (governance_app.resource_of), from the
    dispute's JSON and the applied ladder."""
    publisher = str(dispute.get("publisher"))

    def bodies(tier: Mapping[str, Any]) -> list[str]:
        deciders = tier.get("deciders") or {}
        return [publisher] if deciders.get("party") == "publisher" else sorted(deciders.get("bodies") or ())

    index = int(dispute.get("tier", -1))
    current = tiers[index] if 0 <= index < len(tiers) else None
    deciders = {"bodies": [], "roles": [], "party": None} if current is None else {
        "bodies": bodies(current), "roles": sorted((current.get("deciders") or {}).get("roles") or ()),
        "party": (current.get("deciders") or {}).get("party")}
    parties = sorted({str(dispute.get("publisher")), str(dispute.get("subscriber")),
                      str((dispute.get("challenger") or {}).get("body"))})
    return {"dispute": {"id": dispute.get("id"), "state": dispute.get("state"), "publisher": publisher,
                        "subscriber": dispute.get("subscriber"), "challenger": (dispute.get("challenger") or {}).get(
                            "body"), "parties": parties, "tier": index, "deciders": deciders,
                        "ladder_deciders": [{"bodies": bodies(t), "roles": sorted((t.get("deciders") or {}).get(
                            "roles") or ())} for t in tiers]}}


def add_disputes(app: FastAPI, console: Console, pages: Pages, governance: GovernanceCalls,
                 token_for: Callable[[Identity], str]) -> None:
    ask = governance_calls(governance, token_for)

    def tiers() -> list[Mapping[str, Any]]:
        return list(((console.policy().catalog or {}).get("ladder") or {}).get("tiers") or ())

    @app.get("/disputes")
    def disputes(request: Request) -> Response:
        listed = [d for d in ask(request, "GET", "/disputes").get("disputes", []) if not d.get("summary")]
        names = [str(t.get("title") or t.get("name")) for t in tiers()]
        open_by_tier: dict[str, list[Mapping[str, Any]]] = {}
        for d in listed:
            if d.get("state") in OPEN_STATES:
                tier = int(d.get("tier", -1))
                name = names[tier] if 0 <= tier < len(names) else "Raised, not yet at a tier"
                open_by_tier.setdefault(name, []).append(d)
        ended = [d for d in listed if d.get("state") not in OPEN_STATES]
        return pages.render(request, "disputes.html", "Disputes", current="/disputes",
                            open_by_tier=sorted(open_by_tier.items()), ended=ended)

    @app.get("/disputes/{ident}")
    def dispute(ident: str, request: Request, done: str | None = None) -> Response:
        return _dispute_page(request, ident, done=DONE.get(done or ""))

    def _dispute_page(request: Request, ident: str, done: str | None = None,
                      errors: list[tuple[str, str]] | None = None, status: int = 200) -> Response:
        found = ask(request, "GET", f"/disputes/{ident}")
        ladder = tiers()
        resource = dispute_resource(found, ladder)
        forms = {route: may_post(console, caller(request), route, ident, resource)
                 for route in (DECIDE, COMMENT, APPEAL)}
        tier = int(found.get("tier", -1))
        needed = int(ladder[tier].get("approvals") or 1) if 0 <= tier < len(ladder) else 1
        return pages.render(request, "dispute.html", f"Dispute {ident}", current="/disputes", dispute=found,
                            may_decide=forms[DECIDE] and found.get("state") == "awaiting" and not any(
                                (a.get("actor") or {}).get("body") == caller(request).body
                                for a in found.get("approvals") or ()),
                            may_comment=forms[COMMENT] and found.get("state") in OPEN_STATES | {"enforced"},
                            may_appeal=forms[APPEAL] and appealable(found, len(ladder)),
                            approvals_needed=needed, outcomes=outcomes_for(str(found.get("kind"))),
                            notice=done, errors=errors or [], status=status)

    @app.post("/disputes/{ident}/comments")
    async def comment(ident: str, request: Request) -> Response:
        fields = await checked_form(request)
        text = fields.get("text", "").strip()
        if not text:
            return _dispute_page(request, ident, errors=[("text", "Enter your comment")], status=400)
        ask(request, "POST", f"/disputes/{ident}/comments", {"text": text})
        return RedirectResponse(f"/disputes/{ident}?done=comment", status_code=303)

    @app.post("/disputes/{ident}/decision")
    async def decide(ident: str, request: Request) -> Response:
        fields = await checked_form_values(request)
        kind = str(ask(request, "GET", f"/disputes/{ident}").get("kind"))
        body, errors = decision_of(fields, kind, dt.datetime.now(dt.UTC).date())
        if errors:
            return _dispute_page(request, ident, errors=errors, status=400)
        ask(request, "POST", f"/disputes/{ident}/decision", body)
        return RedirectResponse(f"/disputes/{ident}?done=decision", status_code=303)

    @app.post("/disputes/{ident}/appeal")
    async def appeal(ident: str, request: Request) -> Response:
        fields = await checked_form(request)
        reason = fields.get("appeal-reason", "").strip()
        if not reason:
            return _dispute_page(request, ident, errors=[("appeal-reason", "Enter the reason for your appeal")],
                                 status=400)
        ask(request, "POST", f"/disputes/{ident}/appeal", {"reason": reason})
        return RedirectResponse(f"/disputes/{ident}?done=appeal", status_code=303)


def appealable(dispute: Mapping[str, Any], tiers: int) -> bool:
    """Decided and enforced below the last tier, with its appeal window still open (the domain checks it again)."""
    closes = dispute.get("closes_at")
    return (dispute.get("state") == "enforced" and int(dispute.get("tier", -1)) < tiers - 1
            and (closes is None or parse_stamp(str(closes)) > dt.datetime.now(dt.UTC)))
