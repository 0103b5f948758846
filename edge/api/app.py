"""The FastAPI application factory: it receives a Station, so tests build it with real parts."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import Depends, FastAPI
from fastapi.responses import Response
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from edge.access import QMS_READ
from edge.access import install as install_access
from edge.api import audit, line, operations, pull, verdicts, workbench
from edge.api.batch_figures import build_router as build_figures_router
from edge.api.errors import install_error_handlers
from edge.api.limits import BodyLimit, RateLimit
from edge.api.request_log import RequestObserver
from edge.api.upstream import build_router as build_upstream_router
from edge.page import install as install_page
from edge.station import Station

log = logging.getLogger("edge.api")


def create_app(station: Station, stop_station_on_shutdown: bool = False) -> FastAPI:
    """Build the app around a started station; optionally stop the station when the server shuts down
    (uvicorn re-raises SIGTERM after its graceful shutdown, so this is the last code that runs)."""

    @asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        try:
            yield
        finally:
            if stop_station_on_shutdown:
                station.stop()
                log.info("station %s stopped", station.id)

    access = station.access
    if access is None:
        raise RuntimeError("create_app needs a started station (station.start() sets up its access control)")
    app = FastAPI(title="edge-inspect", version="0.1.0", lifespan=lifespan, docs_url=None, redoc_url=None,
                  description="Edge inspection appliance: judge images, read verdicts, run batches. Every route "
                              "declares the scope it needs; send `Authorization: Bearer <token>` "
                              "(`edge-inspect tokens create`) or log in for a session (POST /api/v1/session).")
    install_error_handlers(app)
    app.include_router(pull.build_router(station, access))  # before verdicts: /verdicts/export is no id
    app.include_router(verdicts.build_router(station, access))
    app.include_router(operations.build_router(station, access))
    app.include_router(line.build_router(station, access))
    app.include_router(audit.build_router(station, access))
    app.include_router(build_figures_router(station, access))
    app.include_router(build_upstream_router(station, access))
    app.include_router(workbench.build_router(station, access))
    install_page(app, station, access)  # the station page at /, its live events, offline /docs

    @app.get("/metrics", include_in_schema=False, dependencies=[Depends(access.requires(QMS_READ))])
    async def metrics() -> Response:
        station.metrics.sample(station.store, station.models, station.line,
                               station.inspection.archive if station.inspection else None)
        return Response(generate_latest(station.metrics.registry), media_type=CONTENT_TYPE_LATEST)

    install_access(app, access)  # Host and cross-site guard, session routes, scopes in OpenAPI
    api = station.config.api
    app.add_middleware(BodyLimit, max_bytes=api.max_request_bytes, metrics=station.metrics)
    app.add_middleware(RateLimit, per_s=api.rate_limit_per_s, burst=api.rate_limit_burst, metrics=station.metrics)
    app.add_middleware(RequestObserver, metrics=station.metrics)  # outermost: refusals are counted and logged
    return app
