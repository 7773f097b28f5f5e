"""The gate worker's small HTTP face: health (is the loop alive and planned) and Prometheus metrics.

`/health` is open (supervisors probe it); `/metrics` needs a token OPA lets read it (broker/api/auth.py).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from fastapi import FastAPI
from fastapi.responses import JSONResponse, Response

from broker.adapters.metrics import PROMETHEUS_TEXT, metrics_text
from broker.api.auth import Guard, guarded


def create_gate_app(health: Callable[[], tuple[bool, dict[str, Any]]], *, guard: Guard) -> FastAPI:
    """The app; `guard` checks callers (token and OPA)."""
    app = FastAPI(title="Accord gate worker", version="1", **guarded(guard, "gate"))

    @app.get("/metrics", response_class=Response)
    def metrics() -> Response:
        return Response(metrics_text(), media_type=PROMETHEUS_TEXT)

    @app.get("/health")
    def report() -> JSONResponse:
        ok, detail = health()
        return JSONResponse({"status": "ok" if ok else "not ready", **detail}, status_code=200 if ok else 503)

    return app
