"""Maintenance workbench endpoints: samples, retraining jobs, compare, threshold, promote and roll back,
camera set-up. Every change needs the maintenance scope and is audited under the logged-in identity."""

from __future__ import annotations

import asyncio
from dataclasses import asdict
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Query
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import Response
from pydantic import BaseModel, ConfigDict, Field

from edge.access import MAINTENANCE, QMS_READ, AccessControl, Identity
from edge.api.errors import ApiError
from edge.api.schemas import ERROR_RESPONSES
from edge.station import Station
from edge.store import VerdictStore
from edge.store.store import MAX_ID
from edge.workbench import Workbench
from edge.workbench.compare import rates_at
from edge.workbench.jobs import Mode, TrainingJob
from edge.workbench.samples import LABEL_PATTERN, Sample, SampleState, list_samples, sample_counts
from models.manifest import MODEL_NAME_PATTERN

Id = Annotated[int, Field(ge=1, le=MAX_ID)]


class _Body(BaseModel):
    model_config = ConfigDict(extra="forbid")


class SampleRecord(BaseModel):
    id: int
    verdict_id: int
    origin: str = Field(description="override (a person's decision) or sampler (scored near the threshold)")
    label: str | None = Field(description="'good', a defect label, or null: not labelled yet")
    excluded: bool
    state: SampleState
    score: float | None
    threshold: float | None
    model_name: str | None
    model_version: int | None
    has_image: bool
    image_url: str | None
    created_at: str
    updated_at: str
    updated_by: str


class SamplePage(BaseModel):
    samples: list[SampleRecord]
    next_before: int | None = Field(description="Pass as `before` for the next (older) page; null: no more.")
    counts: dict[str, Any] = Field(description="Totals by state, and usable samples per label.")


class SampleChange(_Body):
    label: str | None = Field(None, pattern=LABEL_PATTERN, description="'good' or a defect label")
    excluded: bool | None = Field(None, description="true keeps the sample out of training and comparison")
    reason: str | None = Field(None, max_length=500)


class JobRequest(_Body):
    model: str | None = Field(None, pattern=MODEL_NAME_PATTERN, description="Default: the station's vision model.")
    mode: Mode = Field("good-only", description="good-only: an anomaly model from the good samples; labelled: a "
                                                "classifier over good and the labelled defect classes.")


class JobRecord(BaseModel):
    id: int
    model_name: str
    mode: str
    state: str = Field(description="queued, running, succeeded, failed, cancelled or interrupted")
    fraction: float
    stage: str | None
    eta_s: float | None = Field(description="Estimated seconds left while running.")
    requested_by: str
    created_at: str
    started_at: str | None
    finished_at: str | None
    trained_on: dict[str, int] = Field(description="Samples trained on, per label.")
    held_out: dict[str, int] = Field(description="Samples held back to compare on, per label.")
    candidate_version: int | None
    base_version: int | None
    error: str | None


class VersionRequest(_Body):
    version: Id


class ThresholdRequest(_Body):
    version: Id
    threshold: float = Field(ge=-1e6, le=1e6, allow_inf_nan=False)
    job_id: Id | None = Field(None, description="The job whose held-back samples' rates to record with it.")


class CameraRequest(_Body):
    exposure_us: float | None = Field(None, gt=0, le=10_000_000, allow_inf_nan=False)
    gain_db: float | None = Field(None, ge=0, le=48, allow_inf_nan=False)


def _sample(sample: Sample) -> SampleRecord:
    values = asdict(sample)
    image_ref = values.pop("image_ref")
    return SampleRecord(**values, state=sample.state, has_image=image_ref is not None,
                        image_url=f"/api/v1/verdicts/{sample.verdict_id}/image" if image_ref else None)


def _job(job: TrainingJob) -> JobRecord:
    values = asdict(job)
    values["trained_on"] = {label: len(ids) for label, ids in job.trained_on.items()}
    values["held_out"] = {label: len(ids) for label, ids in job.held_out.items()}
    return JobRecord(**values)


def build_router(station: Station, access: AccessControl) -> APIRouter:
    router = APIRouter(prefix="/api/v1", responses=ERROR_RESPONSES)
    reader = Depends(access.requires(QMS_READ))
    maintenance = access.requires(MAINTENANCE)
    maintenance_read = Depends(maintenance)

    def workbench() -> Workbench:
        if station.workbench is None:
            raise ApiError(503, "not_ready", "the station is not started")
        return station.workbench

    def store() -> VerdictStore:
        return workbench().store

    # -- samples ----------------------------------------------------------------------------------
    @router.get("/samples", tags=["workbench"], response_model=SamplePage, dependencies=[reader],
                summary="Samples, newest first, by label and state")
    async def samples(label: Annotated[str | None, Query(pattern=LABEL_PATTERN)] = None,
                      state: SampleState | None = None, before: Annotated[int | None, Query(ge=1, le=MAX_ID)] = None,
                      limit: Annotated[int, Query(ge=1, le=500)] = 50) -> SamplePage:
        def read() -> SamplePage:
            conn = store().reader()
            rows = list_samples(conn, label, state, before, limit)
            return SamplePage(samples=[_sample(s) for s in rows],
                              next_before=rows[-1].id if len(rows) == limit else None, counts=sample_counts(conn))

        return await run_in_threadpool(read)

    @router.post("/samples/{sample_id}", tags=["workbench"], response_model=SampleRecord,
                 summary="Label, relabel, exclude or include a sample",
                 description="Audited with the label and state before and after.")
    async def change_sample(sample_id: int, body: SampleChange,
                            identity: Identity = Depends(maintenance)) -> SampleRecord:
        changed = await run_in_threadpool(workbench().change_sample, sample_id, identity.actor, body.label,
                                          body.excluded, body.reason)
        return _sample(changed)

    # -- retraining -------------------------------------------------------------------------------
    @router.get("/training-jobs", tags=["workbench"], response_model=list[JobRecord], dependencies=[reader],
                summary="Retraining jobs, newest first")
    async def jobs(limit: Annotated[int, Query(ge=1, le=100)] = 20) -> list[JobRecord]:
        return [_job(job) for job in await run_in_threadpool(workbench().jobs.recent, limit)]

    @router.get("/training-jobs/{job_id}", tags=["workbench"], response_model=JobRecord, dependencies=[reader],
                summary="One retraining job: state, progress and time left")
    async def job(job_id: int) -> JobRecord:
        return _job(await run_in_threadpool(workbench().jobs.get, job_id))

    @router.post("/training-jobs", tags=["workbench"], response_model=JobRecord, status_code=202,
                 summary="Retrain from the samples (one job at a time)",
                 description="Trains in a separate low-priority process; the candidate is registered, not "
                             "promoted. 422 with the counts when there are too few usable samples; 409 while a "
                             "job runs.")
    async def start_job(body: JobRequest, identity: Identity = Depends(maintenance)) -> JobRecord:
        name = body.model or station.config.models.vision
        return _job(await run_in_threadpool(workbench().jobs.start, name, body.mode, identity.actor))

    @router.post("/training-jobs/{job_id}/cancel", tags=["workbench"], response_model=JobRecord,
                 summary="Cancel a running job (nothing is registered)")
    async def cancel_job(job_id: int, identity: Identity = Depends(maintenance)) -> JobRecord:
        return _job(await run_in_threadpool(workbench().jobs.cancel, job_id, identity.actor))

    @router.get("/training-jobs/{job_id}/compare", tags=["workbench"], dependencies=[maintenance_read],
                summary="The job's candidate against the running model on the held-back samples",
                description="Once the candidate is promoted, against the version it replaced "
                            "(`running_version`; `candidate_running` true). "
                            "False rejects and misses per defect type, AUROC, score histograms with each "
                            "threshold, each version's threshold curve, and the parts they disagree on (verdict "
                            "ids: their images at /api/v1/verdicts/{id}/image).")
    async def compare(job_id: int) -> dict[str, Any]:
        return await run_in_threadpool(workbench().compare, job_id)

    # -- models -----------------------------------------------------------------------------------
    @router.get("/models/{name}/versions", tags=["workbench"], dependencies=[reader],
                summary="A model's versions, the active one and the one the station runs")
    async def versions(name: str) -> dict[str, Any]:
        return await run_in_threadpool(workbench().models.state, name)

    @router.post("/models/{name}/promote", tags=["workbench"], summary="Make a version active (swapped in at once)")
    async def promote(name: str, body: VersionRequest, identity: Identity = Depends(maintenance)) -> dict[str, Any]:
        return await run_in_threadpool(workbench().models.promote, name, body.version, identity.actor)

    @router.post("/models/{name}/rollback", tags=["workbench"], summary="Return to the previously active version")
    async def rollback(name: str, identity: Identity = Depends(maintenance)) -> dict[str, Any]:
        return await run_in_threadpool(workbench().models.rollback, name, identity.actor)

    @router.post("/models/{name}/threshold", tags=["workbench"], summary="Set a version's threshold",
                 description="Registers a new version with the same model and this threshold, as `edge-inspect "
                             "models calibrate` does; it becomes active when the version given was.")
    async def threshold(name: str, body: ThresholdRequest,
                        identity: Identity = Depends(maintenance)) -> dict[str, Any]:
        bench = workbench()
        rates = None
        if body.job_id is not None:
            compared = await run_in_threadpool(bench.compare, body.job_id)
            rates = next((rates_at(v["curve"], body.threshold) for v in compared["versions"]
                          if v["version"] == body.version), None)
        return await run_in_threadpool(bench.models.set_threshold, name, body.version, body.threshold,
                                       identity.actor, rates)

    # -- camera -----------------------------------------------------------------------------------
    @router.get("/camera", tags=["workbench"], dependencies=[maintenance_read],
                summary="The line camera: whether it can be set up, its settings, the last frame's checks")
    async def camera() -> dict[str, Any]:
        return workbench().camera.status()

    @router.get("/camera/frame", tags=["workbench"], dependencies=[maintenance_read], response_class=Response,
                summary="A new preview frame (JPEG) from the stopped line's camera",
                responses={200: {"content": {"image/jpeg": {}}, "description": "The frame."}})
    async def camera_frame() -> Response:
        data = await run_in_threadpool(workbench().camera.frame)
        return Response(data, media_type="image/jpeg", headers={"Cache-Control": "no-store"})

    @router.post("/camera/settings", tags=["workbench"], summary="Set exposure and gain (line stopped)")
    async def camera_settings(body: CameraRequest, identity: Identity = Depends(maintenance)) -> dict[str, Any]:
        bench = workbench()
        before = await run_in_threadpool(bench.camera.apply, body.exposure_us, body.gain_db)
        after = {"exposure_us": bench.camera.values.exposure_us, "gain_db": bench.camera.values.gain_db}
        await asyncio.wrap_future(store().audit(identity.actor, "camera_set_up", "camera",
                                                bench.camera.status()["name"], before, after))
        return bench.camera.status()

    return router
