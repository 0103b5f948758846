"""GET /api/v1/events: the station's changes as server-sent events, resumable by verdict id."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Annotated

from fastapi import APIRouter, Depends, Header, Query
from fastapi.responses import StreamingResponse

from edge.access import QMS_READ, AccessControl
from edge.api.errors import ApiError
from edge.api.schemas import ERROR_RESPONSES
from edge.page.hub import REPLAY_PAGE, RESET, Client, EventHub, LiveEvent, verdict_event
from edge.station import Station

KEEPALIVE_S = 15.0
POLL_S = 0.25  # how often an idle stream looks for the server's shutdown

_DESCRIPTION = (
    "A `text/event-stream`. Events: `verdict` (a stored verdict in the shape of GET /verdicts/{id}; its SSE "
    "`id` is the verdict id), `record` (`{kind, action, ids}` for overrides, late answers, batches and alarms; "
    "with `verdict` for overrides and late answers), `ready` (`{cursor}` once the replay is done). Resume "
    "with the `Last-Event-ID` header (what EventSource sends on reconnect) or `since`: every verdict after "
    "that id is replayed from the store first. A client that falls behind is ended and resumes the same way.")


def build_router(station: Station, access: AccessControl) -> APIRouter:
    router = APIRouter(prefix="/api/v1", tags=["events"], responses=ERROR_RESPONSES)

    def hub() -> EventHub:
        events: EventHub | None = getattr(station, "events", None)
        if events is None or events.store is None:
            raise ApiError(503, "not_ready", "the station is not started")
        return events

    @router.get("/events", dependencies=[Depends(access.requires(QMS_READ))], response_class=StreamingResponse,
                summary="Live changes (server-sent events): verdicts, overrides, alarms, batches",
                description=_DESCRIPTION,
                responses={200: {"content": {"text/event-stream": {}}, "description": "The event stream."}})
    async def events(
        since: Annotated[int | None, Query(ge=0, le=2**63 - 1, description="Replay the verdicts after this id "
                                           "(ignored when Last-Event-ID is sent).")] = None,
        last_event_id: Annotated[str | None, Header(max_length=20, description="The id of the last event "
                                                    "received (sent by EventSource on reconnect).")] = None,
    ) -> StreamingResponse:
        resume = since
        if last_event_id is not None and last_event_id.strip().isdigit():
            resume = int(last_event_id.strip())
        current = hub()
        client = await current.connect()
        return StreamingResponse(_stream(current, client, resume), media_type="text/event-stream",
                                 headers={"Cache-Control": "no-store", "X-Accel-Buffering": "no"})

    return router


async def _stream(hub: EventHub, client: Client, resume: int | None) -> AsyncIterator[bytes]:
    assert hub.store is not None
    store = hub.store
    try:
        cursor = hub.cursor if resume is None else resume
        yield b"retry: 1000\n\n"
        while resume is not None:  # replay what the client missed, from the store
            page = await asyncio.to_thread(store.verdicts_since, cursor, REPLAY_PAGE)
            for verdict in page:
                yield verdict_event(verdict).encode()
                cursor = verdict.id
            if len(page) < REPLAY_PAGE:
                break
        yield LiveEvent("ready", {"cursor": cursor}).encode()
        idle = 0.0
        while not hub.shutting_down():
            try:
                event = await asyncio.wait_for(client.queue.get(), POLL_S)
            except TimeoutError:
                idle += POLL_S
                if idle >= KEEPALIVE_S:
                    idle = 0.0
                    yield b": keep-alive\n\n"
                continue
            idle = 0.0
            if event is RESET:
                break
            if event.id is not None:
                if event.id <= cursor:
                    continue  # already replayed
                cursor = event.id
            yield event.encode()
    finally:
        hub.disconnect(client)
