"""Batch figures read back from the counters the listener keeps: a batch, a time window, or the
station's current state. One implementation for the QMS routes, the batch report and the station page."""

from __future__ import annotations

import sqlite3
from collections import defaultdict
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from edge.quality.periods import HOUR_PREFIX, SHIFT_PREFIX, WHOLE, hour_keys
from edge.quality.tracker import TOTAL_COLUMNS
from edge.store import Batch, NotFoundError
from edge.store.records import from_row


@dataclass(frozen=True)
class LabelCount:
    label: str
    count: int


@dataclass(frozen=True)
class ModalityFigures:
    modality: str
    parts: int
    ok: int
    ng: int
    invalid: int
    verdicts: int


@dataclass(frozen=True)
class ModelUse:
    model_name: str
    model_version: int
    verdicts: int


@dataclass(frozen=True)
class Figures:
    """The figures of one set of parts (a batch, an hour, a shift, a time window)."""

    parts: int = 0
    ok: int = 0
    ng: int = 0
    invalid: int = 0
    first_pass_ok: int = 0
    overridden_parts: int = 0
    reinspected_parts: int = 0
    inspections: int = 0
    verdicts: int = 0
    overrides: int = 0
    confirmations: int = 0
    late_answers: int = 0
    alarms: int = 0
    pareto: tuple[LabelCount, ...] = ()
    modalities: tuple[ModalityFigures, ...] = ()
    models: tuple[ModelUse, ...] = ()
    alarm_kinds: tuple[LabelCount, ...] = ()
    first_at: str | None = None
    last_at: str | None = None

    @property
    def yield_rate(self) -> float | None:
        """OK parts / parts (INVALID parts are not good parts); None without parts."""
        return self.ok / self.parts if self.parts else None

    @property
    def first_pass_yield(self) -> float | None:
        return self.first_pass_ok / self.parts if self.parts else None

    @property
    def ppm(self) -> float | None:
        """NG parts per million parts."""
        return self.ng * 1_000_000 / self.parts if self.parts else None


@dataclass(frozen=True)
class PeriodFigures:
    period: str  # "2026-12-05T07" (UTC hour) or "2026-12-05/early" (shift, by the day it began)
    figures: Figures


@dataclass(frozen=True)
class Summary:
    """A batch's figures (``batch`` set) or a time window's (``window_hours`` set), with per-shift and
    per-hour figures."""

    figures: Figures
    batch: Batch | None = None
    window_hours: int | None = None
    per_shift: tuple[PeriodFigures, ...] = ()
    per_hour: tuple[PeriodFigures, ...] = ()
    complete: bool = True  # False: some of these parts were judged before the figures existed (an upgrade)
    generated_at: str = field(default_factory=lambda: datetime.now(UTC).isoformat(timespec="seconds"))


_SCALARS = ("parts", "ok", "ng", "invalid", "first_pass_ok", "overridden_parts", "reinspected_parts", "inspections",
            "verdicts", "overrides", "confirmations", "late_answers", "alarms")


def figures_from(counts: Mapping[str, int], first_at: str | None = None, last_at: str | None = None) -> Figures:
    """Figures from counter values by metric name (see edge.quality.tracker)."""
    labels: list[LabelCount] = []
    alarm_kinds: list[LabelCount] = []
    models: list[ModelUse] = []
    modal: dict[str, dict[str, int]] = defaultdict(dict)
    for metric, value in counts.items():
        kind, _, rest = metric.partition(":")
        if kind == "label" and value:
            labels.append(LabelCount(rest, value))
        elif kind == "alarm" and value:
            alarm_kinds.append(LabelCount(rest, value))
        elif kind == "model" and value:
            name, _, version = rest.rpartition("@")
            models.append(ModelUse(name, int(version or 0), value))
        elif kind == "modality":
            name, _, what = rest.rpartition(":")
            modal[name][what] = value
    modalities = tuple(ModalityFigures(name, v.get("parts", 0), v.get("ok", 0), v.get("ng", 0), v.get("invalid", 0),
                                       v.get("verdicts", 0)) for name, v in sorted(modal.items()) if v.get("parts"))
    return Figures(**{name: int(counts.get(name, 0)) for name in _SCALARS},
                   pareto=tuple(sorted(labels, key=lambda x: (-x.count, x.label))),
                   modalities=modalities, models=tuple(sorted(models, key=lambda m: (m.model_name, m.model_version))),
                   alarm_kinds=tuple(sorted(alarm_kinds, key=lambda x: (-x.count, x.label))),
                   first_at=first_at, last_at=last_at)


def batch_summary(conn: sqlite3.Connection, batch_id: int) -> Summary:
    """The figures of one batch (NotFoundError when there is no such batch)."""
    row = conn.execute("SELECT * FROM batches WHERE id = ?", (batch_id,)).fetchone() if 0 < batch_id < 2**63 else None
    if row is None:
        raise NotFoundError(f"batch {batch_id} does not exist")
    batch = from_row(Batch, row)
    counts: dict[str, dict[str, int]] = defaultdict(dict)
    spans: dict[str, tuple[str, str]] = {}
    for row in conn.execute(f"SELECT period, scope, {_COLUMNS}, first_at, last_at FROM quality_totals"
                            " WHERE batch_id = ? AND period NOT LIKE 'g:%'", (batch_id,)):
        _add_totals(counts[row[0]], row)
        if row[1] == "" and row[-2] is not None:
            spans[row[0]] = (row[-2], row[-1])
    for period, metric, value in conn.execute(
            "SELECT period, metric, value FROM quality_counts WHERE batch_id = ? AND period NOT LIKE 'g:%'",
            (batch_id,)):
        counts[period][metric] = int(value)
    return Summary(_figures(counts.get(WHOLE, {}), spans.get(WHOLE)), batch=batch,
                   per_shift=_periods(counts, spans, SHIFT_PREFIX), per_hour=_periods(counts, spans, HOUR_PREFIX),
                   complete=_counted_since_open(conn, batch.opened_at))


def window_summary(conn: sqlite3.Connection, hours: int, end: datetime | None = None) -> Summary:
    """The figures of the parts first judged in the last ``hours`` UTC hours (this one included), in or
    out of batches."""
    keys = hour_keys(end or datetime.now(UTC), hours)
    marks = ", ".join("?" * len(keys))
    counts: dict[str, dict[str, int]] = defaultdict(lambda: defaultdict(int))
    sums = ", ".join(f"SUM({c})" for c in TOTAL_COLUMNS)
    spans: dict[str, tuple[str, str]] = {}
    for row in conn.execute(f"SELECT period, scope, {sums}, MIN(first_at), MAX(last_at) FROM quality_totals"
                            f" WHERE period IN ({marks}) GROUP BY period, scope", keys):
        _add_totals(counts[row[0]], row)
        _add_totals(counts[WHOLE], row)
        if row[1] == "" and row[-2] is not None:
            spans[row[0]] = (row[-2], row[-1])
    for period, metric, value in conn.execute(
            f"SELECT period, metric, SUM(value) FROM quality_counts WHERE period IN ({marks}) GROUP BY period, metric",
            keys):
        counts[period][metric] += int(value)
        counts[WHOLE][metric] += int(value)
    whole = (min((s[0] for s in spans.values()), default=None), max((s[1] for s in spans.values()), default=None))
    return Summary(_figures(counts.get(WHOLE, {}), whole), window_hours=hours,
                   per_hour=_periods(counts, spans, HOUR_PREFIX))


def current_summary(conn: sqlite3.Connection, station: str, hours: int) -> Summary:
    """The station page's and the QMS's "now": the station's open batch, else the last ``hours`` hours."""
    row = conn.execute("SELECT id FROM batches WHERE station = ? AND closed_at IS NULL ORDER BY id DESC LIMIT 1",
                       (station,)).fetchone()
    return batch_summary(conn, int(row[0])) if row is not None else window_summary(conn, hours)


def _counted_since_open(conn: sqlite3.Connection, opened_at: str) -> bool:
    """Whether the figures saw all of a batch: it opened after they began (not before a database upgrade)."""
    row = conn.execute("SELECT value FROM quality_meta WHERE key = 'started_at'").fetchone()
    return row is None or opened_at >= str(row[0])


_COLUMNS = ", ".join(TOTAL_COLUMNS)
_MODALITY_COLUMNS = ("parts", "ok", "ng", "invalid", "verdicts")


def _add_totals(into: dict[str, int], row: Sequence[Any]) -> None:
    """Add a quality_totals row (period, scope, *TOTAL_COLUMNS, ...) to a metric -> value dict."""
    scope = str(row[1])
    values = row[2:2 + len(TOTAL_COLUMNS)]
    if scope.startswith("model:"):
        into[scope] = into.get(scope, 0) + int(values[TOTAL_COLUMNS.index("verdicts")])
        return
    for name, value in zip(TOTAL_COLUMNS, values, strict=True):
        if not scope:
            into[name] = into.get(name, 0) + int(value)
        elif name in _MODALITY_COLUMNS:
            key = f"modality:{scope}:{name}"
            into[key] = into.get(key, 0) + int(value)


def _figures(counts: Mapping[str, int], span: tuple[str | None, str | None] | None) -> Figures:
    first_at, last_at = span or (None, None)
    return figures_from(counts, first_at, last_at)


def _periods(counts: Mapping[str, Mapping[str, int]], spans: Mapping[str, tuple[str, str]],
             prefix: str) -> tuple[PeriodFigures, ...]:
    keys: Iterable[str] = sorted(k for k in counts if k.startswith(prefix))
    return tuple(PeriodFigures(k[len(prefix):], _figures(counts[k], spans.get(k))) for k in keys
                 if counts[k].get("parts") or counts[k].get("alarms"))


def figures_record(figures: Figures) -> dict[str, Any]:
    """Figures as JSON-ready values under the names the QMS routes, the CSV and upstream messages use."""
    return {
        "parts": figures.parts, "ok": figures.ok, "ng": figures.ng, "invalid": figures.invalid,
        "yield": figures.yield_rate, "first_pass_yield": figures.first_pass_yield, "ppm": figures.ppm,
        "pareto": [{"label": p.label, "count": p.count} for p in figures.pareto],
        "first_pass_ok": figures.first_pass_ok, "overridden_parts": figures.overridden_parts,
        "reinspected_parts": figures.reinspected_parts, "inspections": figures.inspections,
        "verdicts": figures.verdicts, "overrides": figures.overrides, "confirmations": figures.confirmations,
        "late_answers": figures.late_answers, "alarms": figures.alarms,
        "alarm_kinds": [{"label": a.label, "count": a.count} for a in figures.alarm_kinds],
        "modalities": [{"modality": m.modality, "parts": m.parts, "ok": m.ok, "ng": m.ng, "invalid": m.invalid,
                        "verdicts": m.verdicts} for m in figures.modalities],
        "models": [{"model_name": m.model_name, "model_version": m.model_version, "verdicts": m.verdicts}
                   for m in figures.models],
        "first_at": figures.first_at, "last_at": figures.last_at,
    }


def summary_record(summary: Summary) -> dict[str, Any]:
    """A summary as one JSON-ready object: the body of GET /api/v1/batches/{id}/summary, for the station
    page and for messages to the plant (edge.upstream) alike."""
    batch = summary.batch
    return {
        **figures_record(summary.figures),
        "batch_id": batch.id if batch else None, "lot": batch.lot if batch else None,
        "product": batch.product if batch else None, "recipe": batch.recipe if batch else None,
        "status": "window" if batch is None else ("open" if batch.closed_at is None else "closed"),
        "opened_at": batch.opened_at if batch else None, "closed_at": batch.closed_at if batch else None,
        "window_hours": summary.window_hours, "complete": summary.complete, "generated_at": summary.generated_at,
        "per_shift": [{"period": p.period, **figures_record(p.figures)} for p in summary.per_shift],
        "per_hour": [{"period": p.period, **figures_record(p.figures)} for p in summary.per_hour],
    }
