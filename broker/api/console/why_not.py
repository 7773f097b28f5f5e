"""My data: "why was this row not delivered to me?", answered per rule from the records Accord already keeps: the
stream's quarantine entries (a row the ingest API or a gate worker refused, with the rules it broke; a row the gate
refused for the subscriber's own plan, such as a required field missing, names the subscriber). A subscriber is shown
only its own rows: an ingest refusal only when the row's area is one of its subscription's areas, a gate refusal
only when it names the subscriber's body and role."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from typing import Any

from fastapi import FastAPI, HTTPException, Request
from fastapi.responses import Response

from broker.api.auth import caller
from broker.api.console.app import Console, Pages
from broker.api.console.my_data import subscriptions
from broker.errors import AccordError

READ_LIMIT = 100_000
AREA_FIELDS = ("ltla", "utla")


def answers(entries: Iterable[Mapping[str, Any]], body: str, role: str, areas: Iterable[str], specimen: str,
            offset: int | None) -> list[dict[str, Any]]:
    """The refusals of the row asked about (by specimen id or by its offset on the ingest topic) that are the
    subscriber's own, each as where it was refused and the rules it broke."""
    own_areas = set(areas)
    found = []
    for entry in entries:
        source = entry.get("source") or {}
        record = entry.get("record") if isinstance(entry.get("record"), Mapping) else {}
        assert isinstance(record, Mapping)
        asked = (bool(specimen) and record.get("specimen_id") == specimen) or (
            offset is not None and source.get("offset") == offset)
        if not asked:
            continue
        refused_by = entry.get("refused_by") or {}
        if refused_by:
            if refused_by.get("subscriber") != body or refused_by.get("role", role) != role:
                continue
            where = "refused by the gate for your subscription"
        elif record:
            if not own_areas & {str(record.get(f)) for f in AREA_FIELDS}:
                continue       # another area's row: not the subscriber's to see
            where = "quarantined when it was published"
        else:
            continue           # a gate refusal for every subscriber without the row: its area cannot be checked
        found.append({"where": where, "source": dict(source), "reasons": [
            {"rule": str(r.get("rule", "")), "field": str(r.get("field", "")), "message": str(r.get("message", ""))}
            for r in entry.get("reasons") or ()]})
    return found


def add_why_not(app: FastAPI, console: Console, pages: Pages, clock: Callable[[], Any]) -> None:
    @app.get("/my-data/{stream}/why-not")
    def why_not(stream: str, request: Request, specimen: str = "", offset: str = "") -> Response:
        identity = caller(request)
        mine = [s for s in subscriptions(console.policy(), identity.body, identity.role, clock())
                if s["stream"] == stream]
        if not mine:
            raise HTTPException(403, f"{identity.body} as {identity.role} has no subscription to {stream}")
        specimen, offset_text = specimen.strip(), offset.strip()
        if offset_text and not offset_text.isdigit():
            raise HTTPException(400, f"the source offset must be a whole number, not {offset_text!r}")
        asked = bool(specimen or offset_text)
        found: list[dict[str, Any]] = []
        if asked:
            if console.quarantine is None:
                raise HTTPException(503, "the quarantine cannot be read by this console")
            areas = [str(a) for s in mine for a in s["areas"]]
            try:
                entries = console.quarantine(stream, READ_LIMIT)
            except AccordError:
                raise HTTPException(503, "the quarantine cannot be read just now; try again in a minute") from None
            found = answers(entries, identity.body, identity.role, areas, specimen,
                            int(offset_text) if offset_text else None)
        return pages.render(request, "why_not.html", f"Why was a row of {stream} not delivered?",
                            current="/my-data", stream=stream, specimen=specimen, offset=offset_text, asked=asked,
                            found=found, subscription=mine[0])
