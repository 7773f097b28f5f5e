"""Audit: a search over the audit trail (by kind, by a body named anywhere in an entry, by time range) and an export
of the whole chain as JSON lines, exactly as the chain topic holds them, so `accord audit verify FILE` checks the
download. OPA lets IG leads, the governance board, the arbiter, auditors and Accord's operator use them."""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable, Iterable, Iterator, Mapping
from typing import Any

from fastapi import FastAPI, HTTPException, Request
from fastapi.responses import Response

from broker.api.console.app import Console, Pages
from broker.domain.audit import Entry, from_json_line
from broker.errors import AccordError

SHOWN = 100


def names(value: Any, body: str) -> bool:
    """Whether `body` is a string anywhere in `value` (an entry's body: actor, subscriber, publisher, ...)."""
    if isinstance(value, str):
        return value == body
    if isinstance(value, Mapping):
        return any(names(v, body) for v in value.values())
    if isinstance(value, list | tuple):
        return any(names(v, body) for v in value)
    return False


def moment(text: str, field: str) -> dt.datetime | None:
    """A form's date or date-time (UTC when no offset is given); None when blank; 400 when unreadable."""
    if not text.strip():
        return None
    try:
        parsed = dt.datetime.fromisoformat(text.strip())
    except ValueError:
        raise HTTPException(400, f"{field} must be a date (2026-12-07) or a date and time (2026-12-07T09:30), "
                                 f"not {text!r}") from None
    return parsed if parsed.tzinfo is not None else parsed.replace(tzinfo=dt.UTC)


def matching(entries: Iterable[Entry], kind: str, body: str, since: dt.datetime | None,
             until: dt.datetime | None) -> Iterator[Entry]:
    for entry in entries:
        if kind and entry.kind != kind:
            continue
        if body and not names(entry.body, body):
            continue
        if since is not None or until is not None:
            try:
                at = dt.datetime.fromisoformat(entry.at)
            except ValueError:
                continue
            at = at if at.tzinfo is not None else at.replace(tzinfo=dt.UTC)
            if (since is not None and at < since) or (until is not None and at > until):
                continue
        yield entry


def add_audit_trail(app: FastAPI, console: Console, pages: Pages) -> None:
    def lines() -> Callable[[], Iterable[str]]:
        if console.audit_lines is None:
            raise HTTPException(503, "this console cannot read the audit trail")
        return console.audit_lines

    @app.get("/audit/search")
    def search(request: Request, kind: str = "", body: str = "", since: str = "", until: str = "") -> Response:
        start, end = moment(since, "From"), moment(until, "To")
        try:
            entries = [from_json_line(line, n) for n, line in enumerate(lines()(), start=1) if line.strip()]
        except AccordError:
            raise HTTPException(503, "the audit trail cannot be read just now; try again in a minute") from None
        kinds = sorted({e.kind for e in entries})
        found = list(matching(entries, kind.strip(), body.strip(), start, end))
        return pages.render(request, "audit_search.html", "Search the audit trail", current="/audit",
                            kinds=kinds, query={"kind": kind, "body": body, "since": since, "until": until},
                            total=len(found), shown=[_row(e) for e in reversed(found[-SHOWN:])], limit=SHOWN)

    @app.get("/audit/export.jsonl")
    def export() -> Response:
        """The chain as it stands, read whole before answering (a read failing half-way is a 503, never a short
        file that looks like a trail)."""
        try:
            text = "".join(f"{line}\n" for line in lines()() if line.strip())
        except AccordError:
            raise HTTPException(503, "the audit trail cannot be read just now; try again in a minute") from None
        return Response(text, media_type="application/jsonl; charset=utf-8",
                        headers={"Content-Disposition": 'attachment; filename="accord-audit.jsonl"'})


def _row(entry: Entry) -> dict[str, Any]:
    summary = ", ".join(f"{k}: {v}" for k, v in sorted(entry.body.items())
                        if isinstance(v, str | int | float | bool))[:300]
    return {"seq": entry.seq, "kind": entry.kind, "at": entry.at, "summary": summary}
