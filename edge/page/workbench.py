"""The maintenance workbench view at ``/workbench``: the shell only; samples, jobs, comparisons, models and
the camera come from the API (edge.api.workbench), whose routes need the maintenance scope."""

from __future__ import annotations

from fastapi import APIRouter, Request
from fastapi.responses import HTMLResponse

from edge.page.views import render
from edge.station import Station


def build_router(station: Station) -> APIRouter:
    router = APIRouter(include_in_schema=False)

    @router.get("/workbench", response_class=HTMLResponse)
    async def workbench_view(request: Request) -> HTMLResponse:
        return render(request, "workbench.html", station, view="workbench", model=station.config.models.vision)

    return router
