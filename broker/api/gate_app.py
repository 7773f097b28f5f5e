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
from broker.config import Settings


def create_gate_app(health: Callable[[], tuple[bool, dict[str, Any]]], *, guard: Guard | None = None) -> FastAPI:
    """The app; `guard` checks callers (default: the secrets directory's key and ACCORD_OPA_URL's OPA)."""
    guard = guard or Guard.from_settings(Settings())
    app = FastAPI(title="Accord gate worker", version="1", **guarded(guard, "gate"))

    @app.get("/metrics", response_class=Response)
    def metrics() -> Response:
        return Response(metrics_text(), media_type=PROMETHEUS_TEXT)

    @app.get("/health")
    def report() -> JSONResponse:
        ok, detail = health()
        return JSONResponse({"status": "ok" if ok else "not ready", **detail}, status_code=200 if ok else 503)

    return app
