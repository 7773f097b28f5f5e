"""Every API call is authenticated as a body, role and person (a bearer token) and authorised by OPA.

The guard is installed on the whole app in two steps (`guarded()` gives both to `FastAPI(...)`), so a route added
later cannot be left open by forgetting it:

1. Authentication is ASGI middleware that runs before routing, so a caller without a valid token is answered 401
   (with WWW-Authenticate) before anything, even a request body, is parsed: for a missing, malformed, expired,
   revoked or foreign-signed token, and for paths that do not exist.
2. Authorisation is an app-wide dependency: OPA's `data.accord.authz` is asked with the route template
   (`/disputes/{ident}/decision`), not the raw path, so encoded or doubled slashes cannot dress one endpoint up as
   another. 403 with OPA's reasons when it refuses; 503 when OPA cannot be asked (fail closed). Without the
   middleware's identity it refuses with 401.

The registry also takes the token as HTTP Basic (user name: the token's body id; password: the token), because
kcat, librdkafka's tools and Confluent's clients send registry credentials that way. It is verified exactly as a
bearer token is; other services take Bearer only.

Liveness probes are the one exception: `GET /health` (and the registry's `GET /`, Confluent's root, which
supervisors probe) say only "up" and must answer a load balancer holding no token. The OpenAPI document and its
viewers are public too, so councils can read what the API offers before they hold a token.
"""

from __future__ import annotations

import base64
import binascii
import inspect
import logging
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Protocol, cast

from fastapi import Depends, HTTPException, Request
from fastapi.params import Depends as DependsParam
from starlette.middleware import Middleware
from starlette.responses import JSONResponse, Response
from starlette.types import ASGIApp, Receive, Scope, Send

from broker.config import Settings
from broker.errors import AuthenticationError, ConfigError, PolicyEngineError
from broker.security.api_tokens import Identity, verifier_for

log = logging.getLogger(__name__)

AUTHZ_RULE = "accord.authz.decision"
# What a service that takes HTTP Basic (the registry, for kcat and other librdkafka tools) expects in it.
BASIC = "HTTP Basic with your body id as the user name and an Accord token as the password"
LIVENESS = frozenset({("GET", "/health"), ("GET", "/ready")})
DOCUMENTATION = frozenset({("GET", "/openapi.json"), ("GET", "/docs"), ("GET", "/docs/oauth2-redirect"),
                           ("GET", "/redoc")})
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
        from broker.security.opa_tokens import READER, opa_engine

        verify = verifier_for(settings.secrets_dir).verify
        if settings.opa_url:
            return cls(verify, opa_engine(settings.opa_url, settings, READER))
        return cls(verify, _NoEngine())


class _NoEngine:
    """Stands in when no OPA is configured: every request is refused with 503, never let through."""

    message = "no OPA is configured (set ACCORD_OPA_URL); every request is refused"

    def evaluate(self, rule: str, input_doc: Mapping[str, Any]) -> Any:
        raise PolicyEngineError(self.message)


def _unauthenticated(reason: str, basic: bool = False) -> HTTPException:
    # RFC 6750: the challenge names the scheme and why the token was refused; RFC 7617 for a service taking Basic.
    quoted = reason.replace('"', "'")
    challenge = f'Bearer realm="accord", error="invalid_token", error_description="{quoted}"'
    if basic:
        challenge += ', Basic realm="accord", charset="UTF-8"'
    return HTTPException(401, f"not authenticated: {reason}", headers={"WWW-Authenticate": challenge})


def bearer_token(authorization: str | None) -> str:
    return _credentials(authorization, basic=False)[0]


def _credentials(authorization: str | None, basic: bool) -> tuple[str, str | None]:
    """The token, and the user name it came with when it came as HTTP Basic (only where `basic` is taken)."""
    scheme, _, value = (authorization or "").strip().partition(" ")
    if basic and scheme.lower() == "basic":
        return _basic(value.strip())
    also = f" (or {BASIC})" if basic else ""
    if not authorization:
        raise _unauthenticated(f"send `Authorization: Bearer <token>`{also}; `accord credentials token` issues one",
                               basic)
    if scheme.lower() != "bearer" or not value.strip():
        raise _unauthenticated(f"the Authorization header must be `Bearer <token>`{also}", basic)
    return value.strip(), None


def _basic(encoded: str) -> tuple[str, str]:
    try:
        user, colon, password = base64.b64decode(encoded, validate=True).decode("utf-8").partition(":")
    except (binascii.Error, UnicodeDecodeError):
        user, colon, password = "", "", ""
    if not (user and colon and password):
        raise _unauthenticated(f"Basic credentials must be {BASIC}", basic=True)
    return password.strip(), user


def guarded(guard: Guard, service: str, resources: Resources | None = None,
            public: frozenset[tuple[str, str]] = LIVENESS, basic: bool = False) -> dict[str, Any]:
    """`FastAPI(**guarded(...))`: the authentication middleware and the authorisation dependency, with one list of
    public (method, path) pairs for both. `basic`: the token may also come as HTTP Basic (see BASIC)."""
    return {"middleware": [Middleware(Authentication, guard=guard, public=public | DOCUMENTATION, basic=basic)],
            "dependencies": [authorise(guard, service, resources, public)]}


class Authentication:
    """ASGI middleware: the bearer token of every HTTP request but the public ones, verified before routing.

    The verified Identity goes into the request's state for the authorisation dependency (and `caller`).
    """

    def __init__(self, app: ASGIApp, guard: Guard, public: frozenset[tuple[str, str]], basic: bool = False) -> None:
        self.app, self.guard, self.public, self.basic = app, guard, public, basic

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or (_method(scope["method"]), scope["path"]) in self.public:
            await self.app(scope, receive, send)
            return
        header = next((value.decode("latin-1") for name, value in scope.get("headers", [])
                       if name.lower() == b"authorization"), None)
        try:
            identity = _identity(self.guard, header, self.basic)
        except HTTPException as exc:
            response = await _rendered(scope, receive, exc)
            await response(scope, receive, send)
            return
        scope.setdefault("state", {})["identity"] = identity
        await self.app(scope, receive, send)


async def _rendered(scope: Scope, receive: Receive, exc: HTTPException) -> Response:
    """`exc` as the app's own handler renders it (each service keeps its error shape), else as FastAPI's default."""
    handlers = getattr(scope.get("app"), "exception_handlers", {})
    handler = next((handlers[kind] for kind in type(exc).__mro__ if kind in handlers), None)
    if handler is None:
        return JSONResponse({"detail": exc.detail}, exc.status_code, headers=exc.headers)
    response = handler(Request(scope, receive), exc)
    return cast(Response, await response if inspect.isawaitable(response) else response)


def _method(method: str) -> str:
    return "GET" if method == "HEAD" else method


def authorise(guard: Guard, service: str, resources: Resources | None = None,
              public: frozenset[tuple[str, str]] = LIVENESS) -> DependsParam:
    """The app-wide dependency that asks OPA; it relies on `Authentication` having verified the caller."""

    def check(request: Request) -> Identity | None:
        route = getattr(request.scope.get("route"), "path", None)
        method = _method(request.method)
        if route is None or (method, route) in public:
            return None
        identity = caller(request)
        params = {str(k): str(v) for k, v in request.path_params.items()}
        query = {k: v for k, v in request.query_params.items()}
        resource = resources(route, params) if resources is not None else None
        document = {"service": service, "method": method, "path": request.url.path, "route": route,
                    "params": params, "query": query, "identity": identity.to_json(), "resource": resource or {}}
        _ask(guard.engine, document)
        return identity

    return cast(DependsParam, Depends(check))


def _identity(guard: Guard, authorization: str | None, basic: bool = False) -> Identity:
    token, user = _credentials(authorization, basic)
    try:
        identity = guard.verify(token)
    except AuthenticationError as exc:
        raise _unauthenticated(str(exc), basic) from None
    except ConfigError as exc:
        log.error("cannot verify API tokens: %s", exc)
        raise HTTPException(503, "this service cannot verify tokens now (its key is missing); try later") from None
    if user is not None and user != identity.body:
        # The user name adds nothing to the token's proof, but a mismatch is a client mixing credentials up.
        raise _unauthenticated("the Basic user name must be the body id the token was issued to", basic)
    return identity


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


def permitted(guard: Guard, request: Request, rule: str, key: str, items: Sequence[str]) -> list[str]:
    """Those of `items` the caller may see, in their order: OPA's `rule` (a list) for the caller and `items` under
    `key`. For lists whose entries are not all the caller's business, after the route itself was allowed."""
    document = {"identity": caller(request).to_json(), key: list(items)}
    try:
        answer = guard.engine.evaluate(rule, document)
    except PolicyEngineError as exc:
        log.error("authorisation unavailable: %s", exc)
        raise HTTPException(503, "authorisation is unavailable (the policy engine did not answer); "
                                 "nothing is listed until it does") from None
    if not isinstance(answer, list):
        log.error("OPA has no usable %s (is the authz policy loaded?): %r", rule, answer)
        raise HTTPException(503, f"authorisation is unavailable (no {rule} in the authorisation policy)")
    allowed = {item for item in answer if isinstance(item, str)}
    return [item for item in items if item in allowed]


def caller(request: Request) -> Identity:
    """The Identity the guard verified for this request (routes that act for someone depend on it)."""
    identity = getattr(request.state, "identity", None)
    if not isinstance(identity, Identity):
        # Reachable only without the Authentication middleware, or on a public route that asks who acts:
        # refuse rather than guess.
        raise _unauthenticated("this endpoint needs a bearer token")
    return identity
