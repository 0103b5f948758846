"""Audit endpoints: page through the trail; the signed chain head an upstream system anchors."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends, Query
from fastapi.concurrency import run_in_threadpool

from edge.access import QMS_READ, AccessControl
from edge.api.errors import ApiError
from edge.api.schemas import ERROR_RESPONSES, AuditPage, AuditRecord, ChainHead, ChainHeadItem
from edge.station import Station
from edge.store import VerdictStore
from edge.store.chain import utc_now
from edge.store.signing import head_text


def build_router(station: Station, access: AccessControl) -> APIRouter:
    router = APIRouter(prefix="/api/v1/audit", tags=["audit"], responses=ERROR_RESPONSES,
                       dependencies=[Depends(access.requires(QMS_READ))])

    def store() -> VerdictStore:
        if station.store is None:
            raise ApiError(503, "not_ready", "the station is not started")
        return station.store

    @router.get("", response_model=AuditPage, summary="Audit records after a cursor, oldest first",
                description="Every state change: who (the authenticated identity), when (commit time), what, "
                            "the values before and after, and the record's place in the hash chain.")
    async def audit_page(
        since: Annotated[int, Query(ge=0, description="Cursor: records with a larger id.")] = 0,
        limit: Annotated[int, Query(ge=1, le=1000)] = 100,
    ) -> AuditPage:
        rows = await run_in_threadpool(store().audit_since, since, limit + 1)
        items = [AuditRecord.model_validate(r) for r in rows[:limit]]
        return AuditPage(items=items, next_cursor=items[-1].id if items else since, has_more=len(rows) > limit)

    @router.get("/head", response_model=ChainHead, summary="The chain heads, signed with the station key",
                description="Store this upstream: `edge-inspect audit verify` proves the record still leads "
                            "to these hashes, and the signature proves the station issued them.")
    async def chain_head() -> ChainHead:
        heads = await run_in_threadpool(store().chain_heads)
        at = utc_now()
        text = head_text(station.id, at, heads["verdicts"], heads["audit"])
        key = station.key
        return ChainHead(station=station.id, at=at,
                         verdicts=ChainHeadItem(id=heads["verdicts"][0], hash=heads["verdicts"][1]),
                         audit=ChainHeadItem(id=heads["audit"][0], hash=heads["audit"][1]), signed=text,
                         signature=key.sign(text) if key else None, public_key=key.public_hex if key else None)

    return router
