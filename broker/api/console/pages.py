"""The signed-in pages: the start page and the catalogue (My data, Disputes and Audit have modules of their own)."""

from __future__ import annotations

from fastapi import FastAPI, Request
from fastapi.responses import Response

from broker.api.auth import caller
from broker.api.console.app import Console, Pages


def add_pages(app: FastAPI, console: Console, pages: Pages) -> None:
    @app.get("/")
    def home(request: Request) -> Response:
        identity = caller(request)
        bodies = console.catalogue()["bodies"]
        return pages.render(request, "home.html", "Accord Console", current="/",
                            body_name=bodies.get(identity.body, identity.body))

    @app.get("/audit")
    def audit(request: Request) -> Response:
        return pages.render(request, "audit.html", "Audit", current="/audit", status_of=console.audit())

    @app.get("/catalogue")
    def catalogue(request: Request) -> Response:
        return pages.render(request, "catalogue.html", "Catalogue", current="/catalogue", **console.catalogue())
