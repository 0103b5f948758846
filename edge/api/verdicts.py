"""Verdict endpoints: judge an image or a recording, read verdicts back, confirm or override one."""

from __future__ import annotations

import asyncio
import mimetypes
import re
from typing import Annotated, Literal

from fastapi import APIRouter, Depends, Query, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import FileResponse, Response

from edge.access import AOI_VERDICT, OPERATOR, QMS_READ, AccessControl, Identity
from edge.api.errors import ApiError
from edge.api.schemas import (
    ERROR_RESPONSES,
    OverrideRecord,
    OverrideRequest,
    VerdictCreated,
    VerdictRecord,
)
from edge.api.upload import AUDIO_TYPES, RAW_IMAGE_TYPES, read_image_upload, read_upload, upload_body
from edge.audio import decode_wav
from edge.inspection import Inspection, InspectionService
from edge.station import Station
from edge.store import NotFoundError, PartContext, StoreUnavailableError, Verdict

IDENT_PATTERN = r"^[A-Za-z0-9_.:/#-]{1,64}$"
_IDENT_RULE = "1-64 characters of letters, digits and ._:/#-"
_PART_FIELDS = {
    "serial": "Part serial; generated when absent.",
    "batch": "Lot code. The part joins this station's open batch of that lot; with no such batch the lot is "
             "recorded on this part alone (a judged part never opens or switches a batch).",
    "station": "Station id; default: this station's.",
    "model": "Model name; default: the station's model for this modality.",
}


def _text(value: str | None, name: str) -> str | None:
    if value is None or value == "":
        return None
    if not re.match(IDENT_PATTERN, value):
        raise ApiError(422, "invalid_request", f"'{name}' must be {_IDENT_RULE}")
    return value


class PartQuery:
    """Traceability fields of a judged part, as query parameters (the same multipart form fields are read too)."""

    def __init__(
        self,
        serial: Annotated[str | None, Query(description=_PART_FIELDS["serial"], pattern=IDENT_PATTERN)] = None,
        batch: Annotated[str | None, Query(description=_PART_FIELDS["batch"], pattern=IDENT_PATTERN)] = None,
        station: Annotated[str | None, Query(description=_PART_FIELDS["station"], pattern=IDENT_PATTERN)] = None,
        model: Annotated[str | None, Query(description=_PART_FIELDS["model"], pattern=IDENT_PATTERN)] = None,
    ) -> None:
        self.serial, self.batch, self.station, self.model = serial, batch, station, model


async def acknowledge(service: InspectionService, judged: Inspection) -> VerdictCreated:
    """Answer only once the verdict is durable; if it cannot be stored, drop its files and say so."""
    try:
        stored = await asyncio.wrap_future(judged.stored)
    except StoreUnavailableError as exc:
        service.archive.remove(judged.verdict.image_ref)
        service.archive.remove(judged.verdict.heatmap_ref)
        raise StoreUnavailableError(f"{exc}; the verdict was not stored") from exc
    if judged.files_written is not None:
        await asyncio.wrap_future(judged.files_written)  # the image can be fetched once answered
    service.observe_stored(judged, "api")
    return VerdictCreated.model_validate(judged.response(stored))


def build_router(station: Station, access: AccessControl) -> APIRouter:
    router = APIRouter(prefix="/api/v1", tags=["verdicts"], responses=ERROR_RESPONSES)
    reader = Depends(access.requires(QMS_READ))
    judge = access.requires(AOI_VERDICT)
    operator = access.requires(OPERATOR)

    def inspection() -> InspectionService:
        if station.inspection is None:
            raise ApiError(503, "not_ready", "the station is not started")
        return station.inspection

    def upload_limit() -> int:
        return station.config.api.max_upload_bytes

    def part_context(form: dict[str, str], query: PartQuery, identity: Identity) -> PartContext:
        """The part's identity from query parameters, else form fields; the station's own id by default."""
        return PartContext(station=_text(query.station or form.get("station"), "station") or station.id,
                           source="api", serial=_text(query.serial or form.get("serial"), "serial"),
                           lot=_text(query.batch or form.get("batch"), "batch"), actor=identity.actor)

    @router.post("/verdicts/vision", response_model=VerdictCreated, summary="Judge one image",
                 description="Send the image as multipart field `image`, or as the raw body (JPEG, PNG, BMP, "
                             "TIFF; grey or colour, 8 or 16 bit). Returns once the verdict is durable.",
                 openapi_extra=upload_body("image", RAW_IMAGE_TYPES, _PART_FIELDS, IDENT_PATTERN))
    async def judge_vision(request: Request, query: Annotated[PartQuery, Depends()],
                           identity: Identity = Depends(judge)) -> VerdictCreated:
        service = inspection()
        upload = await read_image_upload(request, upload_limit())
        part = part_context(upload.fields, query, identity)
        model_name = _text(query.model or upload.fields.get("model"), "model")
        judged = await run_in_threadpool(service.judge_bytes, upload.data, part, model_name)
        return await acknowledge(service, judged)

    @router.post("/verdicts/acoustic", response_model=VerdictCreated, summary="Judge one sound recording",
                 description="Send a WAV file as multipart field `audio` or as the raw body. Silence, clipping or "
                             "a wrong sample rate give an INVALID verdict with the reason, never OK or NG.",
                 openapi_extra=upload_body("audio", AUDIO_TYPES, _PART_FIELDS, IDENT_PATTERN))
    async def judge_acoustic(request: Request, query: Annotated[PartQuery, Depends()],
                             identity: Identity = Depends(judge)) -> VerdictCreated:
        service = inspection()
        upload = await read_upload(request, upload_limit(), "audio", AUDIO_TYPES, "audio/wav")
        model_name = _text(query.model or upload.fields.get("model"), "model") or station.config.models.acoustic
        if model_name is None:
            raise ApiError(404, "unknown_model", "this station has no acoustic model (models.acoustic) and none "
                                                 "was named")
        part = part_context(upload.fields, query, identity)
        waveform, rate = await run_in_threadpool(decode_wav, upload.data)
        judged = await run_in_threadpool(service.judge_audio, waveform, rate, part, model_name)
        return await acknowledge(service, judged)

    async def stored_verdict(verdict_id: int) -> Verdict:
        record = await run_in_threadpool(inspection().store.verdict, verdict_id)
        if record is None:
            raise NotFoundError(f"verdict {verdict_id} does not exist")
        return record

    @router.get("/verdicts/{verdict_id}", response_model=VerdictRecord, dependencies=[reader],
                summary="One verdict with its part, batch and latest override")
    async def get_verdict(verdict_id: int) -> VerdictRecord:
        return VerdictRecord.model_validate(await stored_verdict(verdict_id))

    @router.get("/verdicts/{verdict_id}/{kind}", dependencies=[reader], response_class=FileResponse,
                summary="The stored image or heat map",
                description="A kept file, or a recent OK part's image still held in memory (not written "
                            "unless its verdict is overridden or confirmed while held); 404 once neither.",
                responses={200: {"content": {"image/png": {}, "image/jpeg": {}, "application/octet-stream": {}},
                                 "description": "The file as stored."}})
    async def verdict_file(verdict_id: int, kind: Literal["image", "heatmap"]) -> Response:
        record = await stored_verdict(verdict_id)
        ref = record.image_ref if kind == "image" else record.heatmap_ref
        archive = inspection().archive
        path = archive.resolve(ref) if ref else None
        if path is not None:
            return FileResponse(path)
        held = await run_in_threadpool(archive.held, ref) if ref else None  # a camera frame is encoded here
        if held is None:
            raise NotFoundError(f"verdict {verdict_id} has no stored {kind}"
                                + (" (not kept)" if ref else ""))
        media_type = mimetypes.guess_type(ref or "")[0] or "application/octet-stream"
        return Response(held, media_type=media_type, headers={"Cache-Control": "no-store"})

    @router.post("/verdicts/{verdict_id}/override", response_model=OverrideRecord,
                 summary="Operator confirms or overrides a verdict",
                 description="A new record referring to the verdict (which itself never changes), audited "
                             "under the logged-in identity.")
    async def override(verdict_id: int, body: OverrideRequest,
                       identity: Identity = Depends(operator)) -> OverrideRecord:
        future = inspection().store.override(verdict_id, body.decision, identity.actor, body.reason, body.label,
                                                  body.expected_override)
        return OverrideRecord.model_validate(await asyncio.wrap_future(future))

    return router


