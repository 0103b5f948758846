"""The upstream link's state: where the station publishes, whether each destination is connected, and how
many messages it has delivered and still owes (the same counters as the retained MQTT state message)."""

from __future__ import annotations

from fastapi import APIRouter, Depends
from pydantic import BaseModel, Field

from edge.access import QMS_READ, AccessControl
from edge.api.schemas import ERROR_RESPONSES
from edge.station import Station


class SinkStatusOut(BaseModel):
    published: int = Field(description="Messages the destination acknowledged since the station started.",
                           examples=[18250])
    failed: int = Field(description="Delivery rounds that failed (their messages are sent again).", examples=[2])
    connect_failures: int = Field(description="Connection attempts that failed since the station started.",
                                  examples=[14])
    connected: bool = Field(description="Connected now.", examples=[True])
    delivered_id: int = Field(description="The last outbox id delivered (outbox ids follow commit order).",
                              examples=[18250])
    outbox_depth: int = Field(description="Messages waiting for this destination.", examples=[0])
    last_error: str | None = Field(description="The last failure, if any (never a password).",
                                   examples=["broker mqtt://10.0.0.5:1883 unreachable: [Errno 111] Connection refused"])


class UpstreamStatusOut(BaseModel):
    enabled: bool = Field(description="Whether a broker or webhook is configured (upstream.mqtt_url, "
                                      "upstream.webhook, or run --mqtt-url).")
    prefix: str | None = Field(description="The topic prefix: edge-inspect/<station id> by default.",
                               examples=["edge-inspect/station-01"])
    sinks: dict[str, SinkStatusOut] = Field(description="Per destination: mqtt, webhook.")


def build_router(station: Station, access: AccessControl) -> APIRouter:
    router = APIRouter(prefix="/api/v1", responses=ERROR_RESPONSES, tags=["upstream"],
                       dependencies=[Depends(access.requires(QMS_READ))])

    @router.get("/upstream", response_model=UpstreamStatusOut,
                summary="The push to the plant: destinations, connection, messages delivered and owed")
    def get_upstream() -> UpstreamStatusOut:
        upstream = station.upstream
        if upstream is None or not upstream.enabled:
            return UpstreamStatusOut(enabled=False, prefix=None, sinks={})
        status = upstream.status()
        return UpstreamStatusOut(enabled=True, prefix=status["prefix"],
                                 sinks={name: SinkStatusOut(**values) for name, values in status["sinks"].items()})

    return router
