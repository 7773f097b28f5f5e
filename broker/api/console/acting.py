"""The console acting as the signed-in person: the governance API called with a short-lived token for the session's
identity, and whether OPA would let that person use a governance form (a form is shown only then; the governance
API asks OPA again, with the resource as it holds it, when the form is used)."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

from fastapi import HTTPException, Request

from broker.adapters.governance_http import GovernanceApiError
from broker.api.auth import AUTHZ_RULE, caller
from broker.api.console.app import Console, GovernanceCalls
from broker.errors import PolicyEngineError, ServiceError
from broker.security.api_tokens import Identity

Ask = Callable[..., Any]


def governance_calls(governance: GovernanceCalls, token_for: Callable[[Identity], str]) -> Ask:
    """`ask(request, method, path, body=None)`: the governance API as the signed-in person; its refusals become the
    console's own (400, 403, 404, 409, 422), anything else a 503 that says to try again."""
    def ask(request: Request, method: str, path: str, body: Mapping[str, Any] | None = None) -> Any:
        try:
            return governance.call(method, path, token_for(caller(request)), body)
        except GovernanceApiError as exc:
            if exc.status in (400, 403, 404, 409, 422):
                raise HTTPException(exc.status, str(exc)) from None
            raise HTTPException(503, "the governance service cannot be reached just now; try again") from None
    return ask


def may_post(console: Console, identity: Identity, route: str, ident: str, resource: Mapping[str, Any]) -> bool:
    """Whether OPA lets `identity` POST to the governance API's `route` (`{ident}` filled in) on `resource`."""
    document = {"service": "governance", "method": "POST", "route": route, "path": route.replace("{ident}", ident),
                "params": {"ident": ident}, "query": {}, "identity": identity.to_json(), "resource": resource}
    try:
        answer = console.engine.evaluate(AUTHZ_RULE, document)
    except (PolicyEngineError, ServiceError):
        return False
    return isinstance(answer, Mapping) and answer.get("allow") is True
