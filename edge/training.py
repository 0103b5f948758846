"""Retraining that never disturbs inspection: the training runs in a separate process at lower
priority, reports progress, can be cancelled, and registers the model only when it is complete.

The child writes ``model.onnx`` and ``manifest.json`` into a build folder inside the registry's
folder; the parent then registers it atomically (a killed or cancelled run leaves no version).
"""

from __future__ import annotations

import contextlib
import multiprocessing
import os
import queue
import shutil
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from models.evaluation import Target
from models.manifest import Manifest, model_name_problem
from models.registry import ModelRegistry, ModelVersion

Kind = Literal["vision", "acoustic"]
Trainer = Literal["default", "yolo"]  # yolo: ultralytics classifier, only with the optional yolo extra
Priority = Literal["idle", "low"]  # see lower_priority
Level = Literal["use", "ignore"]  # a normal-only sound model: is the microphone's level evidence?
ProgressCallback = Callable[[float, str], None]


class TrainingError(Exception):
    """Training could not produce a model; the message says why (e.g. too few usable images)."""


class TrainingCancelled(TrainingError):
    """The run was cancelled; nothing was registered."""


@dataclass
class TrainingOutcome:
    version: ModelVersion
    manifest: Manifest
    skipped: list[tuple[str, str]] = field(default_factory=list)
    duration_s: float = 0.0
    cpu_cores: float = 0.0  # CPU time the training process got per second of its run (2.0: two full cores)


# A training process that got less CPU than this (cores, on average) for STARVED_AFTER_S was starved by
# other work on the station; the progress message and the CLI say so and name the way out.
STARVED_CORES = 0.5
STARVED_AFTER_S = 20.0
STARVED_HINT = "slow: the CPU is busy with other work"


def starved(cpu_cores: float | None, elapsed_s: float) -> bool:
    """Whether a run that has used ``cpu_cores`` on average over ``elapsed_s`` is held back by other work."""
    return cpu_cores is not None and elapsed_s >= STARVED_AFTER_S and cpu_cores < STARVED_CORES


def lower_priority(niceness: int, idle: bool = True) -> None:
    """Make this process yield to inspection: niced, and (``idle``, on Linux) scheduled as SCHED_IDLE:
    it then runs only on CPU time no normal task wants, and a waking inspection thread preempts it at
    once; but any busy process, not only inspection, holds it back. Niced only, it keeps a small share.

    Linux schedules threads, so every thread that exists now is lowered; threads started later
    (onnxruntime's pool, BLAS) inherit the setting from the thread that starts them."""
    try:
        threads = [int(tid) for tid in os.listdir("/proc/self/task")]
    except OSError:  # no /proc: 0 is the calling process
        threads = [0]
    policy = getattr(os, "SCHED_IDLE", None) if idle and hasattr(os, "sched_setscheduler") else None
    for tid in threads:
        with contextlib.suppress(OSError):
            os.setpriority(os.PRIO_PROCESS, tid, min(19, os.getpriority(os.PRIO_PROCESS, tid) + niceness))
        if policy is not None:
            with contextlib.suppress(OSError):
                os.sched_setscheduler(tid, policy, os.sched_param(0))


def _exit_with_parent(parent_pid: int, interval_s: float = 0.5) -> None:
    """End this process when its parent is gone (killed outright, it cannot stop us): an orphaned
    training would hold the CPU for minutes and leave its build folder behind for nothing."""
    def watch() -> None:
        while os.getppid() == parent_pid:
            time.sleep(interval_s)
        os._exit(3)

    threading.Thread(target=watch, name="exit-with-parent", daemon=True).start()


def _train_in_child(kind: Kind, examples: dict[str, list[str]], name: str, build_dir: str,
                    messages: multiprocessing.Queue[tuple[Any, ...]], niceness: int,
                    trainer: Trainer = "default", options: dict[str, Any] | None = None,
                    priority: Priority = "idle", parent_pid: int | None = None,
                    target: Target | None = None, level: Level = "use") -> None:
    """Runs in the child process: lower priority, train, report (with the CPU time used so far)."""
    if parent_pid is not None:
        _exit_with_parent(parent_pid)
    lower_priority(niceness, idle=priority == "idle")
    try:
        def progress(fraction: float, message: str) -> None:
            messages.put(("progress", float(fraction), str(message), time.process_time()))

        good_key = "good" if kind == "vision" else "normal"
        good = [Path(p) for p in examples.pop(good_key)]
        labelled = {label: [Path(p) for p in paths] for label, paths in examples.items()}
        if kind == "vision" and trainer == "yolo":
            from vision.yolo.train import train_yolo_classifier

            report: Any = train_yolo_classifier(good, labelled, name, Path(build_dir), progress=progress,
                                                **(options or {}))
        elif kind == "vision" and labelled:
            # labelled defect folders: a supervised classifier whose labels are the folder names
            from vision.classifier.train import train_classifier_model

            report = train_classifier_model(good, labelled, name, Path(build_dir), progress=progress, target=target)
        elif kind == "vision":
            from vision.anomaly import train_anomaly_model

            report = train_anomaly_model(good, labelled, name, Path(build_dir), progress=progress, target=target)
        else:
            from acoustic.training import train_acoustic_model

            report = train_acoustic_model(good, labelled, name, Path(build_dir), progress=progress, target=target,
                                          level=level)
        messages.put(("done", report.manifest.model_dump_json(), _skipped(report), time.process_time()))
    except ValueError as exc:  # the training modules raise ValueError subclasses for bad data
        messages.put(("error", str(exc)))
    except Exception as exc:
        messages.put(("error", f"{type(exc).__name__}: {exc}"))


def _with_parent(manifest: Manifest, registry: ModelRegistry) -> Manifest:
    """Record the version that was active when this one was trained (None for a model's first)."""
    if manifest.training.parent_version is not None or not registry.versions(manifest.name):
        return manifest
    training = manifest.training.model_copy(update={"parent_version": registry.active_version(manifest.name)})
    return manifest.model_copy(update={"training": training})


def _with_training_files(manifest: Manifest, examples: dict[str, list[Path]]) -> Manifest:
    """Record the training files' digests, so that ``models evaluate`` never scores one of them."""
    from edge.model_evaluation import DIGEST_KEY, training_digests

    data = {**manifest.training.data, DIGEST_KEY: training_digests(examples)}
    return manifest.model_copy(update={"training": manifest.training.model_copy(update={"data": data})})


def _skipped(report: Any) -> list[tuple[str, str]]:
    """Files the training could not use, as (path, reason), whatever shape the report keeps them in."""
    skipped = []
    for item in getattr(report, "skipped", None) or []:
        if hasattr(item, "path"):
            skipped.append((str(item.path), str(getattr(item, "reason", ""))))
        else:
            path, reason = item
            skipped.append((str(path), str(reason)))
    return skipped


def train(kind: Kind, examples: dict[str, list[Path]], name: str, registry: ModelRegistry, *,
          progress: ProgressCallback | None = None, cancel: threading.Event | None = None,
          promote: bool = True, niceness: int = 10, priority: Priority = "idle", trainer: Trainer = "default",
          options: dict[str, Any] | None = None, target: Target | None = None,
          level: Level = "use") -> TrainingOutcome:
    """Train in a child process and register the result; raises TrainingError or TrainingCancelled.

    ``priority`` and ``niceness``: see lower_priority; a starved run says so in its progress messages
    (STARVED_HINT). ``trainer="yolo"`` (vision only) trains an ultralytics YOLO classifier with
    ``options`` (epochs, imgsz, ...) passed to ``vision.yolo.train.train_yolo_classifier``. ``target``: the
    operating point the threshold is set for (models.evaluation.Target; each trainer's default without);
    ``level``: whether a normal-only sound model uses the loudness (acoustic.anomaly_model)."""
    if problem := model_name_problem(name):  # before the run, not after minutes of training
        raise TrainingError(problem)
    if trainer == "yolo":
        from vision.yolo import INSTALL_HINT, available

        if kind != "vision":
            raise TrainingError("the yolo trainer trains vision models only")
        if not available():
            raise TrainingError(f"the yolo trainer needs ultralytics, which is not installed: {INSTALL_HINT}")
    started = time.monotonic()
    registry.clean_staging()  # what killed runs left behind
    build_dir = registry.new_build_dir()
    context = multiprocessing.get_context("spawn")  # no fork of a multi-threaded service
    messages: multiprocessing.Queue[tuple[Any, ...]] = context.Queue()
    payload = {label: [str(p) for p in paths] for label, paths in examples.items()}
    child = context.Process(target=_train_in_child,
                            args=(kind, payload, name, str(build_dir), messages, niceness, trainer, options,
                                  priority, os.getpid(), target, level),
                            name=f"train-{kind}-{name}", daemon=True)
    child.start()
    try:
        while True:
            if cancel is not None and cancel.is_set():
                raise TrainingCancelled(f"training of '{name}' was cancelled; nothing was registered")
            try:
                message = messages.get(timeout=0.2)
            except queue.Empty:
                if not child.is_alive() and messages.empty():
                    code = child.exitcode
                    raise TrainingError(f"the training process ended unexpectedly (exit code {code})") from None
                continue
            if message[0] == "progress":
                if progress is not None:
                    elapsed = time.monotonic() - started
                    cpu_cores = message[3] / elapsed if elapsed > 0 else None
                    hint = f" ({STARVED_HINT})" if starved(cpu_cores, elapsed) else ""
                    progress(message[1], message[2] + hint)
            elif message[0] == "error":
                raise TrainingError(message[1])
            elif message[0] == "done":
                manifest = _with_training_files(_with_parent(Manifest.model_validate_json(message[1]), registry),
                                                examples)
                child.join(10)
                version = registry.register(build_dir, manifest, promote=promote)
                registered = manifest.model_copy(update={"version": version.version})
                duration = time.monotonic() - started
                return TrainingOutcome(version, registered, [tuple(s) for s in message[2]], duration,
                                       message[3] / duration)
    finally:
        if child.is_alive():
            child.terminate()
            child.join(5)
        if child.is_alive():  # a SCHED_IDLE child on a saturated CPU may be slow to act on SIGTERM
            child.kill()
            child.join(5)
        shutil.rmtree(build_dir, ignore_errors=True)
