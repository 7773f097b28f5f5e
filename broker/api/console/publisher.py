"""Publisher: for a publishing body's people, its own streams, each one's schema versions as the registry holds them,
and the rows quarantined on it with their reasons, newest first, a page at a time (a page reads only the newest
entries it needs, however long the topic: runtime/console.newest_quarantine). OPA lets a body see its own streams
only, and the page checks the catalog's owner again."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from fastapi import FastAPI, HTTPException, Request
from fastapi.responses import Response

from broker.api.auth import caller
from broker.api.console.app import Console, Pages
from broker.errors import AccordError

PAGE = 25


def own_streams(catalogue: Mapping[str, Any], body: str) -> list[Mapping[str, Any]]:
    return [s for s in catalogue["streams"] if s.get("owner") == body]


def quarantine_page(entries: Sequence[Mapping[str, Any]], page: int) -> tuple[list[Mapping[str, Any]], bool]:
    """Page `page` (1-based) of PAGE entries of `entries` (read up to one beyond it), and whether more follow."""
    start = (page - 1) * PAGE
    return list(entries[start:start + PAGE]), len(entries) > start + PAGE


def add_publisher(app: FastAPI, console: Console, pages: Pages) -> None:
    @app.get("/publisher")
    def publisher(request: Request) -> Response:
        identity = caller(request)
        streams = [{**s, "versions": _versions(console, str(s["id"]))}
                   for s in own_streams(console.catalogue(), identity.body)]
        return pages.render(request, "publisher.html", "Publisher", current="/publisher", streams=streams)

    @app.get("/publisher/{stream}")
    def stream_quarantine(stream: str, request: Request, page: int = 1) -> Response:
        identity = caller(request)
        owned = {str(s["id"]): s for s in own_streams(console.catalogue(), identity.body)}
        if stream not in owned:
            raise HTTPException(403, f"{identity.body} publishes no stream called {stream}; a publisher sees the "
                                     "quarantine of its own streams only")
        if page < 1:
            raise HTTPException(400, "the page number starts at 1")
        if console.quarantine is None:
            raise HTTPException(503, "the quarantine cannot be read by this console")
        try:
            entries = console.quarantine(stream, page * PAGE + 1)
        except AccordError:
            raise HTTPException(503, "the quarantine cannot be read just now; try again in a minute") from None
        shown, more = quarantine_page(entries, page)
        return pages.render(request, "publisher_stream.html", f"Quarantined rows of {stream}",
                            current="/publisher", stream=owned[stream], entries=shown, page=page, more=more,
                            versions=_versions(console, stream))


def _versions(console: Console, stream: str) -> list[Mapping[str, Any]] | None:
    """The stream's schema versions, newest first; None when the registry cannot be asked."""
    if console.schema_versions is None:
        return None
    try:
        return list(console.schema_versions(stream))
    except AccordError:
        return None
