"""Retraining jobs from the collected samples: one at a time, in edge.training's separate low-priority
process, with progress, an estimate of the time left and cancellation. The candidate is registered, never
promoted. A job's row (``training_jobs``) survives page reloads; one a restart found running is marked
interrupted (the registry only ever holds complete versions)."""

from __future__ import annotations

import json
import logging
import sqlite3
import threading
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Literal

from edge.archive import ImageArchive
from edge.config import StationConfig
from edge.store import ConflictError, NotFoundError, VerdictStore
from edge.store.chain import append_audit, utc_now
from edge.store.records import SYSTEM_ACTOR
from edge.store.store import valid_id
from edge.training import TrainingCancelled, TrainingError, train
from edge.workbench.samples import GOOD, SampleError
from models.registry import ModelRegistry
from vision.anomaly import MIN_GOOD_IMAGES
from vision.classifier import MIN_IMAGES_PER_LABEL

log = logging.getLogger(__name__)

Mode = Literal["good-only", "labelled"]
ACTIVE_STATES = ("queued", "running")
PROGRESS_EVERY_S = 1.0  # how often a running job's progress is written to its row


class TooFewSamples(SampleError):
    """Not enough usable samples to train; the message says how many are needed and how many there are."""


@dataclass(frozen=True)
class TrainingJob:
    id: int
    model_name: str
    mode: str
    state: str
    fraction: float
    stage: str | None
    eta_s: float | None
    requested_by: str
    created_at: str
    started_at: str | None
    finished_at: str | None
    trained_on: dict[str, list[int]]
    held_out: dict[str, list[int]]
    candidate_version: int | None
    base_version: int | None
    error: str | None


def _job(row: sqlite3.Row) -> TrainingJob:
    values = dict(row)
    values["trained_on"] = json.loads(values["trained_on"])
    values["held_out"] = json.loads(values["held_out"])
    return TrainingJob(**values)


def split_held_out(ids: list[int], fraction: float) -> tuple[list[int], list[int]]:
    """(trained on, held out) of one label's sample ids: every k-th in id order is held out (k = 1/fraction),
    so a sample keeps its side while newer ones are added."""
    step = max(2, round(1.0 / fraction))
    ordered = sorted(ids)
    held = [sample for index, sample in enumerate(ordered) if index % step == step - 1]
    return [sample for sample in ordered if sample not in set(held)], held


def plan(conn: sqlite3.Connection, mode: Mode, fraction: float, archive: ImageArchive) -> tuple[
        dict[str, list[int]], dict[str, list[int]]]:
    """Which usable samples (labelled, not excluded, image on disk) train and which are held out, per label;
    raises TooFewSamples with the counts a technician can act on."""
    by_label: dict[str, list[int]] = {}
    for row in conn.execute("SELECT id, label, image_ref FROM samples WHERE excluded = 0 AND label IS NOT NULL"
                            " AND image_ref IS NOT NULL ORDER BY id"):
        if archive.resolve(row["image_ref"]) is not None:
            by_label.setdefault(row["label"], []).append(int(row["id"]))
    trained: dict[str, list[int]] = {}
    held: dict[str, list[int]] = {}
    for label, ids in by_label.items():
        trained[label], held[label] = split_held_out(ids, fraction)
    good = len(trained.get(GOOD, []))
    defects = {label: ids for label, ids in trained.items() if label != GOOD}
    if mode == "good-only":
        if good < MIN_GOOD_IMAGES:
            raise TooFewSamples(f"retraining needs at least {MIN_GOOD_IMAGES} good parts, have {good} (besides "
                                f"{len(held.get(GOOD, []))} held back to compare on): label more samples 'good'")
        return {GOOD: trained.get(GOOD, [])}, held
    needed = MIN_GOOD_IMAGES + MIN_IMAGES_PER_LABEL
    if not defects:
        raise TooFewSamples("retraining with defect classes needs labelled defect samples, have none: label some, "
                            "or retrain good-only")
    if good < needed:
        raise TooFewSamples(f"retraining with defect classes needs at least {needed} good parts, have {good} "
                            f"(besides {len(held.get(GOOD, []))} held back)")
    short = [f"{label} ({len(ids)})" for label, ids in sorted(defects.items()) if len(ids) < MIN_IMAGES_PER_LABEL]
    if short:
        raise TooFewSamples(f"every defect class needs at least {MIN_IMAGES_PER_LABEL} samples to train on, have: "
                            f"{', '.join(short)}")
    return trained, held


class TrainingJobs:
    """Starts, follows and cancels the station's retraining job (one at a time)."""

    def __init__(self, store: VerdictStore, registry: ModelRegistry, archive: ImageArchive,
                 config: StationConfig) -> None:
        self.store = store
        self.registry = registry
        self.archive = archive
        self.config = config
        self._lock = threading.Lock()
        self._cancel: dict[int, threading.Event] = {}
        self._thread: threading.Thread | None = None
        self._cancelled_by = SYSTEM_ACTOR
        self.on_finished: list[Any] = []  # callables(job) told when a job ends (the compare cache)

    def recover(self) -> None:
        """At start: a job still marked queued or running was cut off by a restart."""
        def operation(conn: sqlite3.Connection) -> None:
            for row in conn.execute("SELECT id, state FROM training_jobs WHERE state IN ('queued', 'running')"):
                conn.execute("UPDATE training_jobs SET state = 'interrupted', finished_at = ?, eta_s = NULL,"
                             " error = 'the service stopped while it ran; nothing was registered' WHERE id = ?",
                             (utc_now(), row["id"]))
                append_audit(conn, SYSTEM_ACTOR, "training_interrupted", "training_job", row["id"],
                             {"state": row["state"]}, {"state": "interrupted"})

        self.store.submit(operation).result()

    def get(self, job_id: int) -> TrainingJob:
        row = (self.store.reader().execute("SELECT * FROM training_jobs WHERE id = ?", (job_id,)).fetchone()
               if valid_id(job_id) else None)
        if row is None:
            raise NotFoundError(f"training job {job_id} does not exist")
        return _job(row)

    def recent(self, limit: int = 20) -> list[TrainingJob]:
        rows = self.store.reader().execute("SELECT * FROM training_jobs ORDER BY id DESC LIMIT ?", (limit,))
        return [_job(row) for row in rows]

    def start(self, model_name: str, mode: Mode, actor: str) -> TrainingJob:
        """Queue a job (refused while one runs, or with too few samples) and start it in the background."""
        base = self.registry.active_version(model_name)  # UnknownModelError for a name the registry lacks
        with self._lock:
            if self._thread is not None and self._thread.is_alive():
                raise ConflictError("a retraining job is already running: wait for it or cancel it")

            # planned on a reader (it looks for each image on disk), not in the writer's transaction
            trained, held = plan(self.store.reader(), mode, self.config.workbench.held_out_fraction, self.archive)

            def operation(conn: sqlite3.Connection) -> int:
                running = conn.execute("SELECT id FROM training_jobs WHERE state IN ('queued', 'running')").fetchone()
                if running is not None:
                    raise ConflictError(f"training job {running['id']} is already running: wait for it or cancel it")
                job_id = int(conn.execute(
                    "INSERT INTO training_jobs (model_name, mode, state, requested_by, created_at, trained_on,"
                    " held_out, base_version) VALUES (?, ?, 'queued', ?, ?, ?, ?, ?)",
                    (model_name, mode, actor, utc_now(), json.dumps(trained), json.dumps(held), base),
                ).lastrowid or 0)
                append_audit(conn, actor, "training_started", "training_job", job_id, None,
                             {"model": model_name, "mode": mode, "base_version": base},
                             {"trained_on": {k: len(v) for k, v in trained.items()},
                              "held_out": {k: len(v) for k, v in held.items()}})
                return job_id

            job_id = self.store.submit(operation).result()
            cancel = threading.Event()
            self._cancel[job_id] = cancel
            self._thread = threading.Thread(target=self._run, args=(job_id, cancel), name=f"training-job-{job_id}",
                                            daemon=True)
            self._thread.start()
        return self.get(job_id)

    def cancel(self, job_id: int, actor: str) -> TrainingJob:
        job = self.get(job_id)
        if job.state not in ACTIVE_STATES:
            raise ConflictError(f"training job {job_id} is {job.state}: only a queued or running job can be cancelled")
        event = self._cancel.get(job_id)
        if event is None:  # a row left by another process: nothing here runs it
            raise ConflictError(f"training job {job_id} is not run by this service")
        self._cancelled_by = actor
        event.set()
        if self._thread is not None:
            self._thread.join(30)
        return self.get(job_id)

    def stop(self) -> None:
        """Cancel a running job (the service is stopping); it ends as interrupted."""
        for event in self._cancel.values():
            event.set()
        if self._thread is not None:
            self._thread.join(30)

    def _examples(self, job: TrainingJob) -> dict[str, list[Path]]:
        conn = self.store.reader()
        examples: dict[str, list[Path]] = {}
        for label, ids in job.trained_on.items():
            for sample_id in ids:
                row = conn.execute("SELECT image_ref FROM samples WHERE id = ?", (sample_id,)).fetchone()
                path = None if row is None else self.archive.resolve(row["image_ref"])
                if path is not None:
                    examples.setdefault(label, []).append(path)
        examples.setdefault(GOOD, [])
        return examples

    def _update(self, job_id: int, **values: Any) -> None:
        columns = ", ".join(f"{name} = ?" for name in values)
        self.store.submit(lambda conn: conn.execute(f"UPDATE training_jobs SET {columns} WHERE id = ?",
                                                    (*values.values(), job_id))).result()

    def _finish(self, job_id: int, state: str, actor: str, action: str, **values: Any) -> None:
        def operation(conn: sqlite3.Connection) -> None:
            columns = ", ".join(f"{name} = ?" for name in ("state", "finished_at", "eta_s", *values))
            conn.execute(f"UPDATE training_jobs SET {columns} WHERE id = ?",
                         (state, utc_now(), None, *values.values(), job_id))
            append_audit(conn, actor, action, "training_job", job_id, {"state": "running"},
                         {"state": state, **values})

        self.store.submit(operation).result()

    def _run(self, job_id: int, cancel: threading.Event) -> None:
        job = self.get(job_id)
        started = time.monotonic()
        last_write = 0.0
        self._update(job_id, state="running", started_at=utc_now(), stage="starting")

        def progress(fraction: float, stage: str) -> None:
            nonlocal last_write
            elapsed = time.monotonic() - started
            eta = elapsed * (1.0 - fraction) / fraction if fraction >= 0.05 else None
            now = time.monotonic()
            if now - last_write >= PROGRESS_EVERY_S or fraction >= 1.0:
                last_write = now
                self._update(job_id, fraction=round(fraction, 4), stage=stage[:200],
                             eta_s=None if eta is None else round(eta, 1))

        settings = self.config.training
        try:
            outcome = train("vision", self._examples(job), job.model_name, self.registry, progress=progress,
                            cancel=cancel, promote=False, niceness=settings.niceness, priority=settings.priority)
        except TrainingCancelled:
            actor = self._cancelled_by
            state = "cancelled" if actor != SYSTEM_ACTOR else "interrupted"
            self._finish(job_id, state, actor, f"training_{state}", stage=state)
        except Exception as exc:  # a TrainingError says why; anything else is logged and reported the same way
            if not isinstance(exc, TrainingError):
                log.error("training job %d failed", job_id, exc_info=exc)
            self._finish(job_id, "failed", job.requested_by, "training_failed", stage="failed", error=str(exc)[:2000])
        else:
            self._finish(job_id, "succeeded", job.requested_by, "training_succeeded", stage="done", fraction=1.0,
                         candidate_version=outcome.version.version)
            log.info("training job %d registered %s v%d (not promoted)", job_id, job.model_name,
                     outcome.version.version)
        finally:
            self._cancel.pop(job_id, None)
            self._cancelled_by = SYSTEM_ACTOR
        for listener in self.on_finished:
            listener(self.get(job_id))


def job_dict(job: TrainingJob) -> dict[str, Any]:
    return asdict(job)
