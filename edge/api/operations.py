"""Operations endpoints: batches, alarms, models, health."""

from __future__ import annotations

import asyncio
import time
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Query
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import JSONResponse

from edge.access import OPERATOR, QMS_READ, AccessControl, Identity
from edge.api.errors import ApiError
from edge.api.schemas import ERROR_RESPONSES, AlarmRecord, BatchOpenRequest, BatchRecord, Health
from edge.station import Station
from edge.store import NotFoundError, VerdictStore


def build_router(station: Station, access: AccessControl) -> APIRouter:
    router = APIRouter(prefix="/api/v1", responses=ERROR_RESPONSES)
    reader = Depends(access.requires(QMS_READ))
    operator = access.requires(OPERATOR)

    def store() -> VerdictStore:
        if station.store is None:
            raise ApiError(503, "not_ready", "the station is not started")
        return station.store

    @router.get("/health", response_model=Health, tags=["operations"],
                responses={503: {"model": Health, "description": "Not ready: a check failed."}},
                summary="Ready only when models are loaded and the store writable (no credential needed)")
    async def health() -> JSONResponse:
        ready, checks = station.ready()
        body = Health(status="ready" if ready else "not_ready", station=station.id,
                      uptime_s=round(time.time() - station.started_at, 1) if station.started_at else 0.0,
                      checks=checks)
        return JSONResponse(body.model_dump(), status_code=200 if ready else 503)

    @router.get("/batches/{batch_id}", tags=["batches"], response_model=BatchRecord, dependencies=[reader],
                summary="One batch")
    async def get_batch(batch_id: int) -> BatchRecord:
        batch = await run_in_threadpool(store().batch, batch_id)
        if batch is None:
            raise NotFoundError(f"batch {batch_id} does not exist")
        return BatchRecord.model_validate(batch)

    @router.post("/batches", tags=["batches"], status_code=201, response_model=BatchRecord,
                 summary="Start a batch on this station",
                 description="Refused (409) while the station has an open batch: close it first. Parts judged "
                             "while it is open belong to it. Audited under the logged-in identity.")
    async def open_batch(body: BatchOpenRequest, identity: Identity = Depends(operator)) -> BatchRecord:
        future = store().open_batch(body.lot, station.id, identity.actor, body.product, body.recipe, body.note)
        return BatchRecord.model_validate(await asyncio.wrap_future(future))

    @router.post("/batches/{batch_id}/close", tags=["batches"], response_model=BatchRecord, summary="End a batch")
    async def close_batch(batch_id: int, identity: Identity = Depends(operator)) -> BatchRecord:
        return BatchRecord.model_validate(await asyncio.wrap_future(store().close_batch(batch_id, identity.actor)))

    @router.get("/alarms", tags=["alarms"], response_model=list[AlarmRecord], dependencies=[reader],
                summary="Alarms, newest first")
    async def list_alarms(active_only: bool = False,
                          limit: Annotated[int, Query(ge=1, le=1000)] = 100) -> list[AlarmRecord]:
        rows = await run_in_threadpool(store().alarms, active_only, limit)
        return [AlarmRecord.model_validate(row) for row in rows]

    @router.post("/alarms/{alarm_id}/ack", tags=["alarms"], response_model=AlarmRecord,
                 summary="Acknowledge an alarm")
    async def acknowledge(alarm_id: int, identity: Identity = Depends(operator)) -> AlarmRecord:
        alarm = await asyncio.wrap_future(store().acknowledge_alarm(alarm_id, identity.actor))
        return AlarmRecord.model_validate(alarm)

    @router.get("/models", tags=["models"], dependencies=[reader], summary="Loaded models and their manifests")
    async def list_models() -> list[dict[str, Any]]:
        loaded = station.models.loaded() if station.models else {}
        return [
            {"name": name, "version": inspector.version, "kind": inspector.model.manifest.kind,
             "threshold": inspector.threshold, "labels": inspector.model.manifest.labels,
             "metrics": inspector.model.manifest.metrics, "load_ms": round(inspector.model.load_ms, 1)}
            for name, inspector in sorted(loaded.items())
        ]

    return router
