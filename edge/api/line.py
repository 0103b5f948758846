"""Line endpoints: status, recipe selection, stop and resume."""

from __future__ import annotations

from fastapi import APIRouter, Depends
from fastapi.concurrency import run_in_threadpool

from edge.access import OPERATOR, QMS_READ, AccessControl, Identity
from edge.api.errors import ApiError
from edge.api.schemas import ERROR_RESPONSES, LineStopRequest, RecipeRequest
from edge.line.pipeline import LinePipeline
from edge.station import Station
from edge.store import NotFoundError


def build_router(station: Station, access: AccessControl) -> APIRouter:
    router = APIRouter(prefix="/api/v1/line", tags=["line"], responses=ERROR_RESPONSES)
    reader = Depends(access.requires(QMS_READ))
    operator = access.requires(OPERATOR)

    def line() -> LinePipeline:
        if station.line is None:
            raise ApiError(404, "no_line", "this station has no line configured (no 'line' section in its config)")
        return station.line

    @router.get("", dependencies=[reader], summary="Line state: recipe, camera, queues, counters, bridge, latency")
    async def status() -> dict[str, object]:
        return await run_in_threadpool(line().status)

    @router.get("/recipes", dependencies=[reader], summary="The recipes this station knows")
    async def recipes() -> list[dict[str, object]]:
        return [r.model_dump(mode="json") for r in station.config.recipes]

    @router.post("/recipe", summary="Select the recipe for the next part")
    async def select_recipe(body: RecipeRequest, identity: Identity = Depends(operator)) -> dict[str, object]:
        try:
            recipe = line().select_recipe(body.number, identity.actor)
        except ValueError as exc:
            raise NotFoundError(str(exc)) from exc
        return {"number": recipe.number, "name": recipe.name}

    @router.post("/stop", summary="Operator stops the line (stack light red, StopLine to the PLC)")
    async def stop_line(body: LineStopRequest, identity: Identity = Depends(operator)) -> dict[str, object]:
        line().set_line_stop(True, identity.actor, body.reason)
        return {"line_stopped": True}

    @router.post("/resume", summary="Operator releases the line stop")
    async def resume_line(body: LineStopRequest,
                          identity: Identity = Depends(operator)) -> dict[str, object]:
        line().set_line_stop(False, identity.actor, body.reason)
        return {"line_stopped": False}

    return router
