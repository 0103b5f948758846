"""The batch report written after a batch closes: a CSV of its figures and a PDF with the figures, the
defect Pareto, the control charts and the NG parts' thumbnails with their heat maps.

Files live in ``<data>/reports/batch-<id>.pdf|csv``: the name comes from the batch's integer id only,
never from anything a client sent. Each is written to a temporary name and renamed into place."""

from __future__ import annotations

import csv
import io
import logging
import os
import sqlite3
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from PIL import Image

from edge.archive import ImageArchive
from edge.config import FiguresSettings
from edge.quality.charts import batch_charts
from edge.quality.pdf import render_pdf
from edge.quality.summary import Figures, Summary, batch_summary, figures_record
from edge.quality.tracker import pareto_label
from edge.store import NotFoundError

log = logging.getLogger(__name__)

ReportKind = Literal["pdf", "csv"]
THUMBNAIL_PX = 160


@dataclass(frozen=True)
class NgPart:
    part_id: int
    serial: str
    verdict_id: int
    label: str
    score: float | None
    image: Image.Image | None
    heatmap: Image.Image | None


def report_path(data_dir: Path, batch_id: int, kind: ReportKind) -> Path:
    return data_dir / "reports" / f"batch-{int(batch_id)}.{kind}"


def report_file(conn: sqlite3.Connection, data_dir: Path, batch_id: int, kind: ReportKind) -> Path:
    """The report file of a closed batch; NotFoundError saying why when there is none (yet)."""
    batch = conn.execute("SELECT closed_at FROM batches WHERE id = ?", (batch_id,)).fetchone() \
        if 0 < batch_id < 2**63 else None
    if batch is None:
        raise NotFoundError(f"batch {batch_id} does not exist")
    if batch[0] is None:
        raise NotFoundError(f"batch {batch_id} is still open: its report is written once it closes")
    row = conn.execute("SELECT error FROM quality_reports WHERE batch_id = ?", (batch_id,)).fetchone()
    if row is None:
        raise NotFoundError(f"the report of batch {batch_id} is being written: try again in a few seconds")
    if row[0]:
        raise NotFoundError(f"the report of batch {batch_id} could not be written: {row[0]}")
    path = report_path(data_dir, batch_id, kind)
    if not path.is_file():
        raise NotFoundError(f"the report file of batch {batch_id} is missing from {path.parent}")
    return path


def write_report(conn: sqlite3.Connection, data_dir: Path, batch_id: int, settings: FiguresSettings,
                 archive: ImageArchive) -> tuple[Path, Path]:
    """Write both files of a batch's report from the figures as they are now; returns (pdf, csv)."""
    summary = batch_summary(conn, batch_id)
    charts = batch_charts(conn, batch_id, settings.spc, limit=500)
    ng_parts = list(_ng_parts(conn, batch_id, archive, settings.report_thumbnails))
    csv_path = _replace(report_path(data_dir, batch_id, "csv"), summary_csv(summary).encode("utf-8"))
    pdf_path = _replace(report_path(data_dir, batch_id, "pdf"), render_pdf(summary, charts, ng_parts))
    return pdf_path, csv_path


def _replace(path: Path, data: bytes) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    temporary = path.with_name(f".{path.name}.tmp")
    with open(temporary, "wb") as handle:
        handle.write(data)
        handle.flush()
        os.fsync(handle.fileno())
    os.replace(temporary, path)
    return path


# -- CSV -------------------------------------------------------------------------------------------
CSV_HEADER = ("section", "period", "name", "value")
FIGURE_FIELDS = ("parts", "ok", "ng", "invalid", "yield", "first_pass_yield", "ppm", "first_pass_ok",
                 "overridden_parts", "reinspected_parts", "inspections", "verdicts", "overrides", "confirmations",
                 "late_answers", "alarms", "first_at", "last_at")


def figure_values(figures: Figures) -> dict[str, object]:
    """The scalar figures by the names the API and the CSV use."""
    record = figures_record(figures)
    return {name: record[name] for name in FIGURE_FIELDS}


def summary_csv(summary: Summary) -> str:
    """One row per figure: section (batch, figures, pareto, modality, model, alarm, shift, hour), period,
    name, value. Rates are fractions with full precision; empty cells stand for null."""
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(CSV_HEADER)
    batch = summary.batch
    if batch is not None:
        for name in ("id", "lot", "product", "recipe", "station", "opened_at", "closed_at", "closed_by"):
            writer.writerow(("batch", "", name, _cell(getattr(batch, name))))
    writer.writerows(_figure_rows(summary.figures, "figures", ""))
    for section, periods in (("shift", summary.per_shift), ("hour", summary.per_hour)):
        for period in periods:
            writer.writerows(_figure_rows(period.figures, section, period.period))
    return out.getvalue()


def _figure_rows(figures: Figures, section: str, period: str) -> Iterator[tuple[str, str, str, str]]:
    for name, value in figure_values(figures).items():
        yield section, period, name, _cell(value)
    pareto = "pareto" if section == "figures" else f"{section}-pareto"
    for item in figures.pareto:
        yield pareto, period, item.label, str(item.count)
    if section != "figures":
        return
    for m in figures.modalities:
        for name in ("parts", "ok", "ng", "invalid", "verdicts"):
            yield "modality", m.modality, name, str(getattr(m, name))
    for model in figures.models:
        yield "model", f"{model.model_name}@{model.model_version}", "verdicts", str(model.verdicts)
    for alarm in figures.alarm_kinds:
        yield "alarm", "", alarm.label, str(alarm.count)


def _cell(value: object) -> str:
    return "" if value is None else repr(value) if isinstance(value, float) else str(value)


# -- NG parts --------------------------------------------------------------------------------------
def _ng_parts(conn: sqlite3.Connection, batch_id: int, archive: ImageArchive, limit: int) -> Iterator[NgPart]:
    rows = conn.execute(
        "SELECT q.part_id, p.serial, COALESCE(q.override_label, q.model_label) AS label, v.id, v.score, v.image_ref,"
        " v.heatmap_ref FROM quality_parts q JOIN parts p ON p.id = q.part_id"
        " JOIN verdicts v ON v.id = COALESCE((SELECT MIN(id) FROM verdicts WHERE part_id = q.part_id"
        "   AND id >= q.current_verdict AND decision = 'NG'), q.current_verdict)"
        " WHERE q.batch_id = ? AND COALESCE(q.override_decision, q.model_decision) = 'NG' ORDER BY q.part_id LIMIT ?",
        (batch_id, limit))
    for row in rows:
        image, heatmap = _thumbnail(archive, row[5]), _thumbnail(archive, row[6])
        yield NgPart(int(row[0]), row[1], int(row[3]), pareto_label(row[2]), row[4], image,
                     _overlay(image, heatmap))


def _overlay(image: Image.Image | None, heatmap: Image.Image | None) -> Image.Image | None:
    """The heat map laid over the part (45 %), so the defect shows where it is on the part."""
    if image is None or heatmap is None:
        return heatmap
    return Image.blend(image, heatmap.resize(image.size), 0.45)


def _thumbnail(archive: ImageArchive, ref: str | None) -> Image.Image | None:
    path = archive.resolve(ref) if ref else None
    if path is None:
        return None
    try:
        with Image.open(path) as image:
            image.thumbnail((THUMBNAIL_PX, THUMBNAIL_PX))
            return image.convert("RGB")
    except (OSError, ValueError) as exc:
        log.warning("report thumbnail %s unreadable: %s", path, exc)
        return None


__all__ = ["NgPart", "report_file", "report_path", "summary_csv", "write_report"]
