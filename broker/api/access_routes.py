"""The governance API's access requests: make one from a template, list and read them, approve or refuse.

OPA (`policies/authz`) decides every call with the request's requester, publisher and reviewers as the resource; a
body sees only its own requests, a reviewer those addressed to it (`visible_requests`), and the domain checks every
review again (quorum, one review per person, never by the requesting body).
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import Any

from fastapi import FastAPI, HTTPException, Request
from pydantic import BaseModel, ConfigDict, Field

from broker.api.auth import Guard, caller
from broker.domain.access_requests import AccessRequest
from broker.domain.access_rules import RequestForm, reviewers
from broker.errors import GovernanceError, NotFoundError, PolicyEngineError
from broker.services.governance import Governance

log = logging.getLogger(__name__)

VISIBLE_RULE = "accord.authz.visible_requests"


class RequestIn(BaseModel):
    model_config = ConfigDict(extra="forbid")
    template: str = Field(description="the agreement template asked under, e.g. t1-positive-tests")
    purpose: str = Field(description="the template's purpose (purpose limitation: it must be the same)")
    justification: str = Field(description="why the data is needed, for the reviewers")
    duration: str = Field(description="how long access is needed, ISO 8601 (P30D), at most the ladder's grant period")
    legal_basis: list[str] = Field(default_factory=list, description="the template's gateways relied on (all)")
    fields: list[str] = Field(description="the stream fields needed (minimum necessary)")
    areas: list[str] | None = Field(None, description="LA codes wanted (default: all the body serves)")
    backfill: str | None = Field(None, description="history wanted, ISO 8601 (P28D), carried on the grant")

    def form(self) -> RequestForm:
        return RequestForm(template=self.template, purpose=self.purpose, justification=self.justification,
                           duration=self.duration, legal_basis=tuple(self.legal_basis), fields=tuple(self.fields),
                           areas=None if self.areas is None else tuple(self.areas), backfill=self.backfill)


class ReviewIn(BaseModel):
    model_config = ConfigDict(extra="forbid")
    reason: str = Field(description="why (recorded, audited and shown to the requester)")


def request_resource(governance: Governance, ident: str) -> dict[str, Any]:
    """What OPA needs about one request: who asked, whose stream, and who reviews it (now and at tiers passed)."""
    return {"request": _described(governance, _existing(governance, ident))}


def _described(governance: Governance, request: AccessRequest) -> dict[str, Any]:
    ctx = governance.context()
    tiers = [reviewers(ctx, request, tier).to_json() for tier in range(min(request.tier, ctx.ladder.last) + 1)]
    return {"id": request.id, "body": request.body, "role": request.role, "publisher": request.publisher,
            "state": request.state, "tier": request.tier, "reviewers": tiers[-1], "reviewed_by": tiers}


def _existing(governance: Governance, ident: str) -> AccessRequest:
    try:
        return governance.request(ident)
    except GovernanceError as exc:
        raise NotFoundError(str(exc)) from None


def _shown(governance: Governance, request: AccessRequest, timeline: bool) -> dict[str, Any]:
    shown = request.to_json()
    if not timeline:
        shown.pop("timeline")
    if request.state == "awaiting":
        shown["reviewers"] = reviewers(governance.context(), request).to_json()
    return shown


def _visible(guard: Guard, request: Request, described: list[Mapping[str, Any]]) -> set[str]:
    document = {"identity": caller(request).to_json(), "requests": described}
    try:
        answer = guard.engine.evaluate(VISIBLE_RULE, document)
    except PolicyEngineError as exc:
        log.error("authorisation unavailable: %s", exc)
        raise HTTPException(503, "authorisation is unavailable (the policy engine did not answer); "
                                 "nothing is listed until it does") from None
    if not isinstance(answer, list):
        log.error("OPA has no usable %s (is the authz policy loaded?): %r", VISIBLE_RULE, answer)
        raise HTTPException(503, f"authorisation is unavailable (no {VISIBLE_RULE} in the authorisation policy)")
    return {item for item in answer if isinstance(item, str)}


def add_access_routes(app: FastAPI, governance: Governance, guard: Guard) -> None:
    @app.post("/requests", status_code=201)
    def make(body: RequestIn, request: Request) -> dict[str, Any]:
        """Ask for a stream from a template, for the token's body and role; the publisher's reviewers are told and
        the ladder's first deadline starts. 400 says what does not fit the template."""
        made = governance.make_request(caller(request).actor, body.form())
        return _shown(governance, made, timeline=True)

    @app.get("/requests")
    def listed(request: Request, state: str | None = None) -> dict[str, Any]:
        """The caller's own body's requests and those it reviews, oldest first, without timelines."""
        found = [r for r in governance.requests() if state is None or r.state == state]
        allowed = _visible(guard, request, [_described(governance, r) for r in found]) if found else set()
        return {"requests": [_shown(governance, r, timeline=False) for r in found if r.id in allowed]}

    @app.get("/requests/{ident}")
    def shown(ident: str) -> dict[str, Any]:
        """One request with its timeline, approvers, decision and approval-to-first-record."""
        return _shown(governance, _existing(governance, ident), timeline=True)

    @app.post("/requests/{ident}/approvals")
    def approve(ident: str, body: ReviewIn, request: Request) -> dict[str, Any]:
        """One reviewer's approval; at the tier's quorum the agreement is instantiated and put in force."""
        reviewed = governance.review_request(ident, caller(request).actor, "approve", body.reason)
        return _shown(governance, reviewed, timeline=True)

    @app.post("/requests/{ident}/refusal")
    def refuse(ident: str, body: ReviewIn, request: Request) -> dict[str, Any]:
        """A reviewer refuses, with a reason (at the board's tier its quorum must agree)."""
        reviewed = governance.review_request(ident, caller(request).actor, "refuse", body.reason)
        return _shown(governance, reviewed, timeline=True)
