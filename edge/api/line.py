"""Line endpoints: status, recipe selection, stop and resume."""

from __future__ import annotations

from fastapi import APIRouter
from fastapi.concurrency import run_in_threadpool
from pydantic import BaseModel, ConfigDict, Field

from edge.api.errors import ApiError
from edge.line.pipeline import LinePipeline
from edge.station import Station


class RecipeRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")
    number: int = Field(ge=1, le=65535)
    operator: str = Field(min_length=1, max_length=64)


class StopRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")
    operator: str = Field(min_length=1, max_length=64)
    reason: str | None = Field(None, max_length=500)


def build_router(station: Station) -> APIRouter:
    router = APIRouter(prefix="/api/v1/line", tags=["line"])

    def line() -> LinePipeline:
        if station.line is None:
            raise ApiError(404, "no_line", "this station has no line configured (no 'line' section in its config)")
        return station.line

    @router.get("", summary="Line state: recipe, camera, queues, counters, bridge, latency")
    async def status() -> dict[str, object]:
        return await run_in_threadpool(line().status)

    @router.get("/recipes", summary="The recipes this station knows")
    async def recipes() -> list[dict[str, object]]:
        return [r.model_dump(mode="json") for r in station.config.recipes]

    @router.post("/recipe", summary="Select the recipe for the next part")
    async def select_recipe(body: RecipeRequest) -> dict[str, object]:
        try:
            recipe = line().select_recipe(body.number, body.operator)
        except ValueError as exc:
            raise ApiError(404, "unknown_recipe", str(exc)) from exc
        return {"number": recipe.number, "name": recipe.name}

    @router.post("/stop", summary="Operator stops the line (stack light red, StopLine to the PLC)")
    async def stop_line(body: StopRequest) -> dict[str, object]:
        line().set_line_stop(True, body.operator, body.reason)
        return {"line_stopped": True}

    @router.post("/resume", summary="Operator releases the line stop")
    async def resume_line(body: StopRequest) -> dict[str, object]:
        line().set_line_stop(False, body.operator, body.reason)
        return {"line_stopped": False}

    return router
