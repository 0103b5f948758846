"""Operations endpoints: batches, alarms, models, health."""

from __future__ import annotations

import asyncio
import time
from typing import Annotated, Any

from fastapi import APIRouter, Query
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import JSONResponse

from edge.api.errors import ApiError
from edge.api.schemas import BatchOpenRequest, ErrorResponse, Health, OperatorRequest
from edge.station import Station
from edge.store import StoreError, VerdictStore

_ERRORS: dict[int | str, dict[str, Any]] = {code: {"model": ErrorResponse} for code in (404, 409, 422, 503)}


def build_router(station: Station) -> APIRouter:
    router = APIRouter(prefix="/api/v1")

    def store() -> VerdictStore:
        if station.store is None:
            raise ApiError(503, "not_ready", "the station is not started")
        return station.store

    @router.get("/health", response_model=Health, tags=["operations"],
                responses={503: {"model": Health}}, summary="Ready only when models are loaded and the store writable")
    async def health() -> JSONResponse:
        ready, checks = station.ready()
        body = Health(status="ready" if ready else "not_ready", station=station.id,
                      uptime_s=round(time.time() - station.started_at, 1) if station.started_at else 0.0,
                      checks=checks)
        return JSONResponse(body.model_dump(), status_code=200 if ready else 503)

    @router.get("/batches", tags=["batches"], summary="Recent batches, newest first")
    async def list_batches(open_only: bool = False,
                           limit: Annotated[int, Query(ge=1, le=1000)] = 100) -> list[dict[str, Any]]:
        return await run_in_threadpool(store().batches, open_only, limit)

    @router.post("/batches", tags=["batches"], status_code=201, responses=_ERRORS,
                 summary="Start a batch (closes the station's open one)")
    async def open_batch(body: BatchOpenRequest) -> dict[str, Any]:
        future = store().open_batch(body.lot, station.id, body.product, body.recipe, body.operator, body.note)
        return await asyncio.wrap_future(future)

    @router.post("/batches/{batch_id}/close", tags=["batches"], responses=_ERRORS,
                 summary="End a batch")
    async def close_batch(batch_id: int, body: OperatorRequest) -> dict[str, Any]:
        try:
            return await asyncio.wrap_future(store().close_batch(batch_id, body.operator))
        except StoreError as exc:
            status = 404 if "does not exist" in str(exc) else 409
            raise ApiError(status, "not_found" if status == 404 else "conflict", str(exc)) from exc

    @router.get("/alarms", tags=["alarms"], summary="Alarms, newest first")
    async def list_alarms(active_only: bool = False,
                          limit: Annotated[int, Query(ge=1, le=1000)] = 100) -> list[dict[str, Any]]:
        return await run_in_threadpool(store().alarms, active_only, limit)

    @router.post("/alarms/{alarm_id}/ack", tags=["alarms"], responses=_ERRORS,
                 summary="Acknowledge an alarm")
    async def acknowledge(alarm_id: int, body: OperatorRequest) -> dict[str, Any]:
        try:
            return await asyncio.wrap_future(store().acknowledge_alarm(alarm_id, body.operator))
        except StoreError as exc:
            raise ApiError(404, "not_found", str(exc)) from exc

    @router.get("/models", tags=["models"], summary="Loaded models and their manifests")
    async def list_models() -> list[dict[str, Any]]:
        loaded = station.models.loaded() if station.models else {}
        return [
            {"name": name, "version": inspector.version, "kind": inspector.model.manifest.kind,
             "threshold": inspector.threshold, "labels": inspector.model.manifest.labels,
             "metrics": inspector.model.manifest.metrics, "load_ms": round(inspector.model.load_ms, 1)}
            for name, inspector in sorted(loaded.items())
        ]

    return router
