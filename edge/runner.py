"""Runs each frame source in its own thread, judging every frame; restarts a crashed source
with a limit on restarts per minute, and raises an alarm when it gives up."""

from __future__ import annotations

import logging
import threading
import time
from collections import deque

from edge.inspection import InspectionService
from edge.store import PartContext, StoreUnavailableError
from vision.images import ImageError
from vision.sources import Frame, FrameSource

log = logging.getLogger(__name__)


class SourceRunner:
    def __init__(self, source: FrameSource, inspection: InspectionService, station: str, model: str | None,
                 max_restarts_per_minute: int = 5) -> None:
        self.source = source
        self.inspection = inspection
        self.station = station
        self.model = model
        self.max_restarts = max_restarts_per_minute
        self.judged = 0
        self.failures = 0
        self.restarts: deque[float] = deque()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._supervise, name=f"source-{source.name}", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self, timeout_s: float = 5.0) -> None:
        self._stop.set()
        self._thread.join(timeout_s)

    @property
    def running(self) -> bool:
        return self._thread.is_alive()

    def _supervise(self) -> None:
        while not self._stop.is_set():
            try:
                self._run_once()
                return  # the source ended by itself (a replay without loop)
            except Exception as exc:
                log.exception("source %s crashed", self.source.name)
                now = time.monotonic()
                self.restarts.append(now)
                while self.restarts and now - self.restarts[0] > 60:
                    self.restarts.popleft()
                if len(self.restarts) > self.max_restarts:
                    self.inspection.store.raise_alarm(
                        "source_failed", f"source {self.source.name} keeps failing and was stopped: {exc}",
                        "critical", self.source.name)
                    return
                self._stop.wait(1.0)

    def _run_once(self) -> None:
        metrics = self.inspection.metrics
        for item in self.source.frames(self._stop):
            if not isinstance(item, Frame):
                self.failures += 1
                metrics.source_errors.labels(self.source.name, item.reason).inc()
                log.warning("source %s frame %d: %s", item.source, item.index, item.message)
                continue
            part = PartContext(station=self.station, source=self.source.name)
            try:
                inspection = self.inspection.judge_pixels(item.pixels, part, self.inspection.options(self.model))
                inspection.stored.result(timeout=30)
            except (ImageError, ValueError, StoreUnavailableError) as exc:
                self.failures += 1
                metrics.source_errors.labels(self.source.name, type(exc).__name__).inc()
                log.warning("source %s frame %d not judged: %s", self.source.name, item.index, exc)
                continue
            self.inspection.observe_stored(inspection, self.source.name)
            self.judged += 1
