"""The subscriber doors of the API service: `GET /deliveries/{stream}` (a page of the caller's own deliveries as
NDJSON, CSV or JSON) and `GET /deliveries/{stream}/events` (the same records live, as Server-Sent Events).

Body and role come from the verified token only; the use case (services/deliveries.py) derives the topic from them.
Each live stream holds one slot of a fixed pool (503 when all are taken), reads at most `batch` records at a time
and waits for new ones in a thread of its own limiter, so streams can neither starve page requests nor buffer
without bound: a slow client slows its own reads (the next read waits until the last events were sent).
"""

from __future__ import annotations

import csv
import io
import json
import logging
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

import anyio
from fastapi import FastAPI, Query, Request
from fastapi.responses import JSONResponse, Response, StreamingResponse
from starlette.types import Receive, Scope, Send

from broker.api.auth import caller
from broker.domain.cursors import BadCursor
from broker.domain.json_avro import csv_cell, to_json
from broker.errors import DeliveryRefused, ServiceError
from broker.services.deliveries import DEFAULT_LIMIT, MAX_LIMIT, Deliveries, Page

log = logging.getLogger(__name__)

NEXT_CURSOR = "Accord-Next-Cursor"
NDJSON, CSV, JSON = "application/x-ndjson", "text/csv", "application/json"


@dataclass(frozen=True)
class LiveOptions:
    """Per-connection bounds of the live events."""

    max_streams: int = 32          # open event streams per API process; one more is answered 503
    batch: int = 500               # records read (and held) per step of one stream
    heartbeat_s: float = 15.0      # a comment line after this long without a record keeps proxies from closing
    retry_ms: int = 2_000          # how long a browser's EventSource waits before reconnecting


def add_delivery_routes(app: FastAPI, deliveries: Deliveries, live: LiveOptions | None = None) -> None:
    live = live or LiveOptions()
    slots = _Slots(live.max_streams)
    readers = anyio.CapacityLimiter(live.max_streams)  # the threads live streams wait in, apart from page requests

    @app.exception_handler(BadCursor)
    async def bad_cursor(_: Request, exc: BadCursor) -> JSONResponse:
        return JSONResponse({"error": f"bad cursor: {exc}"}, status_code=400)

    @app.exception_handler(DeliveryRefused)
    async def refused(_: Request, exc: DeliveryRefused) -> JSONResponse:
        return JSONResponse({"error": str(exc)}, status_code=403)

    @app.get("/deliveries/{stream}", responses={200: {"content": {NDJSON: {}, CSV: {}, JSON: {}}}})
    def pull(stream: str, request: Request, after: str | None = None,
             limit: int = Query(DEFAULT_LIMIT, ge=1, le=MAX_LIMIT)) -> Response:
        """Your own deliveries of `stream` after the cursor `after` (none: from the oldest kept), as NDJSON
        (default), CSV (`Accept: text/csv`) or JSON (`Accept: application/json`); the next cursor is in the
        `Accord-Next-Cursor` header."""
        identity = caller(request)
        try:
            page = deliveries.page(identity.body, identity.role, stream, after, limit)
            return _rendered(page, _format(request.headers.get("accept", "")), deliveries)
        except ServiceError as exc:
            return _unavailable(exc)

    @app.get("/deliveries/{stream}/events", response_class=StreamingResponse,
             responses={200: {"content": {"text/event-stream": {}}}})
    async def events(stream: str, request: Request, after: str | None = None) -> Response:
        """New deliveries of `stream` as Server-Sent Events (id: a cursor; data: the record as JSON). A reconnect's
        `Last-Event-ID` (or `after`) resumes just after that event; with neither, only records from now on."""
        identity = caller(request)
        start = request.headers.get("last-event-id") or after
        if not slots.take():
            return JSONResponse({"error": f"all {live.max_streams} event streams are in use; retry later"},
                                status_code=503, headers={"Retry-After": "5"})

        def step(cursor: str | None, wait_s: float) -> Page:
            return deliveries.page(identity.body, identity.role, stream, cursor, live.batch, wait_s)

        try:
            # The first read answers a bad cursor (400) or an ended right (403) before the stream starts.
            first = await anyio.to_thread.run_sync(
                step if start is not None else lambda *_: deliveries.from_now(identity.body, identity.role, stream),
                start, 0.0, limiter=readers)
        except ServiceError as exc:
            slots.give_back()
            return _unavailable(exc)
        except BaseException:
            slots.give_back()
            raise
        return _EventStream(_events(first, step, deliveries, live, readers), slots)


class _Slots:
    """Open event streams, counted from the request until its generator ends (or the client goes)."""

    def __init__(self, total: int) -> None:
        self.total, self.taken = total, 0

    def take(self) -> bool:
        # Only the event loop's thread calls these, so the check and the count cannot interleave.
        if self.taken >= self.total:
            return False
        self.taken += 1
        return True

    def give_back(self) -> None:
        self.taken -= 1


class _EventStream(StreamingResponse):
    """An event stream that gives its slot back when the response ends, however it ends (a client gone included:
    the server cancels the response, and an async generator's own `finally` would wait for the collector)."""

    def __init__(self, events: AsyncIterator[str], slots: _Slots) -> None:
        super().__init__(events, media_type="text/event-stream",
                         headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"})
        self._slots = slots

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        try:
            await super().__call__(scope, receive, send)
        finally:
            self._slots.give_back()


async def _events(page: Page, step: Any, deliveries: Deliveries, live: LiveOptions,
                  readers: anyio.CapacityLimiter) -> AsyncIterator[str]:
    yield f"retry: {live.retry_ms}\n\n"
    while True:
        for record, cursor in deliveries.with_cursors(page):
            yield f"id: {cursor}\ndata: {json.dumps(to_json(record.value), separators=(',', ':'))}\n\n"
        if not page.records:
            yield ": keepalive\n\n"
        try:
            page = await anyio.to_thread.run_sync(step, page.next_cursor, live.heartbeat_s, limiter=readers)
        except DeliveryRefused as exc:
            yield f"event: ended\ndata: {json.dumps({'error': str(exc)})}\n\n"
            return
        except ServiceError as exc:
            # Ending the stream makes EventSource reconnect with the last id after `retry`: nothing is lost.
            log.error("an event stream ends: %s", exc)
            return


def _unavailable(exc: ServiceError) -> JSONResponse:
    # Kafka, the registry or the control topic out of reach: the caller should retry, not report a bug.
    log.error("deliveries unavailable: %s", exc)
    return JSONResponse({"error": "deliveries cannot be read now; retry later"}, status_code=503,
                        headers={"Retry-After": "5"})


def _format(accept: str) -> str:
    """The first of NDJSON, CSV and JSON the Accept header names (q=0 excluded); NDJSON for anything else."""
    for part in accept.split(","):
        kind, *params = (p.strip().lower() for p in part.split(";"))
        if kind in (CSV, JSON, NDJSON) and "q=0" not in params:
            return kind
    return NDJSON


def _rendered(page: Page, kind: str, deliveries: Deliveries) -> Response:
    headers = {NEXT_CURSOR: page.next_cursor}
    records = [to_json(r.value) for r in page.records]
    if kind == JSON:
        return JSONResponse({"records": records, "next_cursor": page.next_cursor}, headers=headers)
    if kind == CSV:
        return Response(_csv(records, page.fields(deliveries.schema_fields(page.topic))),
                        media_type="text/csv; charset=utf-8", headers=headers)
    text = "".join(json.dumps(r, separators=(",", ":")) + "\n" for r in records)
    return Response(text, media_type=NDJSON, headers=headers)


def csv_of(page: Page, deliveries: Deliveries) -> str:
    """A page as the pull API's CSV (the console's download too): the projected schema's columns, formula-safe."""
    return _csv([to_json(r.value) for r in page.records], page.fields(deliveries.schema_fields(page.topic)))


def _csv(records: list[dict[str, Any]], fields: list[str]) -> str:
    out = io.StringIO()
    writer = csv.DictWriter(out, fieldnames=fields, extrasaction="ignore", lineterminator="\r\n")
    writer.writeheader()
    for record in records:
        writer.writerow({k: csv_cell(v) for k, v in record.items()})
    return out.getvalue()
