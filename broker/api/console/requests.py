"""Access requests: the signed-in body's own requests and those waiting for it to review; a request made from a
template; one request's state, timeline, approvals so far and still needed, and the approve and refuse forms, shown
only where OPA would let the person use them.

Everything goes through the governance API as the signed-in person (a short-lived token for the session's identity):
the API lists only what OPA's `visible_requests` lets the person see, answers another body's request 403, checks a
request against its template (a 400 saying what to fix, shown here beside the field it names) and decides every
review again.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

from fastapi import FastAPI, HTTPException, Request
from fastapi.responses import RedirectResponse, Response

from broker.adapters.governance_http import GovernanceApiError
from broker.api.auth import caller
from broker.api.console.acting import governance_calls, may_post
from broker.api.console.app import Console, Pages, checked_form, checked_form_values
from broker.security.api_tokens import Identity

APPROVE, REFUSE = "/requests/{ident}/approvals", "/requests/{ident}/refusal"
DONE = {"made": "Your request was sent to the publisher's reviewers.",
        "approve": "Your approval was recorded. The page shows whether the request now has all it needs.",
        "refuse": "Your refusal was recorded."}
# Which form field a governance API 400 is about, by what its message says (broker/domain/access_rules.py), the
# most specific first; anything else is shown against the template.
FIELD_OF_ERROR = (
    (re.compile(r"^backfill"), "backfill"), (re.compile(r"^duration"), "duration"),
    (re.compile(r"justification"), "justification"), (re.compile(r"is for purpose"), "purpose"),
    (re.compile(r"rests on"), "legal_basis"), (re.compile(r"fields|does not give"), "fields"),
    (re.compile(r"areas|rows of"), "areas"),
)
SPLIT = re.compile(r"[\s,]+")


def field_of(message: str) -> str:
    """The form field a governance API refusal of a new request is about ("template" when none is named)."""
    return next((field for pattern, field in FIELD_OF_ERROR if pattern.search(message)), "template")


def still_needed(request: Mapping[str, Any]) -> dict[str, Any] | None:
    """Approvals so far and what the current tier still needs: N of M, and the roles of which one is required."""
    reviewers = request.get("reviewers")
    if request.get("state") != "awaiting" or not isinstance(reviewers, Mapping):
        return None
    approvals = [r for r in request.get("reviews") or () if r.get("verdict") == "approve"]
    wanted = int(reviewers.get("approvals") or 1)
    roles_done = {str((r.get("actor") or {}).get("role")) for r in approvals}
    missing = [role for role in reviewers.get("one_of_each") or () if role not in roles_done]
    return {"approved": len(approvals), "wanted": wanted, "left": max(0, wanted - len(approvals)),
            "roles": list(reviewers.get("roles") or ()), "bodies": list(reviewers.get("bodies") or ()),
            "missing_roles": missing}


def request_resource(request: Mapping[str, Any]) -> dict[str, Any]:
    """What OPA is told about a request (broker/api/access_routes.py's request_resource) as far as the review forms
    need: who asked and who reviews it now."""
    reviewers = request.get("reviewers") or {"bodies": [], "roles": []}
    return {"request": {"id": request.get("id"), "body": request.get("body"), "role": request.get("role"),
                        "publisher": request.get("publisher"), "state": request.get("state"),
                        "tier": request.get("tier"), "reviewers": reviewers, "reviewed_by": [reviewers]}}


def reviews_now(identity: Identity, request: Mapping[str, Any]) -> bool:
    """Whether `identity` is among the reviewers a waiting request waits for (the listing's "waiting for you")."""
    reviewers = request.get("reviewers") or {}
    reviewed = {str((r.get("actor") or {}).get("person")) for r in request.get("reviews") or ()}
    return (request.get("state") == "awaiting" and identity.body in (reviewers.get("bodies") or ())
            and identity.role in (reviewers.get("roles") or ()) and identity.body != request.get("body")
            and identity.person not in reviewed)


def add_requests(app: FastAPI, console: Console, pages: Pages) -> None:
    ask = governance_calls(console.governance, console.token_for)

    def templates_for(identity: Identity) -> list[dict[str, Any]]:
        return [t for t in console.catalogue()["templates"] if identity.role in t.get("fields_for", {})]

    @app.get("/requests")
    def listed(request: Request) -> Response:
        identity = caller(request)
        found = ask(request, "GET", "/requests").get("requests", [])
        own = [r for r in found if r.get("body") == identity.body]
        waiting = [r for r in found if reviews_now(identity, r)]
        others = [r for r in found if r not in own and r not in waiting]
        return pages.render(request, "requests.html", "Access requests", current="/requests", own=own,
                            waiting=waiting, others=others, templates=templates_for(identity))

    def _form_page(request: Request, template_id: str, values: Mapping[str, Any] | None = None,
                   errors: list[tuple[str, str]] | None = None, status: int = 200) -> Response:
        identity = caller(request)
        template = next((t for t in templates_for(identity) if t["id"] == template_id), None)
        if template is None:
            raise HTTPException(404, f"there is no template {template_id!r} for your role {identity.role}")
        shown = values or {"purpose": template["purpose"], "legal_basis": template["legal_bases"],
                           "fields": [], "areas": "", "duration": "P30D", "backfill": "", "justification": ""}
        return pages.render(request, "request_new.html", f"Request {template['stream']}", current="/requests",
                            chosen=template, options=template["fields_for"][identity.role], values=shown,
                            errors=errors or [], status=status)

    @app.get("/requests/new")
    def new(request: Request, template: str = "") -> Response:
        return _form_page(request, template)

    @app.post("/requests")
    async def make(request: Request) -> Response:
        fields = await checked_form_values(request)

        def one(name: str) -> str:
            return (fields.get(name) or [""])[0].strip()
        template = one("template")
        areas = [a for a in SPLIT.split(one("areas")) if a]
        values = {"purpose": one("purpose"), "legal_basis": fields.get("legal_basis") or [],
                  "fields": fields.get("fields") or [], "areas": one("areas"), "duration": one("duration"),
                  "backfill": one("backfill"), "justification": one("justification")}
        body: dict[str, Any] = {"template": template, "purpose": values["purpose"], "duration": values["duration"],
                                "legal_basis": values["legal_basis"], "fields": values["fields"],
                                "justification": values["justification"], "areas": areas or None,
                                "backfill": values["backfill"] or None}
        try:
            made = console.governance.call("POST", "/requests", console.token_for(caller(request)), body)
        except GovernanceApiError as exc:
            if exc.status not in (400, 409, 422):
                raise HTTPException(503 if exc.status == 0 else exc.status, str(exc)) from None
            said = str(exc)
            return _form_page(request, template, values, errors=[(field_of(said), said[:1].upper() + said[1:])],
                              status=400)
        return RedirectResponse(f"/requests/{made['id']}?done=made", status_code=303)

    @app.get("/requests/{ident}")
    def shown(ident: str, request: Request, done: str | None = None) -> Response:
        return _request_page(request, ident, notice=DONE.get(done or ""))

    def _request_page(request: Request, ident: str, notice: str | None = None,
                      errors: list[tuple[str, str]] | None = None, status: int = 200) -> Response:
        found = ask(request, "GET", f"/requests/{ident}")
        identity = caller(request)
        resource = request_resource(found)
        may = {route: may_post(console, identity, route, ident, resource) for route in (APPROVE, REFUSE)}
        reviewed = any((r.get("actor") or {}).get("person") == identity.person for r in found.get("reviews") or ())
        return pages.render(request, "request.html", f"Access request {ident}", current="/requests",
                            request_=found, needed=still_needed(found), may_approve=may[APPROVE] and not reviewed,
                            may_refuse=may[REFUSE] and not reviewed, notice=notice, errors=errors or [],
                            status=status)

    async def review(request: Request, ident: str, verdict: str) -> Response:
        reason = (await checked_form(request)).get("reason", "").strip()
        if not reason:
            return _request_page(request, ident, errors=[("reason", "Enter the reason for your review")],
                                 status=400)
        ask(request, "POST", f"/requests/{ident}/{'approvals' if verdict == 'approve' else 'refusal'}",
            {"reason": reason})
        return RedirectResponse(f"/requests/{ident}?done={verdict}", status_code=303)

    @app.post("/requests/{ident}/approvals")
    async def approve(ident: str, request: Request) -> Response:
        return await review(request, ident, "approve")

    @app.post("/requests/{ident}/refusal")
    async def refuse(ident: str, request: Request) -> Response:
        return await review(request, ident, "refuse")
