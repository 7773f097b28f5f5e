"""The console's FastAPI app: the shell (sign-in, sessions, CSRF, errors, static files) and its pages.

Every page and action but the public ones is authorised exactly as the API is: the app-wide dependency of
broker/api/auth.py asks OPA's `data.accord.authz` with service `console`, the route template and the signed-in
person's body, role and name; the session middleware below stands in for the bearer token. Governance actions go to
the governance API as the signed-in person, where OPA decides them again with the dispute's parties and deciders.
"""

from __future__ import annotations

import csv
import io
import secrets
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol
from urllib.parse import parse_qs

from fastapi import FastAPI, HTTPException, Request
from fastapi.responses import FileResponse, HTMLResponse, JSONResponse, RedirectResponse, Response
from jinja2 import Environment, FileSystemLoader, select_autoescape
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.types import ASGIApp, Receive, Scope, Send

from broker.api.auth import LIVENESS, Guard, PolicyQuery, authorise
from broker.api.console.sessions import SESSION_COOKIE, SIGN_IN_COOKIE, Session, Sessions, same_token
from broker.clock import system_clock
from broker.domain.control import PolicyState
from broker.domain.transparency import Figures
from broker.errors import AuthenticationError
from broker.security.api_tokens import Identity
from broker.services.deliveries import Deliveries

HERE = Path(__file__).parent
MAX_FORM_BYTES = 64 * 1024
NAVIGATION = (("/catalogue", "Catalogue"), ("/my-data", "My data"), ("/requests", "Access requests"),
              ("/disputes", "Disputes"), ("/emergency", "Emergency"), ("/publisher", "Publisher"), ("/audit", "Audit"),
              ("/transparency", "Transparency"))
PUBLIC_NAVIGATION = (("/transparency", "Transparency"), ("/sign-in", "Sign in"))
PUBLIC = LIVENESS | frozenset({
    ("GET", "/sign-in"), ("POST", "/sign-in"), ("GET", "/transparency"), ("GET", "/transparency.json"),
    ("GET", "/transparency.csv"), ("GET", "/static/{name}"), ("GET", "/assets/images/{name}")})
SECURITY_HEADERS = {
    "Content-Security-Policy": "default-src 'self'; img-src 'self' data:; object-src 'none'; base-uri 'none'; "
                               "form-action 'self'; frame-ancestors 'none'",
    "X-Content-Type-Options": "nosniff", "Referrer-Policy": "no-referrer", "Cache-Control": "no-store",
}


class GovernanceCalls(Protocol):
    """The governance API as a client (broker/adapters/governance_http.py's GovernanceClient)."""

    def call(self, method: str, path: str, token: str, body: Mapping[str, Any] | None = None,
             params: Mapping[str, str] | None = None) -> Any: ...


@dataclass(frozen=True)
class Console:
    """What the console's pages read and act through; the runtime wires each one (broker/runtime/console.py)."""

    sessions: Sessions
    engine: PolicyQuery
    assets: Path                                  # node_modules holding govuk-frontend
    catalogue: Callable[[], Mapping[str, Any]]    # streams, templates, agreements, bodies (console/catalogue.py)
    figures: Callable[[], Figures]                # the transparency figures, folded from the governance log
    deliveries: Deliveries                        # the pull API's use case: a person's own deliveries
    policy: Callable[[], PolicyState]             # the signed control topic as it stands (agreements, grants)
    audit: Callable[[], Mapping[str, Any]]        # the audit chain's verification status
    lag: Callable[[str], int | None]              # a stream's records not yet through the gate (None: unknown)
    governance: GovernanceCalls                   # the governance API, called as the signed-in person
    token_for: Callable[[Identity], str]          # a short-lived bearer token for a session's identity
    # A stream's newest quarantined entries, newest first, up to a count (runtime/console.newest_quarantine), and
    # its schema versions in the registry, newest first (the Publisher page); None: not wired.
    quarantine: Callable[[str, int], list[dict[str, Any]]] | None = None
    schema_versions: Callable[[str], list[dict[str, Any]]] | None = None
    audit_lines: Callable[[], Iterable[str]] | None = None     # the audit chain's lines as the topic holds them


class SessionIdentity:
    """ASGI middleware: the signed-in person of the session cookie, if any, as the request's identity (what the
    bearer token is for the API); security headers on every answer."""

    def __init__(self, app: ASGIApp, sessions: Sessions) -> None:
        self.app, self.sessions = app, sessions

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        session = self.sessions.get(_cookie(scope, SESSION_COOKIE))
        if session is not None:
            scope.setdefault("state", {}).update(identity=session.identity, session=session)

        async def with_headers(message: Any) -> None:
            if message["type"] == "http.response.start":
                headers = list(message.get("headers", []))
                present = {name.lower() for name, _ in headers}
                headers += [(k.lower().encode(), v.encode()) for k, v in SECURITY_HEADERS.items()
                            if k.lower().encode() not in present]
                message = {**message, "headers": headers}
            await send(message)

        await self.app(scope, receive, with_headers)


def _cookie(scope: Scope, name: str) -> str | None:
    for key, value in scope.get("headers", []):
        if key.lower() == b"cookie":
            for part in value.decode("latin-1").split(";"):
                k, _, v = part.strip().partition("=")
                if k == name:
                    return str(v)
    return None


def session_of(request: Request) -> Session | None:
    session: Any = getattr(request.state, "session", None)
    return session if isinstance(session, Session) else None


async def form(request: Request) -> dict[str, str]:
    """The urlencoded form of a POST (first value of each field), refused (400) beyond MAX_FORM_BYTES."""
    return {k: v[0] for k, v in (await form_values(request)).items()}


async def form_values(request: Request) -> dict[str, list[str]]:
    """The urlencoded form of a POST with every value of each field (checkboxes), refused (400) beyond
    MAX_FORM_BYTES."""
    raw = b""
    async for chunk in request.stream():
        raw += chunk
        if len(raw) > MAX_FORM_BYTES:
            raise HTTPException(400, "the form is too large")
    try:
        fields = parse_qs(raw.decode("utf-8"), keep_blank_values=True, max_num_fields=200)
    except (UnicodeDecodeError, ValueError):
        raise HTTPException(400, "the form could not be read") from None
    return fields


async def checked_form(request: Request) -> dict[str, str]:
    """The form of a signed-in person's POST, refused (403) unless it carries the session's CSRF token."""
    return {k: v[0] for k, v in (await checked_form_values(request)).items()}


async def checked_form_values(request: Request) -> dict[str, list[str]]:
    """checked_form with every value of each field."""
    session = session_of(request)
    fields = await form_values(request)
    if session is None or not same_token(next(iter(fields.get("csrf") or ()), None), session.csrf):
        raise HTTPException(403, "this form was not sent from the console page you were given (its security token "
                                 "is missing or wrong); go back, reload the page and try again")
    return fields


class Pages:
    """Renders templates with the shell's context (navigation, session, errors, notice)."""

    def __init__(self) -> None:
        self.env = Environment(loader=FileSystemLoader(HERE / "templates"), autoescape=select_autoescape(["html"]),
                               auto_reload=False)

    def render(self, request: Request, template: str, title: str, current: str = "", status: int = 200,
               **context: Any) -> HTMLResponse:
        session = session_of(request)
        html = self.env.get_template(template).render(
            title=title, current=current, session=session,
            navigation=NAVIGATION if session is not None else PUBLIC_NAVIGATION, **context)
        return HTMLResponse(html, status_code=status)


def create_console_app(console: Console, pages: Pages | None = None) -> FastAPI:
    pages = pages or Pages()
    app = FastAPI(title="Accord Console", docs_url=None, redoc_url=None, openapi_url=None,
                  dependencies=[authorise(Guard(_no_bearer, console.engine), "console", public=PUBLIC)])
    app.add_middleware(SessionIdentity, sessions=console.sessions)
    _errors(app, pages)
    _static(app, console.assets)
    _sign_in(app, console, pages)
    _public(app, console, pages)

    # The pages import this module's shell.
    from broker.api.console.audit_trail import add_audit_trail
    from broker.api.console.disputes import add_disputes
    from broker.api.console.emergency import add_emergency
    from broker.api.console.my_data import add_my_data
    from broker.api.console.pages import add_pages
    from broker.api.console.publisher import add_publisher
    from broker.api.console.requests import add_requests
    from broker.api.console.why_not import add_why_not

    add_pages(app, console, pages)
    add_my_data(app, console, pages, system_clock)
    add_disputes(app, console, pages, console.governance, console.token_for)
    add_requests(app, console, pages)
    add_emergency(app, console, pages, console.governance, console.token_for)
    add_publisher(app, console, pages)
    add_audit_trail(app, console, pages)
    add_why_not(app, console, pages, system_clock)
    return app


def _no_bearer(_: str) -> Identity:
    # The console's caller is named by its session (SessionIdentity), never by a bearer token.
    raise AuthenticationError("the console takes no bearer token; sign in with a link")


def _errors(app: FastAPI, pages: Pages) -> None:
    titles = {400: "There is a problem with the request", 401: "You need to sign in", 403: "You cannot do this",
              404: "Page not found", 405: "You cannot do this here", 503: "Sorry, the service is unavailable"}

    async def http_error(request: Request, exc: Exception) -> Response:
        assert isinstance(exc, StarletteHTTPException)
        if exc.status_code == 401 and request.method == "GET":
            return RedirectResponse("/sign-in", status_code=303)
        message = str(exc.detail) if exc.status_code != 404 else "If you typed the web address, check it is correct."
        return pages.render(request, "error.html", titles.get(exc.status_code, "Something went wrong"),
                            status=exc.status_code, message=message)

    app.add_exception_handler(StarletteHTTPException, http_error)


def _static(app: FastAPI, assets: Path) -> None:
    dist = assets / "govuk-frontend" / "dist" / "govuk"
    files = {"govuk-frontend.min.css": dist / "govuk-frontend.min.css",
             "govuk-frontend.min.js": dist / "govuk-frontend.min.js",
             "console.css": HERE / "static" / "console.css", "console.js": HERE / "static" / "console.js"}
    images = dist / "assets" / "images"

    @app.get("/static/{name}", include_in_schema=False)
    def static(name: str) -> FileResponse:
        if name not in files:
            raise HTTPException(404, "no such file")
        return FileResponse(files[name], headers={"Cache-Control": "public, max-age=3600"})

    @app.get("/assets/images/{name}", include_in_schema=False)
    def image(name: str) -> FileResponse:
        path = images / name
        if "/" in name or name.startswith(".") or not path.is_file():
            raise HTTPException(404, "no such file")
        return FileResponse(path, headers={"Cache-Control": "public, max-age=3600"})

    @app.get("/health", include_in_schema=False)
    def health() -> dict[str, str]:
        return {"status": "ok"}


def _secure(request: Request) -> bool:
    return request.url.scheme == "https"


def _sign_in(app: FastAPI, console: Console, pages: Pages) -> None:
    @app.get("/sign-in")
    def sign_in_page(request: Request, link: str | None = None) -> Response:
        """The link's landing page: one button that exchanges it (a GET never uses a link up, so a mail scanner
        that follows it does not sign anyone in nor spend the link)."""
        token = secrets.token_urlsafe(32)
        response = pages.render(request, "sign_in.html", "Sign in", current="/sign-in", link=link,
                                sign_in_csrf=token)
        response.set_cookie(SIGN_IN_COOKIE, token, max_age=900, httponly=True, samesite="strict",
                            secure=_secure(request), path="/sign-in")
        return response

    @app.post("/sign-in")
    async def sign_in(request: Request) -> Response:
        fields = await form(request)
        expected = request.cookies.get(SIGN_IN_COOKIE, "")
        if not expected or not same_token(fields.get("csrf"), expected):
            raise HTTPException(403, "this sign-in form was not sent from the console's sign-in page; open your "
                                     "link again")
        try:
            ident, _ = console.sessions.exchange(fields.get("link", ""))
        except AuthenticationError as exc:
            return pages.render(request, "error.html", "You could not be signed in", status=401,
                                message=str(exc))
        response = RedirectResponse("/", status_code=303)
        response.set_cookie(SESSION_COOKIE, ident, httponly=True, samesite="strict", secure=_secure(request),
                            path="/")
        response.delete_cookie(SIGN_IN_COOKIE, path="/sign-in")
        return response

    @app.post("/sign-out")
    async def sign_out(request: Request) -> Response:
        await checked_form(request)
        console.sessions.end(request.cookies.get(SESSION_COOKIE))
        response = RedirectResponse("/sign-in", status_code=303)
        response.delete_cookie(SESSION_COOKIE, path="/")
        return response


def _public(app: FastAPI, console: Console, pages: Pages) -> None:
    @app.get("/transparency")
    def transparency(request: Request) -> Response:
        figures = console.figures()
        sections: dict[str, list[tuple[str, str]]] = {}
        for section, measure, value in figures.rows():
            sections.setdefault(section.capitalize(), []).append((measure, value))
        return pages.render(request, "transparency.html", "Transparency", current="/transparency",
                            figures=figures, sections=list(sections.items()))

    @app.get("/transparency.json")
    def transparency_json() -> JSONResponse:
        return JSONResponse(console.figures().to_json())

    @app.get("/transparency.csv")
    def transparency_csv() -> Response:
        out = io.StringIO()
        writer = csv.writer(out, lineterminator="\r\n")
        writer.writerow(["section", "measure", "value"])
        writer.writerows(console.figures().rows())
        return Response(out.getvalue(), media_type="text/csv; charset=utf-8",
                        headers={"Content-Disposition": 'attachment; filename="accord-transparency.csv"'})


__all__ = ["Console", "create_console_app"]
