"""Control charts of a batch read from the score series and subgroup counters the listener keeps."""

from __future__ import annotations

import sqlite3
from dataclasses import dataclass

from edge.config import SpcSettings
from edge.quality.periods import GROUP_PREFIX, WHOLE
from edge.quality.spc import (
    Capability,
    Limits,
    Proportion,
    imr_limits,
    p_bar_of,
    p_limits,
    rule_violations,
    standardized,
    upper_capability,
)

RULE_CONTEXT = 7  # earlier points a rule looks back on (rule 4: 8 in a row)


@dataclass(frozen=True)
class ScorePoint:
    seq: int  # 1-based position in the series
    verdict_id: int
    score: float
    decision: str  # the model's decision of that verdict
    at: str
    moving_range: float | None
    rules: tuple[int, ...]  # Western Electric / Nelson rules broken by the run ending here (spc.RULES)


@dataclass(frozen=True)
class ScoreChart:
    """Individuals and moving-range chart of one model version's anomaly scores in a batch."""

    series_id: int
    batch_id: int
    modality: str
    model_name: str
    model_version: int
    total_points: int
    limits: Limits | None
    baseline_complete: bool  # False: limits are provisional (fewer than the baseline's points so far)
    baseline_series: int | None  # the series the limits came from (another batch with baseline_scope=model)
    threshold: float | None
    capability: Capability | None
    points: tuple[ScorePoint, ...]


@dataclass(frozen=True)
class RatePoint:
    subgroup: int  # 0-based
    proportion: Proportion
    complete: bool
    rules: tuple[int, ...]


@dataclass(frozen=True)
class RateChart:
    """p-chart of the NG rate per subgroup of consecutive parts."""

    subgroup_parts: int
    p_bar: float | None
    baseline_subgroups: int
    points: tuple[RatePoint, ...]


@dataclass(frozen=True)
class BatchCharts:
    batch_id: int
    scores: tuple[ScoreChart, ...]
    ng_rate: RateChart


def batch_charts(conn: sqlite3.Connection, batch_id: int, settings: SpcSettings, limit: int = 200) -> BatchCharts:
    """The batch's charts with their last ``limit`` points each (batch 0: parts judged with no batch)."""
    series = conn.execute("SELECT id, modality, model_name, model_version, recipe, points FROM quality_series"
                          " WHERE batch_id = ? ORDER BY id", (batch_id,)).fetchall()
    charts = tuple(_score_chart(conn, batch_id, row, settings, limit) for row in series)
    return BatchCharts(batch_id, charts, _rate_chart(conn, batch_id, settings, limit))


def _score_chart(conn: sqlite3.Connection, batch_id: int, series: sqlite3.Row, settings: SpcSettings,
                 limit: int) -> ScoreChart:
    series_id, total = int(series["id"]), int(series["points"])
    baseline, source = _baseline(conn, series, settings)
    limits = imr_limits(baseline)
    start = max(0, total - limit - RULE_CONTEXT)
    rows = conn.execute("SELECT seq, verdict_id, score, decision, at FROM quality_scores WHERE series_id = ?"
                        " AND seq > ? ORDER BY seq", (series_id, start)).fetchall()
    values = [float(r["score"]) for r in rows]
    rules = rule_violations(values, limits.center, limits.sigma) if limits else [[] for _ in values]
    points = [ScorePoint(int(r["seq"]), int(r["verdict_id"]), values[i], r["decision"], r["at"],
                         abs(values[i] - values[i - 1]) if i else None, tuple(rules[i]))
              for i, r in enumerate(rows)][-limit:] if limit else []
    threshold = None
    if rows:
        found = conn.execute("SELECT threshold FROM verdicts WHERE id = ?", (rows[-1]["verdict_id"],)).fetchone()
        threshold = None if found is None or found[0] is None else float(found[0])
    shown = [p.score for p in points]
    return ScoreChart(series_id, batch_id, series["modality"], series["model_name"], int(series["model_version"]),
                      total, limits, len(baseline) >= settings.baseline_points, source, threshold,
                      upper_capability(shown, threshold) if threshold is not None else None, tuple(points))


def _baseline(conn: sqlite3.Connection, series: sqlite3.Row, settings: SpcSettings) -> tuple[list[float], int | None]:
    """The first scores that set a chart's limits, and the series they came from."""
    source = int(series["id"])
    same = "modality = ? AND model_name = ? AND model_version = ?"
    key = (series["modality"], series["model_name"], series["model_version"])
    if settings.baseline_scope == "model":
        first = conn.execute(f"SELECT id FROM quality_series WHERE {same} ORDER BY id LIMIT 1", key).fetchone()
        source = int(first[0])
    elif settings.baseline_scope == "recipe":
        first = conn.execute(f"SELECT id FROM quality_series WHERE {same} AND recipe IS ? ORDER BY id LIMIT 1",
                             (*key, series["recipe"])).fetchone()
        source = int(first[0])
    rows = conn.execute("SELECT score FROM quality_scores WHERE series_id = ? ORDER BY seq LIMIT ?",
                        (source, settings.baseline_points)).fetchall()
    return [float(r[0]) for r in rows], source


def _rate_chart(conn: sqlite3.Connection, batch_id: int, settings: SpcSettings, limit: int) -> RateChart:
    size = settings.subgroup_parts
    parts = conn.execute("SELECT parts FROM quality_totals WHERE batch_id = ? AND period = ? AND scope = ''",
                         (batch_id, WHOLE)).fetchone()
    last_group = (int(parts[0]) - 1) // size if parts is not None and int(parts[0]) > 0 else -1
    first_shown = max(0, last_group - limit - RULE_CONTEXT + 1)
    groups: dict[int, dict[str, int]] = {}
    for low, high in ((0, settings.baseline_subgroups - 1), (first_shown, last_group)):
        for period, parts_in, ng in conn.execute(
                "SELECT period, parts, ng FROM quality_totals WHERE batch_id = ? AND period BETWEEN ? AND ?"
                " AND scope = ''", (batch_id, f"{GROUP_PREFIX}{low:09d}", f"{GROUP_PREFIX}{high:09d}")):
            groups[int(period[len(GROUP_PREFIX):])] = {"parts": int(parts_in), "ng": int(ng)}
    ordered = sorted(groups)
    counts = [(groups[i].get("parts", 0), groups[i].get("ng", 0)) for i in ordered]
    p_bar = p_bar_of([c for i, c in zip(ordered, counts, strict=True) if i < settings.baseline_subgroups])
    if p_bar is None:
        return RateChart(size, None, settings.baseline_subgroups, ())
    shown = [(i, c) for i, c in zip(ordered, counts, strict=True) if i >= first_shown and c[0] > 0]
    proportions = p_limits(p_bar, [c for _, c in shown])
    rules = rule_violations([standardized(p_bar, p) for p in proportions], 0.0, 1.0)
    points = [RatePoint(i, proportions[k], c[0] >= size, tuple(rules[k])) for k, (i, c) in enumerate(shown)]
    return RateChart(size, p_bar, settings.baseline_subgroups, tuple(points[-limit:] if limit else []))
