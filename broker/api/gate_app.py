"""The gate worker's small HTTP face: health (is the loop alive and planned) and Prometheus metrics."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from fastapi import FastAPI
from fastapi.responses import JSONResponse

from broker.adapters.metrics import metrics_app


def create_gate_app(health: Callable[[], tuple[bool, dict[str, Any]]]) -> FastAPI:
    app = FastAPI(title="Accord gate worker", version="1")
    app.mount("/metrics", metrics_app())

    @app.get("/health")
    def report() -> JSONResponse:
        ok, detail = health()
        return JSONResponse({"status": "ok" if ok else "not ready", **detail}, status_code=200 if ok else 503)

    return app
