"""QMS figures routes: batch summaries, the station's current summary, control charts, the model drift
check and the batch reports. Figures come from edge.quality, the same code the station page uses."""

from __future__ import annotations

from typing import Annotated, Literal

from fastapi import APIRouter, Depends, Query
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import FileResponse
from pydantic import BaseModel, ConfigDict, Field

from edge.access import QMS_READ, AccessControl
from edge.api.errors import ApiError
from edge.api.schemas import ERROR_RESPONSES
from edge.quality import batch_charts, batch_summary, current_summary
from edge.quality.charts import BatchCharts
from edge.quality.drift import ModelDrift, model_drift
from edge.quality.reports import report_file
from edge.quality.spc import RULES
from edge.quality.summary import Summary, summary_record
from edge.station import Station
from edge.store import NotFoundError, VerdictStore


class _Out(BaseModel):
    model_config = ConfigDict(from_attributes=True, populate_by_name=True)


class LabelCountOut(_Out):
    label: str = Field(description="Defect label (a good-only model's NG parts: 'anomaly' until an operator "
                                   "labels them), or alarm kind.", examples=["crack"])
    count: int = Field(description="Parts (or alarms).", examples=[12])


class ModalityOut(_Out):
    modality: str = Field(examples=["vision"])
    parts: int = Field(description="Parts this modality judged.")
    ok: int
    ng: int
    invalid: int
    verdicts: int = Field(description="Its verdicts, re-inspections included.")


class ModelUseOut(_Out):
    model_name: str = Field(examples=["tile-anomaly"])
    model_version: int = Field(examples=[3])
    verdicts: int = Field(description="Verdicts given by this model version.")


class FiguresOut(_Out):
    parts: int = Field(description="Distinct parts (a re-inspected part counts once).", examples=[1200])
    ok: int = Field(description="Parts whose effective decision (an operator's override, else the latest "
                                "inspection's) is OK.", examples=[1180])
    ng: int = Field(description="Parts whose effective decision is NG.", examples=[15])
    invalid: int = Field(description="Parts that could not be judged (INVALID).", examples=[5])
    yield_rate: float | None = Field(alias="yield", description="ok / parts (INVALID parts are not good); null "
                                     "without parts.", examples=[0.9833])
    first_pass_yield: float | None = Field(description="Parts OK at their first inspection and never overridden, "
                                           "/ parts.", examples=[0.975])
    ppm: float | None = Field(description="NG parts per million parts.", examples=[12500.0])
    pareto: list[LabelCountOut] = Field(description="NG parts by defect label, most frequent first.")
    first_pass_ok: int = Field(description="Parts OK at their first inspection and never overridden.")
    overridden_parts: int = Field(description="Parts an operator's override changed.")
    reinspected_parts: int = Field(description="Parts judged more than once.")
    inspections: int = Field(description="Inspections (a part judged twice: 2).")
    verdicts: int = Field(description="Verdicts of all modalities.")
    overrides: int = Field(description="Operator overrides that changed a decision.")
    confirmations: int = Field(description="Operator confirmations of a decision.")
    late_answers: int = Field(description="Verdicts the line got the fail-safe for (deadline missed).")
    alarms: int = Field(description="Alarms raised while this batch was open.")
    alarm_kinds: list[LabelCountOut] = Field(description="Those alarms by kind.")
    modalities: list[ModalityOut] = Field(description="Figures per modality (vision, acoustic).")
    models: list[ModelUseOut] = Field(description="Model versions used and their verdicts.")
    first_at: str | None = Field(description="First verdict (UTC, ISO 8601).", examples=["2026-12-05T06:00:01.5+00:00"])
    last_at: str | None = Field(description="Last verdict (UTC, ISO 8601).")


class PeriodOut(FiguresOut):
    period: str = Field(description="UTC hour (YYYY-MM-DDTHH) or shift (YYYY-MM-DD/NAME, by the day it began).",
                        examples=["2026-12-05T07", "2026-12-05/early"])


class SummaryOut(FiguresOut):
    """Figures of a batch, or of the station's recent hours when no batch is open."""

    batch_id: int | None = Field(description="The batch; null for a time-window summary.", examples=[7])
    lot: str | None = Field(examples=["LOT-7"])
    product: str | None = None
    recipe: str | None = None
    status: Literal["open", "closed", "window"] = Field(description="Batch open or closed, or a time window.")
    opened_at: str | None = None
    closed_at: str | None = None
    window_hours: int | None = Field(description="Hours covered by a time-window summary.")
    per_shift: list[PeriodOut] = Field(description="The same figures per shift (by first inspection).")
    per_hour: list[PeriodOut] = Field(description="The same figures per UTC hour (by first inspection).")
    complete: bool = Field(description="False when some of these parts were judged before this station's "
                                       "software kept figures (a database upgraded with a batch in it): those "
                                       "parts are not counted.")
    generated_at: str = Field(description="When these figures were read (UTC).")


def summary_out(summary: Summary) -> SummaryOut:
    """The HTTP shape of a summary (edge.quality.summary_record, also sent upstream)."""
    return SummaryOut.model_validate(summary_record(summary))


class LimitsOut(_Out):
    center: float = Field(description="Mean of the baseline scores.")
    sigma: float = Field(description="Moving range / 1.128.")
    ucl: float
    lcl: float
    mr_bar: float = Field(description="Mean moving range of the baseline.")
    mr_ucl: float = Field(description="Upper limit of the moving-range chart (3.267 x mean moving range).")
    baseline_points: int = Field(description="Baseline points kept (beyond-limit points are dropped once).")


class CapabilityOut(_Out):
    usl: float = Field(description="Upper specification limit: the model's threshold on its anomaly score.")
    mean: float
    sigma_within: float
    sigma_overall: float
    cpk: float | None = Field(description="(USL - mean) / 3 sigma within; with only an upper limit Cpk = Cpu.")
    ppk: float | None = Field(description="The same with the overall standard deviation.")
    cp: float | None = Field(description="Needs a lower and an upper limit: null for an anomaly score.")


class ScorePointOut(_Out):
    seq: int = Field(description="Position in the series (1 = first scored verdict).")
    verdict_id: int
    score: float
    decision: str = Field(description="The model's decision of that verdict.")
    at: str
    moving_range: float | None
    rules: list[int] = Field(description="Rules broken by the run ending at this point (see `rules`).",
                             examples=[[2]])


class ScoreChartOut(_Out):
    series_id: int
    modality: str
    model_name: str
    model_version: int
    total_points: int
    limits: LimitsOut | None = Field(description="Individuals / moving-range limits from the baseline.")
    baseline_complete: bool = Field(description="False while the baseline has fewer points than configured: the "
                                                "limits are provisional and raise no alarm.")
    baseline_series: int | None
    threshold: float | None
    capability: CapabilityOut | None
    points: list[ScorePointOut]


class ProportionOut(_Out):
    parts: int
    ng: int
    p: float = Field(description="NG rate of the subgroup.")
    ucl: float
    lcl: float


class RatePointOut(_Out):
    subgroup: int = Field(description="0-based subgroup of consecutive parts.")
    proportion: ProportionOut
    complete: bool = Field(description="False for the subgroup still filling.")
    rules: list[int]


class RateChartOut(_Out):
    subgroup_parts: int
    p_bar: float | None = Field(description="Centre line: NG rate of the baseline subgroups.")
    baseline_subgroups: int
    points: list[RatePointOut]


class SpcOut(_Out):
    batch_id: int = Field(description="The batch (0: parts judged with no batch open).")
    scores: list[ScoreChartOut] = Field(description="I-MR charts of anomaly scores per modality and model version.")
    ng_rate: RateChartOut = Field(description="p-chart of the NG rate.")
    rules: dict[int, str] = Field(description="The run rules: Western Electric 1-4 and Nelson's trend rule (5).")


class ModelDriftOut(_Out):
    model_name: str
    model_version: int
    modality: str
    hours: int
    good_parts: int = Field(description="Scored verdicts judged OK in the window.")
    median: float | None = Field(description="Median score of those verdicts.")
    p95: float | None
    calibration_median: float | None = Field(description="The manifest's calibration_good_score_median.")
    median_ratio: float | None = Field(description="median / calibration median.")
    ng_rate: float | None = Field(description="NG share of the model's scored verdicts in the window.")
    calibration_false_reject_rate: float | None
    status: Literal["ok", "drift", "unknown"] = Field(description="drift: the median moved by more than "
                                                      "figures.spc.drift_tolerance, or the NG rate is far above "
                                                      "the calibration's false-reject rate; unknown: too few "
                                                      "parts or no calibration figures.")
    reasons: list[str]


def build_router(station: Station, access: AccessControl) -> APIRouter:
    router = APIRouter(prefix="/api/v1", responses=ERROR_RESPONSES, tags=["qms figures"],
                       dependencies=[Depends(access.requires(QMS_READ))])
    settings = station.config.figures

    def store() -> VerdictStore:
        if station.store is None:
            raise ApiError(503, "not_ready", "the station is not started")
        return station.store

    @router.get("/batches/{batch_id}/summary", response_model=SummaryOut, response_model_by_alias=True,
                summary="A batch's figures: parts, yield, first-pass yield, PPM, Pareto, per shift and hour",
                description="Kept current as verdicts arrive (counters written with each record). A part judged "
                            "again counts once; an operator's override decides the part.")
    async def get_summary(batch_id: int) -> SummaryOut:
        current = store()
        return summary_out(await run_in_threadpool(lambda: batch_summary(current.reader(), batch_id)))

    @router.get("/summary/current", response_model=SummaryOut, response_model_by_alias=True,
                summary="The station's current figures: its open batch, else the last hours")
    async def get_current(hours: Annotated[int | None, Query(ge=1, le=24 * 31, description="Hours covered when no "
                                                             "batch is open; default figures.current_hours.")] = None
                          ) -> SummaryOut:
        current = store()
        span = hours or settings.current_hours
        return summary_out(await run_in_threadpool(lambda: current_summary(current.reader(), station.id, span)))

    @router.get("/spc", response_model=SpcOut,
                summary="Control charts: anomaly scores (I-MR) and NG rate (p-chart) with rule violations",
                description="Of the given batch, else the station's open batch, else the parts judged with no "
                            "batch (batch 0).")
    async def get_spc(batch: Annotated[int | None, Query(ge=0, le=2**63 - 1, description="Batch id.")] = None,
                      points: Annotated[int, Query(ge=0, le=5000, description="Last points per chart.")] = 200
                      ) -> SpcOut:
        current = store()

        def read() -> BatchCharts:
            conn = current.reader()
            batch_id = batch
            if batch_id is None:
                row = conn.execute("SELECT id FROM batches WHERE station = ? AND closed_at IS NULL ORDER BY id DESC"
                                   " LIMIT 1", (station.id,)).fetchone()
                batch_id = 0 if row is None else int(row[0])
            elif batch_id and conn.execute("SELECT 1 FROM batches WHERE id = ?", (batch_id,)).fetchone() is None:
                raise NotFoundError(f"batch {batch_id} does not exist")
            return batch_charts(conn, batch_id, settings.spc, points)

        charts = await run_in_threadpool(read)
        return SpcOut.model_validate({"batch_id": charts.batch_id, "scores": charts.scores,
                                      "ng_rate": charts.ng_rate, "rules": RULES})

    @router.get("/spc/model-drift", response_model=list[ModelDriftOut],
                summary="Today's good-part scores of each model version against its training calibration")
    async def get_drift(hours: Annotated[int, Query(ge=1, le=24 * 31)] = 24) -> list[ModelDriftOut]:
        current = store()

        def read() -> list[ModelDrift]:
            registry = station.models.registry if station.models is not None else None
            return model_drift(current.reader(), registry, hours, settings.spc.drift_tolerance)

        return [ModelDriftOut.model_validate(d) for d in await run_in_threadpool(read)]

    def report(batch_id: int, kind: Literal["pdf", "csv"]) -> FileResponse:
        path = report_file(store().reader(), station.config.data_dir, batch_id, kind)
        media = "application/pdf" if kind == "pdf" else "text/csv; charset=utf-8"
        return FileResponse(path, media_type=media, filename=f"batch-{batch_id}-report.{kind}")

    @router.get("/batches/{batch_id}/report.pdf", response_class=FileResponse,
                responses={200: {"content": {"application/pdf": {}}, "description": "The batch report."}},
                summary="The batch report (PDF), written once the batch has closed")
    async def get_report_pdf(batch_id: int) -> FileResponse:
        return await run_in_threadpool(report, batch_id, "pdf")

    @router.get("/batches/{batch_id}/report.csv", response_class=FileResponse,
                responses={200: {"content": {"text/csv": {}}, "description": "The batch report's figures."}},
                summary="The batch report's figures (CSV), written once the batch has closed")
    async def get_report_csv(batch_id: int) -> FileResponse:
        return await run_in_threadpool(report, batch_id, "csv")

    return router
