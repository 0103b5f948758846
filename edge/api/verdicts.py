"""Verdict endpoints: judge an image, read verdicts back, override one."""

from __future__ import annotations

import asyncio
import re
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Query, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import FileResponse

from edge.api.errors import ApiError
from edge.api.schemas import ErrorResponse, OverrideRequest, VerdictCreated, VerdictPage, VerdictRecord
from edge.api.upload import AUDIO_TYPES, read_image_upload, read_upload
from edge.audio import AudioError, decode_wav
from edge.inspection import Inspection, InspectionService
from edge.station import Station
from edge.store import PartContext, StoreError, StoreUnavailableError
from models.manifest import ManifestError
from models.registry import UnknownModelError
from vision.images import ImageError

_IDENT = r"^[A-Za-z0-9_.:/#-]{1,64}$"
_ERRORS: dict[int | str, dict[str, Any]] = {code: {"model": ErrorResponse} for code in (400, 404, 413, 415, 422, 503)}


def _text(value: str | None, name: str) -> str | None:
    if value is None or value == "":
        return None
    if not re.match(_IDENT, value):
        raise ApiError(422, "invalid_request", f"'{name}' must be 1-64 characters of letters, digits and ._:/#-")
    return value


class PartQuery:
    """Traceability fields of a judged part, as query parameters (form fields are read too)."""

    def __init__(
        self,
        serial: Annotated[str | None, Query(description="Part serial; generated when absent.")] = None,
        batch: Annotated[str | None, Query(description="Lot code; the open batch of that lot, opened if new.")] = None,
        station: Annotated[str | None, Query(description="Station id; default: this station's.")] = None,
        model: Annotated[str | None, Query(description="Model name; default: the station's model.")] = None,
    ) -> None:
        self.serial, self.batch, self.station, self.model = serial, batch, station, model


def judging_error(exc: Exception) -> ApiError:
    if isinstance(exc, UnknownModelError):
        return ApiError(404, "unknown_model", str(exc))
    if isinstance(exc, StoreUnavailableError):
        return ApiError(503, "store_unavailable", str(exc))
    return ApiError(503, "model_unavailable", str(exc))


async def acknowledge(service: InspectionService, judged: Inspection) -> VerdictCreated:
    """Answer only once the verdict is durable; if it cannot be stored, drop its files and say so."""
    try:
        stored = await asyncio.wrap_future(judged.stored)
    except StoreUnavailableError as exc:
        service.archive.remove(judged.verdict.image_ref)
        service.archive.remove(judged.verdict.heatmap_ref)
        raise ApiError(503, "store_unavailable", f"{exc}; the verdict was not stored") from exc
    if judged.files_written is not None:
        await asyncio.wrap_future(judged.files_written)  # the image can be fetched once answered
    service.observe_stored(judged, "api")
    return VerdictCreated.model_validate(judged.response(stored))


def build_router(station: Station) -> APIRouter:
    router = APIRouter(prefix="/api/v1", tags=["verdicts"])

    def inspection() -> InspectionService:
        if station.inspection is None:
            raise ApiError(503, "not_ready", "the station is not started")
        return station.inspection

    def upload_limit() -> int:
        return int(station.config.api.max_upload_mb * 1024 * 1024)

    def part_context(form: dict[str, str], query: PartQuery) -> PartContext:
        """The part's identity from query parameters, else form fields; the station's own id by default."""
        return PartContext(station=_text(query.station or form.get("station"), "station") or station.id,
                           source="api", serial=_text(query.serial or form.get("serial"), "serial"),
                           lot=_text(query.batch or form.get("batch"), "batch"))

    @router.post("/verdicts/vision", response_model=VerdictCreated, responses=_ERRORS,
                 summary="Judge one image",
                 description="Send the image as multipart field `image`, or as the raw body (JPEG, PNG, BMP, "
                             "TIFF; 8-bit grey or colour). Returns once the verdict is durable.")
    async def judge_vision(request: Request, query: Annotated[PartQuery, Depends()]) -> VerdictCreated:
        service = inspection()
        upload = await read_image_upload(request, upload_limit())
        part = part_context(upload.fields, query)
        model_name = _text(query.model or upload.fields.get("model"), "model")
        try:
            judged = await run_in_threadpool(service.judge_bytes, upload.data, part, model_name)
        except ImageError as exc:
            raise ApiError(415 if exc.reason == "unsupported_format" else 400, exc.reason, str(exc)) from exc
        except (UnknownModelError, ManifestError, StoreUnavailableError) as exc:
            raise judging_error(exc) from exc
        return await acknowledge(service, judged)

    @router.post("/verdicts/acoustic", response_model=VerdictCreated, responses=_ERRORS,
                 summary="Judge one sound recording",
                 description="Send a WAV file as multipart field `audio` or as the raw body. Silence, clipping or "
                             "a wrong sample rate give an INVALID verdict with the reason, never OK or NG.")
    async def judge_acoustic(request: Request, query: Annotated[PartQuery, Depends()]) -> VerdictCreated:
        service = inspection()
        upload = await read_upload(request, upload_limit(), "audio", AUDIO_TYPES, "audio/wav")
        model_name = _text(query.model or upload.fields.get("model"), "model") or station.config.models.acoustic
        if model_name is None:
            raise ApiError(404, "unknown_model", "this station has no acoustic model (models.acoustic) and none "
                                                 "was named")
        part = part_context(upload.fields, query)
        try:
            waveform, rate = await run_in_threadpool(decode_wav, upload.data)
            judged = await run_in_threadpool(service.judge_audio, waveform, rate, part, model_name)
        except AudioError as exc:
            service.metrics.rejected_inputs.labels(exc.reason).inc()
            raise ApiError(400, exc.reason, str(exc)) from exc
        except (UnknownModelError, ManifestError, ImportError, StoreUnavailableError) as exc:
            raise judging_error(exc) from exc
        return await acknowledge(service, judged)

    @router.get("/verdicts/{verdict_id}", response_model=VerdictRecord, responses=_ERRORS,
                summary="One verdict with its part, batch and latest override")
    async def get_verdict(verdict_id: int) -> VerdictRecord:
        record = await run_in_threadpool(inspection().store.verdict, verdict_id)
        if record is None:
            raise ApiError(404, "not_found", f"verdict {verdict_id} does not exist")
        return VerdictRecord.model_validate(record)

    @router.get("/verdicts", response_model=VerdictPage, summary="Verdicts after a cursor, in commit order")
    async def list_verdicts(
        since: Annotated[int, Query(ge=0, description="Cursor: return verdicts with a larger id.")] = 0,
        limit: Annotated[int, Query(ge=1, le=1000)] = 100,
    ) -> VerdictPage:
        rows = await run_in_threadpool(inspection().store.verdicts_since, since, limit + 1)
        items = [VerdictRecord.model_validate(r) for r in rows[:limit]]
        return VerdictPage(items=items, next_cursor=items[-1].id if items else since, has_more=len(rows) > limit)

    @router.get("/verdicts/{verdict_id}/{kind}", responses=_ERRORS, summary="The stored image or heat map",
                response_class=FileResponse)
    async def verdict_file(verdict_id: int, kind: str) -> FileResponse:
        if kind not in ("image", "heatmap"):
            raise ApiError(404, "not_found", "use /image or /heatmap")
        record = await run_in_threadpool(inspection().store.verdict, verdict_id)
        if record is None:
            raise ApiError(404, "not_found", f"verdict {verdict_id} does not exist")
        ref = record["image_ref" if kind == "image" else "heatmap_ref"]
        path = inspection().archive.resolve(ref) if ref else None
        if path is None:
            raise ApiError(404, "not_found", f"verdict {verdict_id} has no stored {kind}")
        return FileResponse(path)

    @router.post("/verdicts/{verdict_id}/override", responses=_ERRORS, summary="Operator confirms or overrides")
    async def override(verdict_id: int, body: OverrideRequest) -> dict[str, object]:
        try:
            future = inspection().store.override(verdict_id, body.decision, body.operator, body.reason, body.label)
            return await asyncio.wrap_future(future)
        except StoreError as exc:
            raise ApiError(404, "not_found", str(exc)) from exc

    return router
