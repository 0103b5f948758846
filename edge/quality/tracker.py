"""The store listener that keeps batch figures current: every change moves a few counters in the same
transaction as the record (never a scan of the batch's verdicts).

Counting rules (the tests recompute them by brute force from the raw tables):

* A part is counted once, in the batch it was first judged in, in the UTC hour and the shift of its
  first inspection. A re-inspection (the same serial judged again in the batch) replaces the part's
  model decision; it stays one part.
* A part's effective decision is the latest operator override of a verdict of its latest inspection
  (the operator decides the part), else the overall decision of its latest inspection. Per modality,
  the modality's latest verdict, or its override.
* First pass: the first inspection's overall decision was OK and no override ever changed a decision
  of the part (a confirmation does not count as a change).
* Defect Pareto: NG parts by label: the override's label, else the first NG verdict's label of the
  latest inspection; a generic anomaly label (a good-only model's) counts as ``anomaly``.
* Events (verdicts, inspections, overrides, late answers, model versions) count in the periods of the
  part they concern; alarms in every batch open when raised (batch 0 when none is), in the hour raised.
"""

from __future__ import annotations

import json
import logging
import sqlite3
from collections import Counter
from collections.abc import Callable, Iterable
from dataclasses import dataclass, replace

from edge.config import FiguresSettings
from edge.quality.periods import WHOLE, ShiftCalendar, group_key, hour_key
from edge.store import RecordEvent

log = logging.getLogger(__name__)

GENERIC_LABELS = frozenset({"", "anomaly", "anomalous", "abnormal", "good", "ok", "normal", "ng", "defect-free"})
UNLABELLED = "anomaly"
SCORED_DECISIONS = ("OK", "NG")  # INVALID verdicts have no meaningful score


def pareto_label(label: str | None) -> str:
    """The Pareto label of an NG part: its own, or ``anomaly`` for an unnamed or generic one."""
    return UNLABELLED if label is None or label.strip().lower() in GENERIC_LABELS else label


@dataclass(frozen=True)
class PartState:
    part_id: int
    batch_id: int
    ordinal: int
    hour: str
    shift: str
    first_decision: str
    current_verdict: int
    model_decision: str
    model_label: str | None
    override_decision: str | None
    override_label: str | None
    overridden: bool
    inspections: int

    @property
    def decision(self) -> str:
        return self.override_decision or self.model_decision


@dataclass(frozen=True)
class ModalityState:
    modality: str
    verdict_id: int
    decision: str
    override_decision: str | None

    @property
    def decision_now(self) -> str:
        return self.override_decision or self.decision


def part_metrics(part: PartState, modalities: Iterable[ModalityState]) -> Counter[str]:
    """What one part adds to the figures of its batch, hour and shift."""
    decision = part.decision
    metrics: Counter[str] = Counter({"parts": 1, decision.lower(): 1})
    if part.first_decision == "OK" and not part.overridden:
        metrics["first_pass_ok"] += 1
    if part.overridden:
        metrics["overridden_parts"] += 1
    if part.inspections > 1:
        metrics["reinspected_parts"] += 1
    if decision == "NG":
        metrics[f"label:{pareto_label(part.override_label or part.model_label)}"] += 1
    for modality in modalities:
        metrics[f"modality:{modality.modality}:parts"] += 1
        metrics[f"modality:{modality.modality}:{modality.decision_now.lower()}"] += 1
    return metrics


def group_metrics(part: PartState) -> Counter[str]:
    """What one part adds to its p-chart subgroup."""
    return Counter({"parts": 1, part.decision.lower(): 1})


# Figures with a column of their own in quality_totals: per part (scope ''), per modality ("modality:<m>:<name>"
# -> scope <m>) and per model version ("model:<name>@<version>", its verdicts -> scope "model:<name>@<version>").
# Defect labels and alarm kinds are rows of quality_counts.
TOTAL_COLUMNS = ("parts", "ok", "ng", "invalid", "first_pass_ok", "overridden_parts", "reinspected_parts",
                 "inspections", "reinspections", "verdicts", "overrides", "confirmations", "late_answers", "alarms")
_COLUMN = {name: index for index, name in enumerate(TOTAL_COLUMNS)}
_UPSERT_TOTALS = (
    f"INSERT INTO quality_totals (batch_id, period, scope, {', '.join(TOTAL_COLUMNS)}, first_at, last_at)"
    f" VALUES (?, ?, ?{', ?' * len(TOTAL_COLUMNS)}, ?, ?) ON CONFLICT(batch_id, period, scope) DO UPDATE SET "
    + ", ".join(f"{c} = {c} + excluded.{c}" for c in TOTAL_COLUMNS)
    + ", first_at = CASE WHEN first_at IS NULL OR excluded.first_at < first_at THEN excluded.first_at"
      " ELSE first_at END, last_at = CASE WHEN last_at IS NULL OR excluded.last_at > last_at THEN excluded.last_at"
      " ELSE last_at END")
_UPSERT_COUNT = ("INSERT INTO quality_counts (batch_id, period, metric, value) VALUES (?, ?, ?, ?)"
                 " ON CONFLICT(batch_id, period, metric) DO UPDATE SET value = value + excluded.value")


Rows = tuple[list[tuple[object, ...]], list[tuple[object, ...]]]  # quality_totals rows, quality_counts rows


def metric_rows(batch_id: int, periods: Iterable[str], metrics: dict[str, int], at: str | None = None) -> Rows:
    """The counter rows that add signed ``metrics`` to the batch's figures of each period; ``at`` widens the
    periods' time span."""
    scopes: dict[str, list[int]] = {}
    others: list[tuple[str, int]] = []
    for name, amount in metrics.items():
        if not amount:
            continue
        scope, column = "", name
        if name not in _COLUMN:
            kind, _, rest = name.partition(":")
            if kind == "modality":
                scope, _, column = rest.rpartition(":")
            elif kind == "model":
                scope, column = name, "verdicts"
            else:
                others.append((name, amount))
                continue
        values = scopes.setdefault(scope, [0] * len(TOTAL_COLUMNS))
        values[_COLUMN[column]] += amount
    if at is not None:
        scopes.setdefault("", [0] * len(TOTAL_COLUMNS))
    periods = tuple(periods)
    totals: list[tuple[object, ...]] = [
        (batch_id, period, scope, *values, at if scope == "" else None, at if scope == "" else None)
        for period in periods for scope, values in scopes.items()]
    return totals, [(batch_id, period, name, amount) for period in periods for name, amount in others]


def write_metrics(conn: sqlite3.Connection, *rows: Rows) -> None:
    """Write counter rows: one statement for all fixed figures, one for labels and alarm kinds."""
    totals = [row for part in rows for row in part[0]]
    counts = [row for part in rows for row in part[1]]
    if totals:
        conn.executemany(_UPSERT_TOTALS, totals)
    if counts:
        conn.executemany(_UPSERT_COUNT, counts)


_PART_COLUMNS = ("part_id", "batch_id", "ordinal", "hour", "shift", "first_decision", "current_verdict",
                 "model_decision", "model_label", "override_decision", "override_label", "overridden", "inspections")
_SAVE_PART = (f"INSERT OR REPLACE INTO quality_parts ({', '.join(_PART_COLUMNS)}, modalities)"
              f" VALUES ({', '.join('?' * (len(_PART_COLUMNS) + 1))})")


class BatchFigures:
    """``store.add_listener(BatchFigures(settings))``: keeps quality_* tables current (see the module doc).

    ``on_change`` (optional) is told of each event after the figures are written, still inside the
    transaction: it must only note the event (the after-commit worker does the work)."""

    def __init__(self, settings: FiguresSettings, on_change: Callable[[RecordEvent], None] | None = None,
                 good_only: Callable[[str, int], bool] | None = None,
                 on_failure: Callable[[RecordEvent, Exception], None] | None = None) -> None:
        self.settings = settings
        self.shifts = ShiftCalendar.from_settings(settings)
        self.on_change = on_change
        self.good_only = good_only  # (model, version) -> trained on good parts only (its NG label names no defect)
        self.on_failure = on_failure  # told (inside the transaction) when an event's figures had to be skipped
        self.failures = 0
        self._good_only: dict[tuple[str, int], bool] = {}

    def __call__(self, conn: sqlite3.Connection, event: RecordEvent) -> None:
        # The figures never cost the line a verdict: a failure here (a bug, unexpected data) undoes the
        # figures' own writes only, is logged and counted, and the record commits without them.
        conn.execute("SAVEPOINT quality_figures")
        try:
            self._handle(conn, event)
        except Exception as exc:
            conn.execute("ROLLBACK TO quality_figures")
            self.failures += 1
            log.exception("batch figures skipped %s %s %s", event.kind, event.action, event.ids)
            if self.on_failure is not None:
                self.on_failure(event, exc)
        finally:
            conn.execute("RELEASE quality_figures")
        if self.on_change is not None:
            self.on_change(event)

    def _handle(self, conn: sqlite3.Connection, event: RecordEvent) -> None:
        if event.kind == "verdicts":
            self._stored(conn, event.ids)
        elif event.kind == "override":
            self._overridden(conn, event.ids[0], event.action == "overridden")
        elif event.kind == "late_answer":
            self._late(conn, event.ids[0])
        elif event.kind == "alarm" and event.action == "raised":
            self._alarm(conn, event.ids[0])

    # -- events --------------------------------------------------------------------------------
    def _stored(self, conn: sqlite3.Connection, ids: tuple[int, ...]) -> None:
        marks = ", ".join("?" * len(ids))
        rows = conn.execute(
            "SELECT v.id, v.part_id, v.modality, v.decision, v.label, v.score, v.model_name, v.model_version,"
            " v.recipe, v.created_at, p.batch_id, p.decision AS overall, p.inspections"
            f" FROM verdicts v JOIN parts p ON p.id = v.part_id WHERE v.id IN ({marks}) ORDER BY v.id", ids).fetchall()
        if not rows:
            return
        first = rows[0]
        part_id, at, overall = int(first["part_id"]), str(first["created_at"]), str(first["overall"])
        label = next((self._defect_label(r) for r in rows if r["decision"] == "NG"), None)
        first_inspection = int(first["inspections"] or 1) == 1  # the part row was made by this record
        before, old_modalities = (None, {}) if first_inspection else self._part(conn, part_id)
        if before is None:
            batch_id = int(first["batch_id"] or 0)
            ordinal = self._parts(conn, batch_id)
            part = PartState(part_id, batch_id, ordinal, hour_key(at), self.shifts.key(at), overall, int(first["id"]),
                             overall, label, None, None, False, 1)
        else:
            part = replace(before, current_verdict=int(first["id"]), model_decision=overall, model_label=label,
                           override_decision=None, override_label=None, inspections=before.inspections + 1)
        modalities = dict(old_modalities)
        for row in rows:
            modalities[row["modality"]] = ModalityState(row["modality"], int(row["id"]), row["decision"], None)
        self._save(conn, part, modalities.values())
        delta = self._delta(before, old_modalities.values(), part, modalities.values())
        events: Counter[str] = Counter({"inspections": 1, "verdicts": len(rows)})
        if before is not None:
            events["reinspections"] += 1
        for row in rows:
            events[f"modality:{row['modality']}:verdicts"] += 1
            if row["model_name"] is not None:
                events[f"model:{row['model_name']}@{row['model_version'] or 0}"] += 1
        self._apply(conn, part, delta, events, at)
        for row in rows:
            if row["score"] is not None and row["decision"] in SCORED_DECISIONS:
                self._score(conn, part.batch_id, row)

    def _overridden(self, conn: sqlite3.Connection, override_id: int, changed: bool) -> None:
        row = conn.execute("SELECT o.verdict_id, o.decision, o.label, v.part_id, v.modality FROM overrides o"
                           " JOIN verdicts v ON v.id = o.verdict_id WHERE o.id = ?", (override_id,)).fetchone()
        before, old_modalities = (None, {}) if row is None else self._part(conn, int(row["part_id"]))
        if row is None or before is None:
            return  # a part judged before the figures existed
        modalities = dict(old_modalities)
        part = replace(before, overridden=before.overridden or changed)
        verdict_id = int(row["verdict_id"])
        if verdict_id >= before.current_verdict:  # a verdict of the latest inspection: the operator decides
            part = replace(part, override_decision=row["decision"],
                           override_label=row["label"] or before.override_label)
            current = modalities.get(row["modality"])
            if current is not None and current.verdict_id == verdict_id:
                modalities[row["modality"]] = replace(current, override_decision=row["decision"])
        self._save(conn, part, modalities.values())
        delta = self._delta(before, old_modalities.values(), part, modalities.values())
        self._apply(conn, part, delta, Counter({"overrides" if changed else "confirmations": 1}))

    def _late(self, conn: sqlite3.Connection, verdict_id: int) -> None:
        row = conn.execute("SELECT part_id FROM verdicts WHERE id = ?", (verdict_id,)).fetchone()
        part = None if row is None else self._part(conn, int(row[0]))[0]
        if part is not None:
            self._apply(conn, part, ({}, {}), Counter({"late_answers": 1}))

    def _alarm(self, conn: sqlite3.Connection, alarm_id: int) -> None:
        row = conn.execute("SELECT kind, raised_at FROM alarms WHERE id = ?", (alarm_id,)).fetchone()
        if row is None:
            return
        batches = [int(r[0]) for r in conn.execute("SELECT id FROM batches WHERE closed_at IS NULL")] or [0]
        periods = (WHOLE, hour_key(row["raised_at"]), self.shifts.key(row["raised_at"]))
        write_metrics(conn, *(metric_rows(batch, periods, {"alarms": 1, f"alarm:{row['kind']}": 1})
                              for batch in batches))

    def _defect_label(self, row: sqlite3.Row) -> str | None:
        """An NG verdict's label, or None (counted as ``anomaly``) when a good-only model gave it."""
        if self.good_only is None or row["model_name"] is None:
            return row["label"]
        key = (str(row["model_name"]), int(row["model_version"] or 0))
        if key not in self._good_only:  # read once per model version (a manifest file)
            self._good_only[key] = self.good_only(*key)
        return None if self._good_only[key] else row["label"]

    # -- state ---------------------------------------------------------------------------------
    @staticmethod
    def _part(conn: sqlite3.Connection, part_id: int) -> tuple[PartState | None, dict[str, ModalityState]]:
        row = conn.execute(f"SELECT {', '.join(_PART_COLUMNS)}, modalities FROM quality_parts WHERE part_id = ?",
                           (part_id,)).fetchone()
        if row is None:
            return None, {}
        values = list(row)[:-1]
        values[11] = bool(values[11])
        modalities = {m[0]: ModalityState(m[0], int(m[1]), m[2], m[3]) for m in json.loads(row[-1])}
        return PartState(*values), modalities

    @staticmethod
    def _save(conn: sqlite3.Connection, part: PartState, modalities: Iterable[ModalityState]) -> None:
        states = json.dumps([[m.modality, m.verdict_id, m.decision, m.override_decision] for m in modalities])
        conn.execute(_SAVE_PART, (part.part_id, part.batch_id, part.ordinal, part.hour, part.shift,
                                  part.first_decision, part.current_verdict, part.model_decision, part.model_label,
                                  part.override_decision, part.override_label, int(part.overridden),
                                  part.inspections, states))

    @staticmethod
    def _parts(conn: sqlite3.Connection, batch_id: int) -> int:
        row = conn.execute("SELECT parts FROM quality_totals WHERE batch_id = ? AND period = '' AND scope = ''",
                           (batch_id,)).fetchone()
        return 0 if row is None else int(row[0])

    # -- counters ------------------------------------------------------------------------------
    @staticmethod
    def _delta(before: PartState | None, old_modalities: Iterable[ModalityState], after: PartState,
               new_modalities: Iterable[ModalityState]) -> tuple[dict[str, int], dict[str, int]]:
        """(part figures, subgroup figures) that change, as signed amounts."""
        new, new_group = part_metrics(after, new_modalities), group_metrics(after)
        if before is None:
            return dict(new), dict(new_group)
        old, old_group = part_metrics(before, old_modalities), group_metrics(before)
        return _difference(new, old), _difference(new_group, old_group)

    def _apply(self, conn: sqlite3.Connection, part: PartState, delta: tuple[dict[str, int], dict[str, int]],
               events: Counter[str], at: str | None = None) -> None:
        figures, group = delta
        for name, amount in events.items():
            figures[name] = figures.get(name, 0) + amount
        subgroup = (group_key(part.ordinal, self.settings.spc.subgroup_parts),)
        write_metrics(conn, metric_rows(part.batch_id, (WHOLE, part.hour, part.shift), figures, at),
                      metric_rows(part.batch_id, subgroup, group))

    def _score(self, conn: sqlite3.Connection, batch_id: int, row: sqlite3.Row) -> None:
        key = (batch_id, row["modality"], row["model_name"] or "", int(row["model_version"] or 0))
        found = conn.execute("UPDATE quality_series SET points = points + 1, last_at = ? WHERE batch_id = ?"
                             " AND modality = ? AND model_name = ? AND model_version = ? RETURNING id, points",
                             (row["created_at"], *key)).fetchone()
        if found is None:
            series_id = int(conn.execute(
                "INSERT INTO quality_series (batch_id, modality, model_name, model_version, recipe, points, first_at,"
                " last_at) VALUES (?, ?, ?, ?, ?, 1, ?, ?)", (*key, row["recipe"], row["created_at"],
                                                             row["created_at"])).lastrowid or 0)
            seq = 1
        else:
            series_id, seq = int(found[0]), int(found[1])
        conn.execute("INSERT INTO quality_scores (series_id, seq, verdict_id, score, decision, at)"
                     " VALUES (?, ?, ?, ?, ?, ?)", (series_id, seq, row["id"], float(row["score"]), row["decision"],
                                                   row["created_at"]))


def _difference(new: Counter[str], old: Counter[str]) -> dict[str, int]:
    return {name: new.get(name, 0) - old.get(name, 0) for name in set(new) | set(old)
            if new.get(name, 0) != old.get(name, 0)}
