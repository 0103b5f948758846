"""The batch report's PDF, drawn with fpdf2's own primitives (no plotting library)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

from fpdf import FPDF

from edge.quality.charts import BatchCharts, RateChart, ScoreChart
from edge.quality.spc import RULES
from edge.quality.summary import Figures, Summary

if TYPE_CHECKING:
    from edge.quality.reports import NgPart

RED = (200, 30, 30)
GREY = (120, 120, 120)
BLUE = (30, 80, 170)
GREEN = (20, 130, 60)


def render_pdf(summary: Summary, charts: BatchCharts, ng_parts: Sequence[NgPart]) -> bytes:
    pdf = FPDF(format="A4")
    pdf.set_auto_page_break(True, margin=15)
    pdf.set_title(_title(summary))
    pdf.set_creator("edge-inspect")
    pdf.add_page()
    pdf.set_font("Helvetica", "B", 16)
    pdf.cell(0, 10, _text(_title(summary)), new_x="LMARGIN", new_y="NEXT")
    _batch_lines(pdf, summary)
    _figures_table(pdf, summary.figures)
    _pareto(pdf, summary.figures)
    _periods(pdf, summary)
    for chart in charts.scores:
        _score_chart(pdf, chart)
    _rate_chart(pdf, charts.ng_rate)
    _thumbnails(pdf, ng_parts)
    return bytes(pdf.output())


def _title(summary: Summary) -> str:
    batch = summary.batch
    return f"Batch report: batch {batch.id}, lot {batch.lot}" if batch else "Station report"


def _text(value: object) -> str:
    """Core PDF fonts hold Latin-1 only: anything else is replaced, never an error."""
    return str(value).encode("latin-1", "replace").decode("latin-1")


def _heading(pdf: FPDF, text: str) -> None:
    if pdf.get_y() > 250:
        pdf.add_page()
    pdf.ln(3)
    pdf.set_font("Helvetica", "B", 12)
    pdf.cell(0, 8, _text(text), new_x="LMARGIN", new_y="NEXT")
    pdf.set_font("Helvetica", "", 9)


def _batch_lines(pdf: FPDF, summary: Summary) -> None:
    pdf.set_font("Helvetica", "", 9)
    batch = summary.batch
    lines = []
    if batch is not None:
        lines = [f"Station {batch.station}   product {batch.product or '-'}   recipe {batch.recipe or '-'}",
                 f"Opened {batch.opened_at} by {batch.operator or '-'}",
                 f"Closed {batch.closed_at or '(open)'} by {batch.closed_by or '-'}"]
    lines.append(f"Figures as of {summary.generated_at}; first verdict {summary.figures.first_at or '-'}, "
                 f"last {summary.figures.last_at or '-'}")
    for line in lines:
        pdf.cell(0, 5, _text(line), new_x="LMARGIN", new_y="NEXT")


def _rate(value: float | None) -> str:
    return "-" if value is None else f"{value:.2%}"


def _figures_table(pdf: FPDF, figures: Figures) -> None:
    _heading(pdf, "Figures")
    rows = [("Parts", figures.parts), ("OK", figures.ok), ("NG", figures.ng), ("INVALID", figures.invalid),
            ("Yield (OK / parts)", _rate(figures.yield_rate)),
            ("First-pass yield", _rate(figures.first_pass_yield)),
            ("PPM defective (NG per million parts)", "-" if figures.ppm is None else f"{figures.ppm:,.0f}"),
            ("Re-inspected parts", figures.reinspected_parts), ("Operator overrides (changed)", figures.overrides),
            ("Operator confirmations", figures.confirmations), ("Late answers (fail-safe)", figures.late_answers),
            ("Alarms while open", figures.alarms),
            ("Model versions", ", ".join(f"{m.model_name} v{m.model_version} ({m.verdicts})"
                                         for m in figures.models) or "-")]
    rows += [(f"{m.modality}: parts / OK / NG / INVALID", f"{m.parts} / {m.ok} / {m.ng} / {m.invalid}")
             for m in figures.modalities]
    for name, value in rows:
        pdf.cell(80, 5, _text(name), border="B")
        pdf.cell(0, 5, _text(value), border="B", new_x="LMARGIN", new_y="NEXT")


def _pareto(pdf: FPDF, figures: Figures) -> None:
    _heading(pdf, "Defect Pareto (NG parts by label)")
    if not figures.pareto:
        pdf.cell(0, 5, "No NG parts.", new_x="LMARGIN", new_y="NEXT")
        return
    top = figures.pareto[0].count
    total = sum(item.count for item in figures.pareto)
    cumulative = 0
    for item in figures.pareto[:15]:
        cumulative += item.count
        x, y = pdf.get_x(), pdf.get_y()
        pdf.cell(40, 6, _text(item.label))
        pdf.set_fill_color(*BLUE)
        pdf.rect(x + 42, y + 1, 100 * item.count / top, 4, style="F")
        pdf.set_x(x + 146)
        pdf.cell(0, 6, f"{item.count}   ({cumulative / total:.0%} cumulative)", new_x="LMARGIN", new_y="NEXT")


def _periods(pdf: FPDF, summary: Summary) -> None:
    for title, periods in (("Per shift", summary.per_shift), ("Per hour (UTC)", summary.per_hour[-48:])):
        if not periods:
            continue
        _heading(pdf, title)
        widths = (40, 22, 22, 22, 22, 24, 24)
        pdf.set_font("Helvetica", "B", 9)
        for width, name in zip(widths, ("period", "parts", "OK", "NG", "INVALID", "yield", "FPY"), strict=True):
            pdf.cell(width, 5, name, border="B")
        pdf.ln()
        pdf.set_font("Helvetica", "", 9)
        for period in periods:
            f = period.figures
            values = (period.period, f.parts, f.ok, f.ng, f.invalid, _rate(f.yield_rate), _rate(f.first_pass_yield))
            for width, value in zip(widths, values, strict=True):
                pdf.cell(width, 5, _text(value))
            pdf.ln()


def _frame(pdf: FPDF, height: float = 50) -> tuple[float, float, float, float]:
    if pdf.get_y() + height + 10 > 280:
        pdf.add_page()
    x, y, w = pdf.l_margin, pdf.get_y() + 2, pdf.w - pdf.l_margin - pdf.r_margin
    pdf.set_draw_color(*GREY)
    pdf.rect(x, y, w, height)
    pdf.set_y(y + height + 2)
    return x, y, w, height


def _score_chart(pdf: FPDF, chart: ScoreChart) -> None:
    _heading(pdf, f"Individuals chart: {chart.modality} scores, {chart.model_name} v{chart.model_version}")
    limits = chart.limits
    if limits is None or not chart.points:
        pdf.cell(0, 5, "Too few scored verdicts for control limits.", new_x="LMARGIN", new_y="NEXT")
        return
    values = [p.score for p in chart.points]
    lines = [("CL", limits.center, GREEN), ("UCL", limits.ucl, RED), ("LCL", limits.lcl, RED)]
    if chart.threshold is not None:
        lines.append(("threshold", chart.threshold, GREY))
    low = min([*values, *(v for _, v, _ in lines)])
    high = max([*values, *(v for _, v, _ in lines)])
    x, y, w, h = _frame(pdf)
    span = (high - low) or 1.0

    def at(i: int, v: float) -> tuple[float, float]:
        return x + 2 + (w - 30) * (i / max(1, len(values) - 1)), y + h - 2 - (h - 4) * (v - low) / span

    pdf.set_font("Helvetica", "", 7)
    for name, value, colour in lines:
        pdf.set_draw_color(*colour)
        _, line_y = at(0, value)
        pdf.line(x + 2, line_y, x + w - 28, line_y)
        pdf.text(x + w - 26, line_y + 1, _text(f"{name} {value:.4g}"))
    pdf.set_draw_color(*BLUE)
    for i in range(1, len(values)):
        pdf.line(*at(i - 1, values[i - 1]), *at(i, values[i]))
    pdf.set_fill_color(*RED)
    for i, point in enumerate(chart.points):
        if point.rules:
            px, py = at(i, point.score)
            pdf.circle(x=px, y=py, radius=0.8, style="F")
    broken = sorted({r for p in chart.points for r in p.rules})
    pdf.set_font("Helvetica", "", 8)
    note = (f"Last {len(values)} of {chart.total_points} scores; limits from {limits.baseline_points} baseline "
            f"points{'' if chart.baseline_complete else ' (provisional)'}. ")
    if chart.capability is not None and chart.capability.cpk is not None:
        note += f"Cpk against the threshold (upper limit only, so Cp is undefined): {chart.capability.cpk:.2f}. "
    note += "Red: " + ("; ".join(f"rule {r}: {RULES[r]}" for r in broken) if broken else "no rule broken") + "."
    pdf.multi_cell(0, 4, _text(note), new_x="LMARGIN", new_y="NEXT")


def _rate_chart(pdf: FPDF, chart: RateChart) -> None:
    _heading(pdf, f"p-chart: NG rate per {chart.subgroup_parts} parts")
    if chart.p_bar is None or not chart.points:
        pdf.cell(0, 5, "Too few parts for a p-chart.", new_x="LMARGIN", new_y="NEXT")
        return
    points = [p for p in chart.points if p.complete]  # a subgroup still filling has limits far apart
    if not points:
        pdf.cell(0, 5, "No complete subgroup yet.", new_x="LMARGIN", new_y="NEXT")
        return
    high = max([chart.p_bar, *(p.proportion.ucl for p in points), *(p.proportion.p for p in points)]) or 1.0
    x, y, w, h = _frame(pdf)

    def at(i: int, v: float) -> tuple[float, float]:
        return x + 2 + (w - 30) * (i / max(1, len(points) - 1)), y + h - 2 - (h - 4) * v / high

    pdf.set_draw_color(*GREEN)
    pdf.line(*at(0, chart.p_bar), *at(len(points) - 1, chart.p_bar))
    pdf.set_font("Helvetica", "", 7)
    pdf.text(x + w - 26, at(0, chart.p_bar)[1] + 1, f"p {chart.p_bar:.3%}")
    pdf.set_draw_color(*RED)
    for i in range(1, len(points)):
        pdf.line(*at(i - 1, points[i - 1].proportion.ucl), *at(i, points[i].proportion.ucl))
    pdf.set_draw_color(*BLUE)
    for i in range(1, len(points)):
        pdf.line(*at(i - 1, points[i - 1].proportion.p), *at(i, points[i].proportion.p))
    for i, point in enumerate(points):
        pdf.set_fill_color(*(RED if point.rules else BLUE))
        px, py = at(i, point.proportion.p)
        pdf.circle(x=px, y=py, radius=0.8, style="F")
    pdf.set_font("Helvetica", "", 8)
    pdf.multi_cell(0, 4, _text(f"Last {len(points)} subgroups; centre line from the first {chart.baseline_subgroups}; "
                               "red line: upper limit; red points break a rule."), new_x="LMARGIN", new_y="NEXT")


def _thumbnails(pdf: FPDF, parts: Sequence[NgPart]) -> None:
    _heading(pdf, "NG parts: image, and heat map over it")
    if not parts:
        pdf.cell(0, 5, "No NG parts, or none with a kept image.", new_x="LMARGIN", new_y="NEXT")
        return
    size, column = 28.0, 0
    pdf.set_font("Helvetica", "", 7)
    for part in parts:
        if column == 0 and pdf.get_y() + size + 10 > 280:
            pdf.add_page()
        x = pdf.l_margin + column * 2 * (size + 6)
        y = pdf.get_y()
        for offset, image in ((0.0, part.image), (size + 1, part.heatmap)):
            if image is not None:
                pdf.image(image, x=x + offset, y=y, w=size, h=size, keep_aspect_ratio=True)
            else:
                pdf.set_draw_color(*GREY)
                pdf.rect(x + offset, y, size, size)
        score = "" if part.score is None else f" {part.score:.3g}"
        pdf.text(x, y + size + 3, _text(f"{part.serial[:18]} {part.label}{score}"))
        column = (column + 1) % 3
        if column == 0:
            pdf.set_y(y + size + 6)
    if column:
        pdf.set_y(pdf.get_y() + size + 6)
