"""Accord's HTTP API: publish records to a stream and ask why rows were quarantined; a subscriber pulls its own
deliveries, or follows them live (broker/api/deliveries.py).

Every call but `GET /health` is authenticated and authorised (broker/api/auth.py): a publisher publishes to and
reads the quarantine of its own streams only; a subscriber reads only the deliveries made to its body and role.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable
from typing import Any

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, Response
from starlette.concurrency import run_in_threadpool

from broker.adapters.metrics import PROMETHEUS_TEXT, metrics_text
from broker.api.auth import Guard, caller, guarded
from broker.api.bodies import CompactJSONResponse, is_json_media_type, json_depth, parse_json, read_limited
from broker.api.deliveries import LiveOptions, add_delivery_routes
from broker.api.receipts import add_receipt_routes
from broker.errors import AccordError, IdempotencyConflict, NotFoundError, RegistryError, ServiceError
from broker.services.deliveries import Deliveries
from broker.services.ingest import Ingest, RequestKey, answer
from broker.services.receipts import DeliveryReceipts

QuarantineReader = Callable[[str, int], list[dict[str, Any]]]


class BadRequest(AccordError):
    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status


MAX_JSON_DEPTH = 32          # a publish body nests 3 deep ({"records": [{...}]}); deeper is refused unparsed
MAX_RECORDS = 10_000         # per publish request
MAX_IDEMPOTENCY_KEY = 255    # characters, printable ASCII
IDEMPOTENCY_KEY = "Idempotency-Key"


async def _json_body(request: Request, limit: int) -> Any:
    if not is_json_media_type(request.headers.get("content-type")):
        raise BadRequest(415, f"the body must be JSON (Content-Type: application/json), not "
                              f"{request.headers['content-type'][:100]!r}")
    raw = await read_limited(request, limit, lambda message: BadRequest(413, message))
    depth = json_depth(raw)
    if depth > MAX_JSON_DEPTH:
        # Parsed, this would exhaust Python's recursion limit (a RecursionError, answered 500).
        raise BadRequest(400, f"the body nests arrays and objects {depth} levels deep; at most {MAX_JSON_DEPTH} "
                              "are allowed")
    try:
        return parse_json(raw)
    except ValueError as exc:   # also a JSONDecodeError, a UnicodeDecodeError and Python's int-size limit
        raise BadRequest(422, f"request body is not JSON: {exc}") from exc


def _request_key(request: Request, stream: str, body: Any) -> RequestKey | None:
    """The request's Idempotency-Key (if any) for its publisher, with a digest of the body as parsed, so that a
    retry serialised with other spacing or key order is still the same request."""
    key = request.headers.get(IDEMPOTENCY_KEY)
    if key is None:
        return None
    if not 0 < len(key) <= MAX_IDEMPOTENCY_KEY or not all(" " <= c <= "~" for c in key):
        raise BadRequest(400, f"{IDEMPOTENCY_KEY} must be 1 to {MAX_IDEMPOTENCY_KEY} printable ASCII characters "
                              "(a UUID is a good choice)")
    canonical = json.dumps(body, sort_keys=True, separators=(",", ":")).encode()
    return RequestKey(key, caller(request).body, hashlib.sha256(canonical).hexdigest())


def create_api_app(ingest: Ingest, read_quarantine: QuarantineReader, max_body_bytes: int = 1_048_576, *,
                   guard: Guard, deliveries: Deliveries | None = None, live: LiveOptions | None = None,
                   receipts: DeliveryReceipts | None = None) -> FastAPI:
    """The app; `guard` checks callers (token and OPA); `deliveries` adds the subscriber routes, `receipts` the
    proof-of-delivery route."""
    app = FastAPI(title="Accord", version="1", description="Emergency data sharing between public bodies.",
                  **guarded(guard, "api"))

    @app.exception_handler(NotFoundError)
    async def not_found(_: Request, exc: NotFoundError) -> JSONResponse:
        return JSONResponse({"error": str(exc)}, status_code=404)

    @app.exception_handler(IdempotencyConflict)
    async def conflict(_: Request, exc: IdempotencyConflict) -> JSONResponse:
        return JSONResponse({"error": str(exc)}, status_code=409)

    @app.exception_handler(BadRequest)
    async def bad_request(_: Request, exc: BadRequest) -> JSONResponse:
        return JSONResponse({"error": str(exc)}, status_code=exc.status)

    @app.exception_handler(ServiceError)
    async def unavailable(_: Request, exc: ServiceError) -> JSONResponse:
        # Kafka or the registry did not answer (a broker restarting): nothing was acknowledged, so the caller may
        # send the same request again (with an Idempotency-Key, safely). The registry refusing outright is not that.
        refused = isinstance(exc, RegistryError) and 400 <= exc.status < 500
        return JSONResponse({"error": str(exc).splitlines()[0]}, status_code=502 if refused else 503,
                            headers={} if refused else {"Retry-After": "5"})

    @app.get("/health")
    def health() -> dict[str, str]:
        return {"status": "ok"}

    @app.get("/metrics", response_class=Response)
    def metrics() -> Response:
        return Response(metrics_text(), media_type=PROMETHEUS_TEXT)

    @app.post("/streams/{stream}/records")
    async def publish(stream: str, request: Request) -> JSONResponse:
        """Publish records (JSON, dates as ISO strings); each is accepted or quarantined with reasons.

        With an `Idempotency-Key` header, a retry of the same request (same key, same body) publishes nothing again
        and gets the first answer (header `Idempotent-Replayed: true`), also from another API instance or after a
        restart; the same key with a different body is refused (409)."""
        ingest.schema(stream)
        body = await _json_body(request, max_body_bytes)
        records = body.get("records") if isinstance(body, dict) else None
        if not isinstance(records, list):
            raise BadRequest(422, 'the body must be {"records": [ ... ]}')
        if len(records) > MAX_RECORDS:
            raise BadRequest(413, f"{len(records)} records in one request; at most {MAX_RECORDS} are allowed")
        once = _request_key(request, stream, body)
        if once is None:
            outcomes = await run_in_threadpool(ingest.publish, stream, records)
            return CompactJSONResponse(answer(outcomes))
        answered, replayed = await run_in_threadpool(ingest.publish_once, stream, records, once)
        return CompactJSONResponse(answered, headers={"Idempotent-Replayed": "true"} if replayed else {})

    @app.get("/streams/{stream}/quarantine")
    def quarantine(stream: str, limit: int = 100) -> dict[str, Any]:
        """Why were my rows not delivered? The quarantined records of a stream, oldest first."""
        ingest.schema(stream)
        return {"stream": stream, "entries": read_quarantine(stream, max(1, min(limit, 10_000)))}

    if deliveries is not None:
        add_delivery_routes(app, deliveries, live)
    if receipts is not None:
        add_receipt_routes(app, receipts)
    return app
