"""What the station starts for the QMS figures: the store listener, and one worker thread that acts
after commits (SPC drift alarms, batch reports), so nothing slow runs inside the writer's transaction."""

from __future__ import annotations

import logging
import sqlite3
import threading
import time
from pathlib import Path

from edge.archive import ImageArchive
from edge.config import StationConfig
from edge.quality.charts import RateChart, ScoreChart, batch_charts
from edge.quality.reports import write_report
from edge.quality.spc import RULES
from edge.quality.tracker import BatchFigures
from edge.store import RecordEvent, StoreUnavailableError, VerdictStore
from edge.store.chain import utc_now
from models.manifest import ManifestError
from models.registry import ModelRegistry

log = logging.getLogger(__name__)

ALARM_KIND = "spc_drift"
ALARM_WINDOW = 30  # latest points per chart a drift check looks at
REPORT_WAIT_S = 30.0  # how long a closed batch may take to show as committed before it is given up
REPORT_RETRY_S = 0.2
STORE_START_WAIT_S = 120.0  # attach_quality runs just before store.start()


class QualityService:
    """Owns the listener and the after-commit worker of one store."""

    def __init__(self, store: VerdictStore, config: StationConfig) -> None:
        self.store = store
        self.config = config
        self.settings = config.figures
        self.reports_dir: Path = config.data_dir / "reports"
        self._wake = threading.Event()
        self._lock = threading.Lock()
        self._closed_batches: list[int] = []
        self._changed_before: int | None = None  # writer commits before the oldest change not yet checked
        self._last_check = 0.0
        self._pending: list[tuple[int, float]] = []  # closed batches awaiting their report, with a deadline
        self._rate_alarmed: dict[int, int] = {}  # last p-chart subgroup alarmed, per batch
        self._archive = ImageArchive(config.data_dir, config.storage.save_images)
        self._registry = ModelRegistry(config.data_dir / "models")
        self._thread = threading.Thread(target=self._run, name="quality-worker", daemon=True)

    def attach(self) -> QualityService:
        self.store.add_listener(BatchFigures(self.settings, self._note, self._good_only, self._figures_failed))
        self._thread.start()
        return self

    def _good_only(self, name: str, version: int) -> bool:
        """Whether a model version was trained on good parts only (an anomaly model): its NG label names no
        defect. Unknown versions count as classifiers (their labels are kept)."""
        try:
            return self._registry.manifest(name, version).kind.endswith("anomaly")
        except (ManifestError, LookupError, OSError):
            return False

    def _figures_failed(self, event: RecordEvent, error: Exception) -> None:
        """Inside the writer's transaction: the figures skipped an event. Queue an alarm (not waited for:
        it commits in a later transaction) so the QMS figures are known to be incomplete."""
        try:
            self.store.raise_alarm("figures_incomplete", f"batch figures skipped a change ({event.kind} {event.action} "
                                   f"{list(event.ids)}): {type(error).__name__}: {error}; the record itself is "
                                   "stored. Report this as a bug.", "warning", "quality")
        except StoreUnavailableError:
            log.error("could not queue the figures_incomplete alarm")

    def _note(self, event: RecordEvent) -> None:
        """Inside the writer's transaction: only note what the worker should look at after the commit."""
        with self._lock:
            if event.kind == "batch" and event.action == "closed":
                self._closed_batches.append(event.ids[0])
            elif event.kind in ("verdicts", "override") and self._changed_before is None:
                self._changed_before = self.store.writer.commits  # checked once the writer commits past it
        self._wake.set()

    def _run(self) -> None:
        started = False
        give_up = time.monotonic() + STORE_START_WAIT_S  # a station whose start failed never starts its store
        while True:
            soon = self._pending or self._changed_before is not None
            self._wake.wait(REPORT_RETRY_S if soon else self.settings.spc.check_interval_s)
            self._wake.clear()
            if not self.store.writer.alive:
                if started or time.monotonic() > give_up:
                    return  # the store stopped (or never started): so does the worker
                continue
            if not started:
                started = True
                self._catch_up()
            try:
                self._work()
            except StoreUnavailableError:
                return
            except Exception:  # a bug here must not end drift checks and reports for good
                log.exception("the quality worker failed; it carries on")

    def _catch_up(self) -> None:
        """Reports of batches closed while the service was down (or before a crash)."""
        rows = self.store.reader().execute(
            "SELECT id FROM batches WHERE closed_at IS NOT NULL AND id NOT IN (SELECT batch_id FROM quality_reports)"
            " ORDER BY id DESC LIMIT 20").fetchall()
        self._pending.extend((int(r[0]), time.monotonic() + REPORT_WAIT_S) for r in reversed(rows))

    def _work(self) -> None:
        with self._lock:
            closed, self._closed_batches = self._closed_batches, []
        self._pending.extend((batch_id, time.monotonic() + REPORT_WAIT_S) for batch_id in closed)
        self._write_reports()
        now = time.monotonic()
        with self._lock:
            # told inside the writer's transaction: look only once that transaction has committed, and at
            # most once per check interval
            changed = (self._changed_before is not None and self.store.writer.commits > self._changed_before
                       and now - self._last_check >= self.settings.spc.check_interval_s)
            if changed:
                self._changed_before = None
        if changed and self.settings.spc.alarm:
            self._last_check = now
            self._check_drift()

    # -- batch reports ---------------------------------------------------------------------------
    def _write_reports(self) -> None:
        waiting: list[tuple[int, float]] = []
        conn = self.store.reader()
        for batch_id, deadline in self._pending:
            row = conn.execute("SELECT closed_at FROM batches WHERE id = ?", (batch_id,)).fetchone()
            if row is None or row[0] is None:
                # told inside the close's transaction: not committed yet, or rolled back
                if time.monotonic() < deadline:
                    waiting.append((batch_id, deadline))
                continue
            self.write_report(batch_id)
        self._pending = waiting

    def write_report(self, batch_id: int) -> None:
        """Write a closed batch's report files and record them (or why they could not be written)."""
        error = None
        try:
            write_report(self.store.reader(), self.config.data_dir, batch_id, self.settings, self._archive)
        except Exception as exc:  # recorded and shown by the download routes; never retried in a loop
            error = f"{type(exc).__name__}: {exc}"
            log.exception("batch %d report: %s", batch_id, error)
        now = utc_now()

        def record(conn: sqlite3.Connection) -> None:
            conn.execute("INSERT OR REPLACE INTO quality_reports (batch_id, pdf, csv, generated_at, error)"
                         " VALUES (?, ?, ?, ?, ?)", (batch_id, None if error else f"reports/batch-{batch_id}.pdf",
                                                     None if error else f"reports/batch-{batch_id}.csv", now, error))

        self.store.submit(record).result()

    # -- SPC alarms ------------------------------------------------------------------------------
    def _check_drift(self) -> None:
        """Alarm when an open batch's charts break a run rule: the process drifts before parts fail."""
        conn = self.store.reader()
        for (batch_id,) in conn.execute("SELECT id FROM batches WHERE station = ? AND closed_at IS NULL",
                                        (self.config.station.id,)).fetchall():
            charts = batch_charts(conn, int(batch_id), self.settings.spc, ALARM_WINDOW)
            for chart in charts.scores:
                self._score_alarm(conn, int(batch_id), chart)
            self._rate_alarm(int(batch_id), charts.ng_rate)

    def _score_alarm(self, conn: sqlite3.Connection, batch_id: int, chart: ScoreChart) -> None:
        if chart.limits is None or not chart.baseline_complete:
            return
        row = conn.execute("SELECT alarmed_seq FROM quality_series WHERE id = ?", (chart.series_id,)).fetchone()
        alarmed = int(row[0]) if row is not None else 0
        new = [p for p in chart.points if p.seq > alarmed and drifting(p.rules, p.decision)]
        if not new:
            return
        last = new[-1]
        rules = sorted({r for p in new for r in p.rules if r != 1 or p.decision == "OK"})
        message = (f"SPC: {chart.modality} scores of {chart.model_name} v{chart.model_version} in batch {batch_id} "
                   f"drift: {'; '.join(f'rule {r} ({RULES[r]})' for r in rules)}, last at verdict {last.verdict_id} "
                   f"(score {last.score:.4g}, limits {chart.limits.lcl:.4g}..{chart.limits.ucl:.4g}); parts may still "
                   "pass: check lighting, the lens, material and the model (GET /api/v1/spc)")
        self.store.raise_alarm(ALARM_KIND, message, "warning",
                               f"batch:{batch_id}:{chart.modality}:{chart.model_name}@{chart.model_version}").result()
        self.store.submit(lambda c: c.execute("UPDATE quality_series SET alarmed_seq = ? WHERE id = ?",
                                              (last.seq, chart.series_id))).result()

    def _rate_alarm(self, batch_id: int, chart: RateChart) -> None:
        if chart.p_bar is None:
            return
        done = self._rate_alarmed.get(batch_id, -1)
        new = [p for p in chart.points if p.complete and p.subgroup > done and p.rules
               and p.proportion.p > chart.p_bar and p.subgroup >= chart.baseline_subgroups]
        if not new:
            return
        last = new[-1]
        self._rate_alarmed[batch_id] = last.subgroup
        self.store.raise_alarm(ALARM_KIND, f"SPC: NG rate of batch {batch_id} out of control: {last.proportion.p:.1%} "
                               f"in parts {last.subgroup * chart.subgroup_parts + 1}.."
                               f"{(last.subgroup + 1) * chart.subgroup_parts} (centre {chart.p_bar:.1%}, "
                               f"upper limit {last.proportion.ucl:.1%}; rules {sorted(set(last.rules))})",
                               "warning", f"batch:{batch_id}:ng-rate").result()


def drifting(rules: tuple[int, ...], decision: str) -> bool:
    """A point that signals drift: a run rule (2-5), or rule 1 on a part the model still judged OK (a score
    beyond the control limit but below the threshold). Rule 1 on an NG part is a defect, not drift: it is
    counted in the figures and the p-chart."""
    return any(r != 1 for r in rules) or (1 in rules and decision == "OK")


def attach_quality(store: VerdictStore, config: StationConfig) -> QualityService:
    """Register the batch figures listener on ``store`` (before it starts) and start the worker."""
    return QualityService(store, config).attach()
