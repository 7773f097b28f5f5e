"""Accord's HTTP API: publish records to a stream and ask why rows were quarantined; a subscriber pulls its own
deliveries, or follows them live (broker/api/deliveries.py).

Every call but `GET /health` is authenticated and authorised (broker/api/auth.py): a publisher publishes to and
reads the quarantine of its own streams only; a subscriber reads only the deliveries made to its body and role.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, Response

from broker.adapters.metrics import PROMETHEUS_TEXT, metrics_text
from broker.api.auth import Guard, guarded
from broker.api.bodies import read_limited
from broker.api.deliveries import LiveOptions, add_delivery_routes
from broker.api.receipts import add_receipt_routes
from broker.errors import AccordError, NotFoundError
from broker.services.deliveries import Deliveries
from broker.services.ingest import Ingest
from broker.services.receipts import DeliveryReceipts

QuarantineReader = Callable[[str, int], list[dict[str, Any]]]


class BadRequest(AccordError):
    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status


async def _json_body(request: Request, limit: int) -> Any:
    raw = await read_limited(request, limit, lambda message: BadRequest(413, message))
    try:
        # NaN and Infinity are not JSON; taken in, they would make the quarantine endpoint unable to answer.
        return json.loads(raw, parse_constant=_not_json)
    except ValueError as exc:   # also a JSONDecodeError, a UnicodeDecodeError and Python's int-size limit
        raise BadRequest(422, f"request body is not JSON: {exc}") from exc


def _not_json(constant: str) -> Any:
    raise ValueError(f"{constant} is not a JSON value")


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

    @app.exception_handler(BadRequest)
    async def bad_request(_: Request, exc: BadRequest) -> JSONResponse:
        return JSONResponse({"error": str(exc)}, status_code=exc.status)

    @app.get("/health")
    def health() -> dict[str, str]:
        return {"status": "ok"}

    @app.get("/metrics", response_class=Response)
    def metrics() -> Response:
        return Response(metrics_text(), media_type=PROMETHEUS_TEXT)

    @app.post("/streams/{stream}/records")
    async def publish(stream: str, request: Request) -> dict[str, Any]:
        """Publish records (JSON, dates as ISO strings); each is accepted or quarantined with reasons."""
        ingest.schema(stream)
        body = await _json_body(request, max_body_bytes)
        records = body.get("records") if isinstance(body, dict) else None
        if not isinstance(records, list):
            raise BadRequest(422, 'the body must be {"records": [ ... ]}')
        outcomes = ingest.publish(stream, records)
        return {
            "accepted": sum(o.status == "accepted" for o in outcomes),
            "quarantined": sum(o.status == "quarantined" for o in outcomes),
            "outcomes": [o.as_json() for o in outcomes],
        }

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
