"""The pull API for a plant's QMS: verdicts and batches with filters, cursor pages in commit order, and
exports (JSON, NDJSON, CSV) that stream page by page.

A client that pulls ``GET /verdicts?since=<next_cursor>`` repeatedly gets every matching record exactly
once: ids grow in commit order and a page is read in one snapshot. Unknown, repeated or malformed query
parameters are refused with a 422 that names them."""

from __future__ import annotations

import csv
import io
import json
import re
from collections.abc import Iterator
from dataclasses import fields
from datetime import UTC, datetime
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Query, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.dependencies.models import Dependant
from fastapi.responses import Response, StreamingResponse
from fastapi.routing import APIRoute
from pydantic import TypeAdapter

from edge.access import QMS_READ, AccessControl
from edge.api.errors import ApiError
from edge.api.pull_schemas import (
    FROM,
    LIMIT,
    MAX_PAGE,
    SINCE,
    TO,
    BatchQuery,
    ExportFormat,
    OverridePage,
    VerdictQuery,
)
from edge.api.schemas import ERROR_RESPONSES, BatchRecord, VerdictPage, VerdictRecord
from edge.station import Station
from edge.store import NotFoundError, Verdict, VerdictStore
from edge.store.archiving import archived_through
from edge.store.queries import (
    VerdictFilter,
    batch_page,
    override_page,
    recent_batches,
    utc_text,
    verdict_page,
    verdict_pages,
)

_PAGE = TypeAdapter(list[Verdict])  # serialises the typed rows directly (VerdictRecord has the same fields)
_ONE = TypeAdapter(Verdict)
COLUMNS = [item.name for item in fields(Verdict)]
if list(VerdictRecord.model_fields) != COLUMNS:
    raise RuntimeError("VerdictRecord must list Verdict's fields in the same order")
EXPORT_PAGE = 1000
MEDIA_TYPES: dict[str, str] = {"json": "application/json", "ndjson": "application/x-ndjson",
                               "csv": "text/csv; charset=utf-8"}
_EXPORT_RESPONSES: dict[int | str, dict[str, Any]] = {200: {
    "description": "The verdicts as a download (Content-Disposition names the file), streamed a page at a time.",
    "content": {"application/json": {"schema": {"type": "array", "items": {"$ref": "#/components/schemas/"
                                                                                   "VerdictRecord"}}},
                "application/x-ndjson": {"schema": {"type": "string"},
                                         "example": '{"id": 1, "serial": "SN-0001", "decision": "NG", ...}\n'},
                "text/csv": {"schema": {"type": "string"},
                             "example": ",".join(COLUMNS[:4]) + ",...\n1,1,SN-0001,12,...\n"}}}}


def _query_names(dependant: Dependant) -> frozenset[str]:
    names = {item.alias for item in dependant.query_params}
    for sub in dependant.dependencies:
        names |= _query_names(sub)
    return frozenset(names)


_ROUTE_PARAMETERS: dict[int, frozenset[str]] = {}


async def known_parameters(request: Request) -> None:
    """Refuse query parameters the route does not take, or a parameter given twice (FastAPI would ignore
    the one and keep the last of the other)."""
    route = request.scope.get("route")
    if not isinstance(route, APIRoute):
        return
    allowed = _ROUTE_PARAMETERS.get(id(route))
    if allowed is None:
        allowed = _ROUTE_PARAMETERS[id(route)] = _query_names(route.dependant)
    given = request.query_params
    problems = [{"where": f"query.{name}", "problem": "unknown parameter"}
                for name in sorted(set(given) - allowed)]
    problems += [{"where": f"query.{name}", "problem": "given more than once"}
                 for name in sorted(set(given) & allowed) if len(given.getlist(name)) > 1]
    if problems:
        summary = "; ".join(f"{p['where']}: {p['problem']}" for p in problems)
        raise ApiError(422, "invalid_request", f"the request is malformed: {summary} (this route takes: "
                                               f"{', '.join(sorted(allowed))})", problems)


def _check_times(start: str | None, end: str | None) -> None:
    if start is not None and end is not None and start > end:
        raise ApiError(422, "invalid_request", "the request is malformed: query.from is after query.to",
                       [{"where": "query.from", "problem": "after query.to"}])


def _safe(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", text)[:64]


def _render_csv(items: list[Verdict], header: bool) -> str:
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    if header:
        writer.writerow(COLUMNS)
    for item in items:
        writer.writerow([_cell(getattr(item, name)) for name in COLUMNS])
    return out.getvalue()


def _cell(value: object) -> str:
    if value is None:
        return ""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, dict):
        return json.dumps(value, sort_keys=True, separators=(",", ":"))
    return str(value)


def export_stream(pages: Iterator[list[Verdict]], fmt: ExportFormat) -> Iterator[bytes]:
    """The pages rendered as one document; only one page is held at a time."""
    first = True
    for items in pages:
        if fmt == "json":
            body = _PAGE.dump_json(items)[1:-1]
            yield (b"[" if first else b",") + body
        elif fmt == "ndjson":
            yield b"".join(_ONE.dump_json(item) + b"\n" for item in items)
        else:
            yield _render_csv(items, first).encode()
        first = False
    if fmt == "json":
        yield b"[]" if first else b"]"
    elif fmt == "csv" and first:
        yield _render_csv([], True).encode()


def build_router(station: Station, access: AccessControl) -> APIRouter:
    router = APIRouter(prefix="/api/v1", responses=ERROR_RESPONSES,
                       dependencies=[Depends(access.requires(QMS_READ)), Depends(known_parameters)])

    def store() -> VerdictStore:
        if station.store is None:
            raise ApiError(503, "not_ready", "the station is not started")
        return station.store

    def download(pages: Iterator[list[Verdict]], fmt: ExportFormat, name: str) -> StreamingResponse:
        return StreamingResponse(export_stream(pages, fmt), media_type=MEDIA_TYPES[fmt],
                                 headers={"Content-Disposition": f'attachment; filename="{name}.{fmt}"'})

    @router.get("/verdicts", tags=["verdicts"], response_model=VerdictPage,
                summary="Verdicts after a cursor, in commit order, with filters",
                description="Pull every verdict exactly once: start at `since=0` and pass each page's "
                            "`next_cursor` back as `since` until `has_more` is false; later calls with the last "
                            "cursor give only what was stored since. Filters combine (all must match). "
                            "`next_cursor` is the highest id the page examined, so a filtered pull never "
                            "rescans what it has passed.")
    async def list_verdicts(query: Annotated[VerdictQuery, Depends()],
                            since: Annotated[int, SINCE] = 0, limit: Annotated[int, LIMIT] = 100) -> Response:
        flt = query.filter
        _check_times(flt.created_from, flt.created_to)
        page, through = await run_in_threadpool(
            lambda: (verdict_page(store().reader(), flt, since, limit), archived_through(store().reader())))
        body = b'{"items":%s,"next_cursor":%d,"has_more":%s%s}' % (
            _PAGE.dump_json(page.items), max(since, page.scanned_to), b"true" if page.has_more else b"false",
            b',"archived_through":%d' % through if since < through else b"")  # not a silent gap
        headers = {"X-Archived-Through": str(through)} if through else None
        return Response(body, media_type="application/json", headers=headers)

    @router.get("/overrides", tags=["verdicts"], response_model=OverridePage,
                summary="Operator overrides and confirmations after a cursor, in commit order",
                description="A verdict never changes; an operator's override or confirmation is a record of its own. "
                            "Pull this feed beside GET /verdicts (which shows each verdict's latest override as "
                            "it stood when pulled) to learn of overrides made after a verdict was pulled.")
    async def list_overrides(
        since: Annotated[int, SINCE] = 0, limit: Annotated[int, LIMIT] = 100,
        verdict: Annotated[int | None, Query(ge=0, description="Only the overrides of this verdict id.",
                                             examples=[1042])] = None,
        operator: Annotated[str | None, Query(max_length=128, description="Only those this identity made.",
                                              examples=["user:ann"])] = None,
        created_from: Annotated[datetime | None, FROM] = None, created_to: Annotated[datetime | None, TO] = None,
    ) -> OverridePage:
        start = None if created_from is None else utc_text(created_from)
        end = None if created_to is None else utc_text(created_to)
        _check_times(start, end)
        page = await run_in_threadpool(lambda: override_page(store().reader(), since, limit, verdict, operator,
                                                             start, end))
        return OverridePage.model_validate({"items": page.items, "next_cursor": max(since, page.scanned_to),
                                            "has_more": page.has_more}, from_attributes=True)

    @router.get("/verdicts/export", tags=["verdicts"], response_class=StreamingResponse,
                responses=_EXPORT_RESPONSES, summary="Export verdicts (JSON, NDJSON or CSV), with filters",
                description="Every verdict matching the filters (the same as GET /verdicts) after `since`, up to "
                            "the last one stored when the export starts, oldest first, with each verdict's "
                            "latest operator override. Streamed a page at a time, so any size fits in memory.")
    async def export_verdicts(query: Annotated[VerdictQuery, Depends()],
                              fmt: Annotated[ExportFormat, Query(alias="format", description="json: one array; "
                                             "ndjson: one record per line; csv: a header row, then one row per "
                                             "record (details as JSON, empty for none).",
                                             examples=["csv"])] = "json",
                              since: Annotated[int, SINCE] = 0) -> StreamingResponse:
        flt = query.filter
        _check_times(flt.created_from, flt.created_to)
        pages = verdict_pages(store().reader, flt, since, EXPORT_PAGE)
        stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")
        return download(pages, fmt, f"verdicts-{_safe(station.id)}-{stamp}")

    @router.get("/batches/{batch_id}/verdicts.{fmt}", tags=["batches"], response_class=StreamingResponse,
                responses=_EXPORT_RESPONSES, summary="Export one batch's verdicts (csv, json or ndjson)",
                description="The same as GET /verdicts/export?batch={batch_id}&format={fmt}.")
    async def export_batch(batch_id: int, fmt: ExportFormat) -> StreamingResponse:
        batch = await run_in_threadpool(store().batch, batch_id)
        if batch is None:
            raise NotFoundError(f"batch {batch_id} does not exist")
        pages = verdict_pages(store().reader, VerdictFilter(batch_id=batch_id), 0, EXPORT_PAGE)
        return download(pages, fmt, f"batch-{batch_id}-{_safe(batch.lot)}-verdicts")

    @router.get("/batches", tags=["batches"], response_model=list[BatchRecord],
                summary="Batches with filters: the newest, or after a cursor in the order they were opened",
                description="Without `since`: the newest batches first (`limit` of them). With `since`: batches "
                            "with a larger id, oldest first; the response headers `X-Next-Cursor` (pass as the "
                            "next `since`) and `X-Has-More` continue the pull, as `Link: rel=next` does.",
                responses={200: {"description": "Batches.", "headers": {
                    "X-Next-Cursor": {"description": "With `since`: pass as the next `since`.",
                                      "schema": {"type": "integer"}},
                    "X-Has-More": {"description": "With `since`: whether more batches match.",
                                   "schema": {"type": "boolean"}}}}})
    async def list_batches(request: Request, query: Annotated[BatchQuery, Depends()],
                           since: Annotated[int | None, SINCE] = None,
                           limit: Annotated[int, Query(ge=1, le=MAX_PAGE, description="Batches to return.",
                                                       examples=[100])] = 100) -> Response:
        if query.conflict:
            raise ApiError(422, "invalid_request", "the request is malformed: query.open_only contradicts "
                                                   "query.state=closed", [{"where": "query.open_only",
                                                                           "problem": "contradicts state"}])
        flt = query.filter
        _check_times(flt.active_from, flt.active_to)
        headers: dict[str, str] = {}
        if since is None:
            items = await run_in_threadpool(lambda: recent_batches(store().reader(), flt, limit))
        else:
            page = await run_in_threadpool(lambda: batch_page(store().reader(), flt, since, limit))
            items, cursor = page.items, max(since, page.scanned_to)
            headers = {"X-Next-Cursor": str(cursor), "X-Has-More": "true" if page.has_more else "false"}
            if page.has_more:
                headers["Link"] = f'<{request.url.include_query_params(since=cursor)}>; rel="next"'
        body = json.dumps([BatchRecord.model_validate(b).model_dump(mode="json") for b in items])
        return Response(body, media_type="application/json", headers=headers)

    return router

