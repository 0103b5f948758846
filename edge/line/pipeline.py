"""The triggered line pipeline: trigger -> capture -> judge -> decide -> store -> actuate.

Each trigger becomes a PartJob with the recipe in force when it arrived and a deadline from that
recipe. Exactly one result goes to the line per trigger: the verdict if it is durable before the
deadline, otherwise the fail-safe at the deadline (the verdict, when it comes, is stored as late).
Queues are bounded; a trigger that cannot be queued is answered with the fail-safe at once,
counted, alarmed and stored as an INVALID verdict with the reason — never dropped silently.
"""

from __future__ import annotations

import heapq
import logging
import queue
import threading
import time
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field, replace
from functools import partial
from typing import TYPE_CHECKING, Any

from edge.config import LineSettings, Recipe, StationConfig
from edge.decision import combine
from edge.inspection import InspectionService, JudgeOptions, quality_limits
from edge.store import NewVerdict, PartContext, StoredVerdict
from firmware_bridge.handshake import Alarm, LineAnswer, LineBridge, Result, StackLight, Trigger
from vision.cameras import Camera, CameraError, CameraSettings, Roi
from vision.sources import Frame

if TYPE_CHECKING:
    from acoustic.sources import AudioSource

log = logging.getLogger(__name__)


@dataclass
class PartJob:
    trigger: Trigger
    recipe: Recipe
    deadline: float  # time.monotonic() by which the line needs the result
    published: bool = False
    failsafe_sent: bool = False
    verdict_id: int | None = None
    capture_started: float = 0.0
    expected: frozenset[str] = frozenset({"vision"})  # modalities judged for this part
    verdicts: dict[str, NewVerdict] = field(default_factory=dict)
    closed: bool = False  # stored (or given up): later verdicts are stored on their own
    lock: threading.Lock = field(default_factory=threading.Lock)


def camera_settings(recipe: Recipe) -> CameraSettings:
    cam = recipe.camera
    roi = None if cam.roi is None else Roi(cam.roi.x, cam.roi.y, cam.roi.width, cam.roi.height)
    return CameraSettings(cam.exposure_us, cam.gain_db, cam.pixel_format, roi)


class LinePipeline:
    def __init__(self, config: StationConfig, camera: Camera, bridge: LineBridge,
                 inspection: InspectionService, microphone: AudioSource | None = None) -> None:
        assert config.line is not None
        self.config = config
        self.line: LineSettings = config.line
        self.camera = camera
        self.bridge = bridge
        self.inspection = inspection
        self.metrics = inspection.metrics
        self.station = config.station.id
        self.microphone = microphone
        self._listeners = ThreadPoolExecutor(max_workers=4, thread_name_prefix="line-listen")
        default = config.recipe(self.line.default_recipe)
        assert default is not None, "validated by the config"
        self.active_recipe: Recipe = default
        self._applied_recipe: Recipe | None = None
        self._capture_queue: queue.Queue[PartJob | None] = queue.Queue(maxsize=self.line.queue_size)
        self._judge_queue: queue.Queue[tuple[PartJob, Frame] | None] = queue.Queue(maxsize=self.line.queue_size)
        self._deadlines: list[tuple[float, int, PartJob]] = []
        self._deadline_cv = threading.Condition()
        self._stop = threading.Event()
        self._threads: list[threading.Thread] = []
        self.stopped_line = False
        self.stack_light: StackLight = "green"  # as last shown to the line (status loop)
        self.counters: dict[str, int] = {
            "triggers": 0, "results": 0, "failsafe": 0, "late": 0, "overload": 0, "camera_errors": 0,
            "invalid": 0,
        }
        self._counter_lock = threading.Lock()
        self.trigger_to_result_ms: list[float] = []
        # moving averages, updated as parts pass: capture-to-durable latency, and each stage's time
        self.latency_s = 0.03
        self.capture_time_s = 0.01
        self.judge_time_s = 0.02
        self._last_warning = 0.0
        self._suppressed_warnings = 0

    # -- lifecycle -----------------------------------------------------------------------------
    def start(self) -> None:
        try:
            self.camera.open()
            for kind in ("camera_unavailable", "camera_disconnected"):  # from an earlier run: the camera is back
                self.inspection.store.clear_alarms(kind, f"line:{self.line.camera.name}")
            self._apply_recipe(self.active_recipe)
            self._warm_up()
        except CameraError as exc:
            self._alarm("camera_unavailable", str(exc), "critical")
        for target, name in ((self._capture_loop, "line-capture"), (self._judge_loop, "line-judge"),
                             (self._deadline_loop, "line-deadlines"), (self._status_loop, "line-status")):
            thread = threading.Thread(target=target, name=name, daemon=True)
            thread.start()
            self._threads.append(thread)
        self.bridge.start(self._on_trigger, self._on_recipe, self._on_bridge_alarm)
        log.info("line pipeline started: recipe %s, bridge %s", self.active_recipe.name, self.line.bridge.type)

    def _warm_up(self) -> None:
        """Grab and judge a few frames before the first part, so it is not slower than the rest."""
        if self.line.camera.trigger != "software":
            return
        for recipe in {r.model or self.inspection.default_model: r for r in self.config.recipes}.values():
            frame = self.camera.capture(self.line.camera.grab_timeout_ms / 1000.0)
            for _ in range(3):
                self.inspection.evaluate(frame.pixels, self._options(recipe))
        self._apply_recipe(self.active_recipe)

    def _options(self, recipe: Recipe) -> JudgeOptions:
        quality = quality_limits(recipe.quality) if recipe.quality else self.inspection.quality
        return JudgeOptions(model=recipe.model or self.inspection.default_model, threshold=recipe.threshold,
                            quality=quality, recipe=recipe.name)

    def stop(self) -> None:
        self._stop.set()
        self._capture_queue.put(None)
        self._judge_queue.put(None)
        with self._deadline_cv:
            self._deadline_cv.notify_all()
        for thread in self._threads:
            thread.join(5)
        self._listeners.shutdown(wait=False, cancel_futures=True)
        self.bridge.stop()
        self.camera.close()

    # -- counters ------------------------------------------------------------------------------
    def _count(self, key: str, n: int = 1) -> None:
        with self._counter_lock:
            self.counters[key] = self.counters.get(key, 0) + n

    def status(self) -> dict[str, Any]:
        with self._counter_lock:
            counters = dict(self.counters)
            latencies = sorted(self.trigger_to_result_ms[-1000:])
        p = (lambda q: round(latencies[min(len(latencies) - 1, int(q * len(latencies)))], 2)) if latencies else None
        return {
            "recipe": {"number": self.active_recipe.number, "name": self.active_recipe.name},
            "camera_connected": self.camera.connected, "line_stopped": self.stopped_line,
            "stack_light": self.stack_light,
            "queue": {"capture": self._capture_queue.qsize(), "judge": self._judge_queue.qsize()},
            "counters": counters, "bridge": self.bridge.stats(),
            "trigger_to_result_ms": {"p50": p(0.5), "p99": p(0.99)} if p else None,
        }

    # -- inputs from the line ------------------------------------------------------------------
    def _on_trigger(self, trigger: Trigger) -> None:
        self._count("triggers")
        recipe = self.config.recipe(trigger.recipe) if trigger.recipe else None
        job = PartJob(trigger, recipe or self.active_recipe, 0.0)
        listening = job.recipe.acoustic is not None and self.microphone is not None
        if listening:
            job.expected = frozenset({"vision", "acoustic"})
        # the fail-safe leaves a transport margin early, so the PLC has it by the deadline it measures
        job.deadline = trigger.received_at_monotonic + (job.recipe.deadline_ms - self.line.deadline_margin_ms) / 1000.0
        with self._deadline_cv:
            heapq.heappush(self._deadlines, (job.deadline, trigger.seq, job))
            self._deadline_cv.notify()
        # stages overlap: a part is done one part-latency after the parts ahead of it have passed
        # the slowest stage
        waiting = self._capture_queue.qsize() + self._judge_queue.qsize()
        stage_s = max(self.capture_time_s, self.judge_time_s)
        expected_done = time.monotonic() + self.latency_s + waiting * stage_s
        if waiting and expected_done > job.deadline:
            self._count("overload")
            message = (f"trigger {trigger.seq} answered with the fail-safe at once: {waiting} parts ahead "
                       f"(~{stage_s * 1000:.0f} ms each, ~{self.latency_s * 1000:.0f} ms per part) would miss the "
                       f"{job.recipe.deadline_ms:g} ms deadline")
            self._give_up(job, "overload", message)
            self._alarm("trigger_overload", message, "warning")
            return
        try:
            self._capture_queue.put_nowait(job)
        except queue.Full:
            self._count("overload")
            message = (f"trigger {trigger.seq} answered with the fail-safe: {self.line.queue_size} parts already "
                       "wait for capture; triggers come faster than the station can judge")
            self._give_up(job, "overload", message)
            self._alarm("trigger_overload", message, "warning")
            return
        if listening:
            self._listeners.submit(self._listen, job)  # records from (about) the trigger on

    def _on_recipe(self, number: int) -> None:
        if number == 0:
            return  # 0: the PLC selects no recipe
        try:
            self.select_recipe(number, actor="plc")
        except ValueError as exc:
            self._alarm("unknown_recipe", str(exc), "warning")

    def _on_bridge_alarm(self, alarm: Alarm) -> None:
        self._alarm(alarm.kind, alarm.message, "warning")

    def select_recipe(self, number: int, actor: str) -> Recipe:
        """Switch recipe; it applies from the next trigger on, never to a part already in flight."""
        recipe = self.config.recipe(number)
        if recipe is None:
            known = ", ".join(f"{r.number} ({r.name})" for r in self.config.recipes)
            raise ValueError(f"recipe {number} does not exist (known: {known})")
        if recipe is not self.active_recipe:
            before = {"number": self.active_recipe.number, "name": self.active_recipe.name}
            self.active_recipe = recipe
            self.inspection.store.audit(actor, "recipe_selected", "recipe", number, before,
                                        {"number": number, "name": recipe.name})
            log.info("recipe %d (%s) selected by %s", number, recipe.name, actor)
        return recipe

    def set_line_stop(self, stop: bool, actor: str, reason: str | None = None) -> None:
        """Stop or release the line at once (safety first), then audit who did it and why."""
        before = self.stopped_line
        self.stopped_line = stop
        self.bridge.set_status(stop_line=stop)
        self.inspection.store.audit(actor, "line_stopped" if stop else "line_resumed", "line", self.station,
                                    {"line_stopped": before}, {"line_stopped": stop, "reason": reason})
        if stop:
            self._alarm("line_stopped", f"line stopped by {actor}: {reason or 'no reason given'}", "critical")
        else:
            self.inspection.store.clear_alarms("line_stopped", f"line:{self.line.camera.name}", actor)

    # -- stages --------------------------------------------------------------------------------
    def _apply_recipe(self, recipe: Recipe) -> None:
        if recipe is not self._applied_recipe:
            self.camera.apply(camera_settings(recipe))
            self._applied_recipe = recipe

    def _capture_loop(self) -> None:
        grab_timeout = self.line.camera.grab_timeout_ms / 1000.0
        while not self._stop.is_set():
            job = self._capture_queue.get()
            if job is None:
                return
            if time.monotonic() > job.deadline:
                self._give_up(job, "missed", "the deadline passed before the part could be captured")
                continue
            started = job.capture_started = time.perf_counter()
            try:
                self._apply_recipe(job.recipe)
                frame = self.camera.capture(grab_timeout)
            except CameraError as exc:
                self._count("camera_errors")
                self._give_up(job, f"camera_{exc.reason}", str(exc))
                self._alarm(f"camera_{exc.reason}", str(exc), "critical" if exc.reason == "disconnected" else "warning")
                continue
            captured = time.perf_counter() - started
            self.capture_time_s += 0.1 * (captured - self.capture_time_s)
            self.metrics.stage_latency.labels("capture").observe(captured)
            try:
                self._judge_queue.put_nowait((job, frame))
            except queue.Full:
                self._count("overload")
                self._give_up(job, "overload", "judge queue full: the model cannot keep up")
                self._alarm("trigger_overload", "judge queue full: the model cannot keep up", "warning")

    def _judge_loop(self) -> None:
        while not self._stop.is_set():
            item = self._judge_queue.get()
            if item is None:
                return
            job, frame = item
            options = self._options(job.recipe)
            judging_started = time.perf_counter()
            with job.lock:
                late = job.failsafe_sent
            try:
                if "acoustic" in job.expected:
                    self._deliver(job, self.inspection.prepare_pixels(frame.pixels, options))
                    continue
                inspection = self.inspection.judge_pixels(
                    frame.pixels, self._part(job), options, late=late, actuated=self._failsafe() if late else None)
            except Exception as exc:  # a model failure must still answer the trigger
                log.exception("judging trigger %d failed", job.trigger.seq)
                self._give_up(job, "judge_failed", f"judging failed: {exc}")
                continue
            self.judge_time_s += 0.1 * (time.perf_counter() - judging_started - self.judge_time_s)
            inspection.stored.add_done_callback(
                partial(self._on_stored, job, inspection.verdict.decision, inspection.verdict.late,
                        [inspection.verdict], inspection.committing))

    def _listen(self, job: PartJob) -> None:
        """Record this part's sound from its trigger on, judge it, and join the camera's verdict."""
        settings = job.recipe.acoustic
        assert settings is not None and self.microphone is not None
        model = settings.model or self.config.models.acoustic
        assert model is not None, "validated by the config"
        started = time.perf_counter()
        try:
            inspector = self.inspection.models.acoustic(model)
            clip = self.microphone.record(settings.record_s or inspector.window_s)
            result = inspector.judge_clip(clip)
            verdict = self.inspection.acoustic_verdict(result, inspector, started, clip.duration_s,
                                                       clip.sample_rate, job.recipe.name)
        except Exception as exc:  # a dead device or model must still give the part a verdict
            log.exception("listening to trigger %d failed", job.trigger.seq)
            verdict = NewVerdict("acoustic", "INVALID", "invalid", None, None, model, None,
                                 (time.perf_counter() - started) * 1000.0, reason=f"listening failed: {exc}",
                                 recipe=job.recipe.name)
        self._deliver(job, verdict)

    def _deliver(self, job: PartJob, verdict: NewVerdict) -> None:
        """Collect one modality's verdict; store the part once every expected modality has spoken."""
        with job.lock:
            if job.closed:
                complete = None
            else:
                job.verdicts[verdict.modality] = verdict
                complete = dict(job.verdicts) if set(job.verdicts) == job.expected else None
                if complete is not None:
                    job.closed = True
            late = job.failsafe_sent
        if complete is None:
            if job.closed and verdict.modality not in job.verdicts:
                self.inspection.store.record(self._part(job), [replace(verdict, late=True)])
            return
        overall = combine({m: v.decision for m, v in complete.items()}, job.recipe.decision_rule)
        actuated = self._failsafe() if late else overall
        verdicts = [replace(v, late=late, actuated=actuated) for v in complete.values()]
        committing = time.perf_counter()
        stored = self.inspection.store.record(self._part(job), verdicts, overall)
        stored.add_done_callback(partial(self._on_stored, job, overall, late, verdicts, committing))

    def _deadline_loop(self) -> None:
        while not self._stop.is_set():
            with self._deadline_cv:
                while not self._stop.is_set() and (not self._deadlines or self._deadlines[0][0] > time.monotonic()):
                    timeout = self._deadlines[0][0] - time.monotonic() if self._deadlines else None
                    self._deadline_cv.wait(timeout)
                if self._stop.is_set():
                    return
                _, _, job = heapq.heappop(self._deadlines)
            self._answer(job, self._failsafe(), late=True)

    def _status_loop(self) -> None:
        """Ready and the stack light follow the camera, the line stop and the active alarms."""
        while not self._stop.wait(0.25):
            alarms = self.inspection.store.alarms(active_only=True, limit=50)
            severities = {a.severity for a in alarms}
            light: StackLight
            if self.stopped_line or "critical" in severities:
                light = "red"
            elif not self.camera.connected or "warning" in severities:
                light = "amber"
            else:
                light = "green"
            self.stack_light = light
            self.bridge.set_status(ready=self.camera.connected and not self.stopped_line, stack_light=light,
                                   busy=self._capture_queue.qsize() + self._judge_queue.qsize() > 0)

    # -- answering -----------------------------------------------------------------------------
    def _failsafe(self) -> LineAnswer:
        return "FAILSAFE" if self.line.failsafe_decision == "NG" else "OK"

    def _part(self, job: PartJob) -> PartContext:
        trigger = job.trigger
        return PartContext(self.station, f"line:{self.line.camera.name}", trigger.serial or None,
                           trigger.lot or None, trigger.seq)

    def _answer(self, job: PartJob, decision: LineAnswer, late: bool = False) -> bool:
        """Publish the one result of this trigger; False if it had already been answered."""
        with job.lock:
            if job.published:
                return False
            job.published = True
            job.failsafe_sent = late
        publishing = time.perf_counter()
        self.bridge.publish(Result(job.trigger.seq, decision, late=late))
        self.metrics.stage_latency.labels("bridge_answer").observe(time.perf_counter() - publishing)
        elapsed = (time.monotonic() - job.trigger.received_at_monotonic) * 1000.0
        self.metrics.stage_latency.labels("trigger_to_result").observe(elapsed / 1000.0)
        with self._counter_lock:
            self.counters["results"] += 1
            if late:
                self.counters["failsafe"] += 1
                self.counters["late"] += 1
            self.trigger_to_result_ms.append(elapsed)
            if len(self.trigger_to_result_ms) > 10_000:
                del self.trigger_to_result_ms[:5_000]
        return True

    def _on_stored(self, job: PartJob, decision: LineAnswer, recorded_late: bool, verdicts: list[NewVerdict],
                   committing: float, future: Future[StoredVerdict]) -> None:
        """Runs on the store writer once the part is durable (or failed): actuate, or mark it late."""
        self.metrics.stage_latency.labels("store_commit").observe(time.perf_counter() - committing)
        try:
            stored = future.result()
        except Exception as exc:
            self._answer(job, self._failsafe())
            self._alarm("store_failed", f"verdict for trigger {job.trigger.seq} not stored: {exc}", "critical")
            return
        job.verdict_id = stored.verdict_id
        for verdict in verdicts:
            self.metrics.verdicts.labels(verdict.modality, verdict.decision, verdict.model_name or "").inc()
        self.latency_s += 0.1 * (time.perf_counter() - job.capture_started - self.latency_s)
        if decision == "INVALID":
            self._count("invalid")
        if not self._answer(job, decision) and not recorded_late:
            for verdict_id in stored.verdict_ids:
                self.inspection.store.mark_late(verdict_id, self._failsafe())

    def _give_up(self, job: PartJob, reason: str, message: str) -> None:
        """Answer with the fail-safe now and store an INVALID verdict saying why."""
        with job.lock:
            job.closed = True
        missed_deadline = time.monotonic() >= job.deadline
        answered_now = self._answer(job, self._failsafe(), late=missed_deadline)
        if answered_now and not missed_deadline:
            self._count("failsafe")  # (late answers are counted as fail-safe by _answer)
        verdict = NewVerdict(
            modality="vision", decision="INVALID", label=reason, score=None, threshold=None, model_name=None,
            model_version=None, latency_ms=(time.monotonic() - job.trigger.received_at_monotonic) * 1000.0,
            reason=message, recipe=job.recipe.name, actuated=self._failsafe(), late=missed_deadline or not answered_now,
        )
        try:
            self.inspection.store.record(self._part(job), [verdict])
        except Exception as exc:
            log.error("could not store the fail-safe record of trigger %d: %s", job.trigger.seq, exc)
        self._warn(f"trigger {job.trigger.seq}: fail-safe ({reason}): {message}")

    def _warn(self, message: str) -> None:
        """At most one warning a second: a trigger storm must not flood the log."""
        now = time.monotonic()
        if now - self._last_warning < 1.0:
            self._suppressed_warnings += 1
            return
        more = f" (+{self._suppressed_warnings} similar in the last second)" if self._suppressed_warnings else ""
        log.warning("%s%s", message, more)
        self._last_warning, self._suppressed_warnings = now, 0

    def _alarm(self, kind: str, message: str, severity: str) -> None:
        try:
            self.inspection.store.raise_alarm(kind, message, severity, f"line:{self.line.camera.name}")
        except Exception as exc:
            log.error("alarm %s not stored: %s", kind, exc)
