"""Disputes: the open disputes a person may read in full, by tier with their deadlines; one dispute's timeline; and
the comment and decision forms, shown only where OPA would let the person use them.

Everything goes through the governance API as the signed-in person (a short-lived token the console issues for the
session's identity), so the service's own operations and OPA's rules for them decide what is shown and done.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

from fastapi import FastAPI, HTTPException, Request
from fastapi.responses import RedirectResponse, Response

from broker.adapters.governance_http import GovernanceApiError
from broker.api.auth import AUTHZ_RULE, caller
from broker.api.console.app import Console, GovernanceCalls, Pages, checked_form
from broker.domain.disputes import OPEN_STATES
from broker.errors import PolicyEngineError, ServiceError
from broker.security.api_tokens import Identity

DECIDE, COMMENT = "/disputes/{ident}/decision", "/disputes/{ident}/comments"
OUTCOMES = (("granted", "Grant what was asked for"), ("refused", "Refuse: the challenged decision stands"))
DONE = {"comment": "Your comment was added to the dispute's timeline.",
        "decision": "Your decision was recorded. The timeline shows whether the tier has decided."}


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
    def ask(request: Request, method: str, path: str, body: Mapping[str, Any] | None = None) -> Any:
        try:
            return governance.call(method, path, token_for(caller(request)), body)
        except GovernanceApiError as exc:
            if exc.status in (403, 404, 400, 409, 422):
                raise HTTPException(exc.status, str(exc)) from None
            raise HTTPException(503, "the governance service cannot be reached just now; try again") from None

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
        resource = dispute_resource(found, tiers())
        forms = {route: _allowed(console, caller(request), route, ident, resource) for route in (DECIDE, COMMENT)}
        return pages.render(request, "dispute.html", f"Dispute {ident}", current="/disputes", dispute=found,
                            may_decide=forms[DECIDE], may_comment=forms[COMMENT], outcomes=OUTCOMES,
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
        fields = await checked_form(request)
        outcome, reason = fields.get("outcome", ""), fields.get("reason", "").strip()
        errors = ([] if outcome in dict(OUTCOMES) else [("outcome", "Select an outcome")]) + \
                 ([] if reason else [("reason", "Enter the reason for your decision")])
        if errors:
            return _dispute_page(request, ident, errors=errors, status=400)
        ask(request, "POST", f"/disputes/{ident}/decision", {"outcome": outcome, "reason": reason})
        return RedirectResponse(f"/disputes/{ident}?done=decision", status_code=303)


def _allowed(console: Console, identity: Identity, route: str, ident: str, resource: Mapping[str, Any]) -> bool:
    """Whether OPA lets `identity` POST to the governance API's `route` for this dispute (a form is shown only
    then; the governance API asks OPA again when it is used)."""
    document = {"service": "governance", "method": "POST", "route": route, "path": route.replace("{ident}", ident),
                "params": {"ident": ident}, "query": {}, "identity": identity.to_json(), "resource": resource}
    try:
        answer = console.engine.evaluate(AUTHZ_RULE, document)
    except (PolicyEngineError, ServiceError):
        return False
    return isinstance(answer, Mapping) and answer.get("allow") is True
