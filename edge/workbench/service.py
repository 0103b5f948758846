"""The workbench as the station holds it: the sample listener and sampler, the retraining jobs, model
actions, comparisons (kept until the models change) and the camera set-up."""

from __future__ import annotations

import multiprocessing
import sqlite3
import threading
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path
from typing import TYPE_CHECKING, Any

from edge.archive import ImageArchive
from edge.store import ConflictError, VerdictStore
from edge.training import lower_priority
from edge.workbench.camera import CameraSetup
from edge.workbench.compare import compare
from edge.workbench.jobs import TrainingJob, TrainingJobs
from edge.workbench.models import ModelActions
from edge.workbench.samples import NearThresholdSampler, Sample, SampleRecorder, change_sample

if TYPE_CHECKING:
    from edge.model_manager import ModelManager
    from edge.station import Station

COMPARE_TIMEOUT_S = 600.0


class Workbench:
    def __init__(self, station: Station, store: VerdictStore, models: ModelManager, archive: ImageArchive) -> None:
        cfg = station.config
        self.store = store
        self.config = cfg
        self.archive = archive
        self.sampler = NearThresholdSampler(cfg.workbench.sample_band, cfg.workbench.samples_per_hour)
        store.add_listener(SampleRecorder(self.sampler))  # before the store starts: it sees every override
        self.jobs = TrainingJobs(store, models.registry, archive, cfg)
        self.models = ModelActions(store, models, cfg.models.thresholds)
        self.camera = CameraSetup(station)
        self._compared: dict[tuple[int, int, int], dict[str, Any]] = {}
        self._compare_lock = threading.Lock()

    def start(self) -> None:
        """After the store started: mark a job a restart cut off."""
        self.jobs.recover()

    def stop(self) -> None:
        self.jobs.stop()

    def change_sample(self, sample_id: int, actor: str, label: str | None = None, excluded: bool | None = None,
                      reason: str | None = None) -> Sample:
        def operation(conn: sqlite3.Connection) -> Sample:
            return change_sample(conn, sample_id, actor, label, excluded, reason)

        return self.store.submit(operation).result()

    def held_out(self, job: TrainingJob) -> dict[str, list[tuple[int, Path]]]:
        """The job's held-back samples still usable (not excluded since), as (verdict id, image) per label."""
        conn = self.store.reader()
        held: dict[str, list[tuple[int, Path]]] = {}
        for label, ids in job.held_out.items():
            for sample_id in ids:
                row = conn.execute("SELECT verdict_id, image_ref, excluded FROM samples WHERE id = ?",
                                   (sample_id,)).fetchone()
                path = None if row is None or row["excluded"] else self.archive.resolve(row["image_ref"])
                if path is not None:
                    held.setdefault(label, []).append((int(row["verdict_id"]), path))
        return held

    def _compare_apart(self, name: str, running: int, candidate: int,
                       held: dict[str, list[tuple[int, Path]]]) -> dict[str, Any]:
        """Run the comparison in a process of its own at the training priority (edge.training.lower_priority),
        so judging the held-back samples twice never takes CPU from inspection."""
        settings = self.config.training
        with ProcessPoolExecutor(1, mp_context=multiprocessing.get_context("spawn"), initializer=lower_priority,
                                 initargs=(settings.niceness, settings.priority == "idle")) as pool:
            return pool.submit(compare, self.models.registry, self.config, name, running, candidate,
                               held).result(timeout=COMPARE_TIMEOUT_S)

    def compare(self, job_id: int) -> dict[str, Any]:
        """The job's candidate against the running version (once the candidate runs, the version it was
        trained to replace) on the job's held-back samples, computed once per pair of versions."""
        job = self.jobs.get(job_id)
        if job.candidate_version is None:
            raise ConflictError(f"training job {job_id} is {job.state}: it has no candidate model to compare")
        running = self.models.registry.active_version(job.model_name)
        if running == job.candidate_version:  # promoted since: against the version it was trained to replace
            running = job.base_version if job.base_version is not None else running
        if running == job.candidate_version:
            raise ConflictError(f"v{running} of '{job.model_name}' is the candidate itself: nothing to compare with")
        held = self.held_out(job)
        if not held:
            raise ConflictError(f"training job {job_id} has no held-back samples left to compare on")
        key = (job_id, running, job.candidate_version)
        with self._compare_lock:
            if key not in self._compared:
                self._compared[key] = {"job_id": job_id, **self._compare_apart(
                    job.model_name, running, job.candidate_version, held)}
            return self._compared[key]
