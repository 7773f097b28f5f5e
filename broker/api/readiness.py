"""`GET /ready` on any of Accord's apps: 200 when every probe passes, else 503 naming what is not ready and why.
Open like `/health` (broker/api/auth.py: LIVENESS), and it tells no secret: reasons name services and addresses."""

from __future__ import annotations

from collections.abc import Mapping

from fastapi import FastAPI
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import JSONResponse

from broker.services.readiness import Probe, assess


def add_readiness(app: FastAPI, probes: Mapping[str, Probe]) -> FastAPI:
    @app.get("/ready", include_in_schema=False)
    async def ready() -> JSONResponse:
        readiness = await run_in_threadpool(assess, probes)
        return JSONResponse(readiness.as_json(), status_code=200 if readiness.ready else 503)
    return app
