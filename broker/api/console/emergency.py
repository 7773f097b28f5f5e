"""Emergency: the levels in force, the declare and lift forms (shown only to a declarer, as OPA decides for the
governance API), break-glass with its justification, and the post-hoc review queue (the review disputes break-glass
opens). Every action is the governance API's own operation, called as the signed-in person, so the service and OPA
decide it again there."""

from __future__ import annotations

from collections.abc import Callable, Mapping

from fastapi import FastAPI, Request
from fastapi.responses import RedirectResponse, Response

from broker.api.auth import caller
from broker.api.console.acting import governance_calls, may_post
from broker.api.console.app import Console, GovernanceCalls, Pages, checked_form
from broker.domain.disputes import OPEN_STATES
from broker.domain.ladder import LEVELS
from broker.security.api_tokens import Identity

BREAK_GLASS_REVIEW = "break-glass-review"
DONE = {"declared": "The emergency level was declared. Open disputes' deadlines follow the new level.",
        "lifted": "The emergency level was lifted: the scope is back at normal.",
        "break-glass": "Break-glass access was taken. A review dispute was opened; it is reviewed after the fact."}



def add_emergency(app: FastAPI, console: Console, pages: Pages, governance: GovernanceCalls,
                  token_for: Callable[[Identity], str]) -> None:
    ask = governance_calls(governance, token_for)

    def page(request: Request, done: str | None = None, errors: list[tuple[str, str]] | None = None,
             status: int = 200, form: Mapping[str, str] | None = None) -> Response:
        identity = caller(request)
        levels = ask(request, "GET", "/emergency").get("levels", {})
        listed = ask(request, "GET", "/disputes").get("disputes", [])
        reviews = [d for d in listed if d.get("kind") == BREAK_GLASS_REVIEW]
        streams = {str(t["stream"]) for t in console.catalogue()["templates"] if t.get("stream")}
        return pages.render(
            request, "emergency.html", "Emergency", current="/emergency", status=status, notice=done,
            errors=errors or [], form=form or {},
            levels=sorted(levels.items()), level_names=[level for level in LEVELS if level != "normal"],
            may_declare=may_post(console, identity, "/emergency", "", {}),
            may_break_glass=may_post(console, identity, "/break-glass", "", {}),
            streams=sorted(streams),
            open_reviews=[d for d in reviews if d.get("state") in OPEN_STATES],
            closed_reviews=[d for d in reviews if d.get("state") not in OPEN_STATES])

    @app.get("/emergency")
    def emergency(request: Request, done: str | None = None) -> Response:
        return page(request, done=DONE.get(done or ""))

    @app.post("/emergency/declare")
    async def declare(request: Request) -> Response:
        fields = await checked_form(request)
        scope, level, reason = (fields.get("scope", "").strip() or "national", fields.get("level", ""),
                                fields.get("reason", "").strip())
        errors = ([] if level in LEVELS and level != "normal" else [("level", "Select the level to declare")]) + \
                 ([] if reason else [("reason", "Enter the reason for the declaration")])
        if errors:
            return page(request, errors=errors, status=400, form=fields)
        ask(request, "POST", "/emergency", {"scope": scope, "level": level, "reason": reason})
        return RedirectResponse("/emergency?done=declared", status_code=303)

    @app.post("/emergency/lift")
    async def lift(request: Request) -> Response:
        fields = await checked_form(request)
        scope, reason = fields.get("scope", "").strip() or "national", fields.get("lift_reason", "").strip()
        if not reason:
            return page(request, errors=[("lift_reason", "Enter the reason for lifting the level")], status=400,
                        form=fields)
        ask(request, "POST", "/emergency/lift", {"scope": scope, "reason": reason})
        return RedirectResponse("/emergency?done=lifted", status_code=303)

    @app.post("/emergency/break-glass")
    async def break_glass(request: Request) -> Response:
        fields = await checked_form(request)
        stream, purpose, justification = (fields.get("stream", "").strip(), fields.get("purpose", "").strip(),
                                          fields.get("justification", "").strip())
        errors = ([] if stream else [("stream", "Select the stream")]) + \
                 ([] if purpose else [("purpose", "Enter the purpose")]) + \
                 ([] if justification else [("justification", "Enter the justification; it is reviewed after "
                                                              "the fact")])
        if errors:
            return page(request, errors=errors, status=400, form=fields)
        ask(request, "POST", "/break-glass", {"stream": stream, "purpose": purpose, "justification": justification})
        return RedirectResponse("/emergency?done=break-glass", status_code=303)
