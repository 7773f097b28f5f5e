"""Every API call is authenticated as a body, role and person (a bearer token) and authorised by OPA.

The guard is one FastAPI dependency installed on the whole app, so a route added later cannot be left open by
forgetting it. It answers 401 (with WWW-Authenticate) when the token is missing, malformed, expired, revoked or not
signed by Accord's key; 403 with OPA's reasons when `data.accord.authz` refuses; and 503 when OPA cannot be asked
(fail closed). OPA is asked with the route template (`/disputes/{ident}/decision`), not the raw path, so encoded or
doubled slashes cannot dress one endpoint up as another.

Liveness probes are the one exception: `GET /health` (and the registry's `GET /`, Confluent's root, which
supervisors probe) say only "up" and must answer a load balancer holding no token.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, Protocol, cast

from fastapi import Depends, HTTPException, Request
from fastapi.params import Depends as DependsParam

from broker.config import Settings
from broker.errors import AuthenticationError, ConfigError, PolicyEngineError
from broker.services.api_tokens import Identity, verifier_for

log = logging.getLogger(__name__)

AUTHZ_RULE = "accord.authz.decision"
LIVENESS = frozenset({("GET", "/health")})
# (route template, path parameters) -> what OPA needs to know about the thing acted on, or None.
Resources = Callable[[str, Mapping[str, str]], Mapping[str, Any] | None]


class PolicyQuery(Protocol):
    """The one thing the guard needs of a policy engine (OPA's adapter and the unit tests' fakes both fit)."""

    def evaluate(self, rule: str, input_doc: Mapping[str, Any]) -> Any:
        """The value of `rule` for `input_doc`; None if undefined; PolicyEngineError if it cannot answer."""


@dataclass(frozen=True)
class Guard:
    """How a service checks its callers: `verify` turns a token into an Identity, `engine` is OPA."""

    verify: Callable[[str], Identity]
    engine: PolicyQuery

    @classmethod
    def from_settings(cls, settings: Settings) -> Guard:
        """The public key and revocations of the secrets directory, and the OPA at ACCORD_OPA_URL."""
        from broker.adapters.opa import OpaPolicyEngine

        verify = verifier_for(settings.secrets_dir).verify
        if settings.opa_url:
            return cls(verify, OpaPolicyEngine(settings.opa_url))
        return cls(verify, _NoEngine())


class _NoEngine:
    """Stands in when no OPA is configured: every request is refused with 503, never let through."""

    message = "no OPA is configured (set ACCORD_OPA_URL); every request is refused"

    def evaluate(self, rule: str, input_doc: Mapping[str, Any]) -> Any:
        raise PolicyEngineError(self.message)


def _unauthenticated(reason: str) -> HTTPException:
    # RFC 6750: the challenge names the scheme and why the token was refused.
    quoted = reason.replace('"', "'")
    return HTTPException(401, f"not authenticated: {reason}",
                         headers={"WWW-Authenticate": f'Bearer realm="accord", error="invalid_token", '
                                                      f'error_description="{quoted}"'})


def bearer_token(authorization: str | None) -> str:
    if not authorization:
        raise _unauthenticated("send `Authorization: Bearer <token>`; `accord credentials token` issues one")
    scheme, _, token = authorization.strip().partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        raise _unauthenticated("the Authorization header must be `Bearer <token>`")
    return token.strip()


def authorise(guard: Guard, service: str, resources: Resources | None = None,
              public: frozenset[tuple[str, str]] = LIVENESS) -> DependsParam:
    """The dependency to pass as `FastAPI(dependencies=[...])`; the caller's Identity lands in request.state."""

    def check(request: Request) -> Identity | None:
        route = getattr(request.scope.get("route"), "path", None)
        method = "GET" if request.method == "HEAD" else request.method
        if route is None or (method, route) in public:
            return None
        identity = _identity(guard, request.headers.get("authorization"))
        params = {str(k): str(v) for k, v in request.path_params.items()}
        query = {k: v for k, v in request.query_params.items()}
        resource = resources(route, params) if resources is not None else None
        document = {"service": service, "method": method, "path": request.url.path, "route": route,
                    "params": params, "query": query, "identity": identity.to_json(), "resource": resource or {}}
        _ask(guard.engine, document)
        request.state.identity = identity
        return identity

    return cast(DependsParam, Depends(check))


def _identity(guard: Guard, authorization: str | None) -> Identity:
    token = bearer_token(authorization)
    try:
        return guard.verify(token)
    except AuthenticationError as exc:
        raise _unauthenticated(str(exc)) from None
    except ConfigError as exc:
        log.error("cannot verify API tokens: %s", exc)
        raise HTTPException(503, "this service cannot verify tokens now (its key is missing); try later") from None


def _ask(engine: PolicyQuery, document: Mapping[str, Any]) -> None:
    try:
        answer = engine.evaluate(AUTHZ_RULE, document)
    except PolicyEngineError as exc:
        log.error("authorisation unavailable: %s", exc)
        raise HTTPException(503, "authorisation is unavailable (the policy engine did not answer); "
                                 "nothing is allowed until it does") from None
    if not isinstance(answer, Mapping) or not isinstance(answer.get("allow"), bool):
        log.error("OPA has no usable %s (is the authz policy loaded?): %r", AUTHZ_RULE, answer)
        raise HTTPException(503, "authorisation is unavailable (no authorisation policy is loaded)")
    if not answer["allow"]:
        reasons = [str(r) for r in answer.get("reasons") or []] or ["not allowed"]
        raise HTTPException(403, f"forbidden: {'; '.join(reasons)}")


def caller(request: Request) -> Identity:
    """The Identity the guard verified for this request (routes that act for someone depend on it)."""
    identity = getattr(request.state, "identity", None)
    if not isinstance(identity, Identity):
        # Only reachable if a route was marked public and still asks who acts: refuse rather than guess.
        raise _unauthenticated("this endpoint needs a bearer token")
    return identity
