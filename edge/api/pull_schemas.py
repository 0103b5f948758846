"""Query parameters and responses of the pull API (edge.api.pull); their descriptions and examples
become the OpenAPI docs."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Literal

from fastapi import Query
from pydantic import BaseModel, Field

from edge.api.schemas import OverrideRecord
from edge.store.queries import BatchFilter, VerdictFilter, utc_text

MAX_PAGE = 10_000
ExportFormat = Literal["json", "ndjson", "csv"]
DecisionValue = Literal["OK", "NG", "INVALID"]
_TEXT = 128  # longer than any stored lot, serial, station, label or model name

SINCE = Query(ge=0, description="Cursor: only records with a larger id. Start at 0; pass the previous page's "
                                "`next_cursor`. A cursor past the last record gives an empty page.",
              examples=[0, 1200])
LIMIT = Query(ge=1, le=MAX_PAGE, description=f"Records per page (1 to {MAX_PAGE:,}).", examples=[100, 1000])
FROM = Query(alias="from", description="Commit time at or after this (ISO 8601; without an offset, UTC).",
             examples=["2026-12-05T06:00:00Z"])
TO = Query(alias="to", description="Commit time before this (ISO 8601; without an offset, UTC).",
           examples=["2026-12-05T14:00:00+01:00"])


class VerdictQuery:
    """The filters of GET /verdicts and its exports; every given filter must match."""

    def __init__(
        self,
        batch: Annotated[int | None, Query(ge=0, description="Batch id (GET /batches): verdicts of parts judged "
                                                             "in that batch.", examples=[12])] = None,
        lot: Annotated[str | None, Query(max_length=_TEXT, description="Lot: the batch's, or the lot sent with a "
                                                                       "part judged outside any batch.",
                                         examples=["LOT-7"])] = None,
        serial: Annotated[str | None, Query(max_length=_TEXT, description="Part serial (all inspections of that "
                                                                          "part).", examples=["SN-0001"])] = None,
        station: Annotated[str | None, Query(max_length=_TEXT, description="Station id that judged it.",
                                             examples=["demo-station"])] = None,
        modality: Annotated[Literal["vision", "acoustic"] | None,
                            Query(description="Which sense judged it.", examples=["vision"])] = None,
        decision: Annotated[DecisionValue | None,
                            Query(description="The model's decision as acknowledged to the line (overrides do "
                                              "not change it; see effective_decision).", examples=["NG"])] = None,
        effective_decision: Annotated[DecisionValue | None,
                                      Query(description="The latest operator override's decision where there is "
                                                        "one, else the model's.", examples=["OK"])] = None,
        label: Annotated[str | None, Query(max_length=_TEXT, description="The model's label.",
                                           examples=["crack"])] = None,
        model: Annotated[str | None, Query(max_length=_TEXT, description="Model name.",
                                           examples=["tile-anomaly"])] = None,
        model_version: Annotated[int | None, Query(ge=0, description="Model version (with or without `model`).",
                                                   examples=[3])] = None,
        overridden: Annotated[bool | None, Query(description="true: only verdicts an operator confirmed or "
                                                             "overrode; false: only the others.",
                                                 examples=[True])] = None,
        created_from: Annotated[datetime | None, FROM] = None,
        created_to: Annotated[datetime | None, TO] = None,
    ) -> None:
        self.filter = VerdictFilter(
            batch_id=batch, lot=lot, serial=serial, station=station, modality=modality, decision=decision,
            effective_decision=effective_decision, label=label, model_name=model, model_version=model_version,
            overridden=overridden, created_from=None if created_from is None else utc_text(created_from),
            created_to=None if created_to is None else utc_text(created_to))


class BatchQuery:
    """The filters of GET /batches; every given filter must match."""

    def __init__(
        self,
        lot: Annotated[str | None, Query(max_length=_TEXT, description="Lot code.", examples=["LOT-7"])] = None,
        station: Annotated[str | None, Query(max_length=_TEXT, description="Station id that ran it.",
                                             examples=["demo-station"])] = None,
        state: Annotated[Literal["open", "closed"] | None,
                         Query(description="open: not yet closed; closed: closed.", examples=["closed"])] = None,
        open_only: Annotated[bool, Query(description="Same as state=open (kept for earlier clients).",
                                         examples=[False])] = False,
        active_from: Annotated[datetime | None, Query(
            alias="from", description="Batches still open at or after this time (ISO 8601; without an offset, "
                                      "UTC).", examples=["2026-12-05T06:00:00Z"])] = None,
        active_to: Annotated[datetime | None, Query(
            alias="to", description="Batches opened before this time (ISO 8601; without an offset, UTC).",
            examples=["2026-12-05T14:00:00Z"])] = None,
    ) -> None:
        self.filter = BatchFilter(
            lot=lot, station=station, state="open" if open_only else state,
            active_from=None if active_from is None else utc_text(active_from),
            active_to=None if active_to is None else utc_text(active_to))
        self.conflict = open_only and state == "closed"



class OverridePage(BaseModel):
    items: list[OverrideRecord] = Field(description="Overrides and confirmations in id (= commit) order.")
    next_cursor: int = Field(description="Pass as ?since= to get the following overrides.", examples=[57])
    has_more: bool = Field(description="More overrides follow; false: pull again later.", examples=[False])
