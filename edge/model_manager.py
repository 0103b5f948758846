"""Keeps the active version of each model loaded, and swaps in a newly promoted one without a restart.

A swap replaces one reference: a request already holding the old inspector finishes with it, the
next one gets the new version, and no verdict is lost in between.
"""

from __future__ import annotations

import logging
import threading
from pathlib import Path

from models.manifest import ManifestError
from models.registry import ACTIVE_FILE, ModelRegistry, UnknownModelError
from models.runtime import load_model
from vision.inspector import VisionInspector

log = logging.getLogger(__name__)


class ModelManager:
    def __init__(self, registry: ModelRegistry, threads: int, thresholds: dict[str, float] | None = None) -> None:
        self.registry = registry
        self.threads = threads
        self.thresholds = dict(thresholds or {})
        self._vision: dict[str, VisionInspector] = {}
        self._lock = threading.Lock()
        self._state_mtime = self._registry_mtime()
        self._stop = threading.Event()
        self._watcher: threading.Thread | None = None

    def _registry_mtime(self) -> float:
        path: Path = self.registry.state_dir / ACTIVE_FILE
        try:
            return path.stat().st_mtime
        except FileNotFoundError:
            return 0.0

    def _load_vision(self, name: str, version: int | None = None) -> VisionInspector:
        entry = self.registry.get(name, version)
        model = load_model(entry.folder, threads=self.threads)
        inspector = VisionInspector(model, self.thresholds.get(name))
        log.info("loaded vision model %s v%d in %.0f ms", name, model.version, model.load_ms)
        return inspector

    def vision(self, name: str) -> VisionInspector:
        """The loaded inspector for ``name``; loads it on first use (raises UnknownModelError)."""
        inspector = self._vision.get(name)
        if inspector is not None:
            return inspector
        with self._lock:
            if name not in self._vision:
                self._vision[name] = self._load_vision(name)
            return self._vision[name]

    def loaded(self) -> dict[str, VisionInspector]:
        return dict(self._vision)

    def reload(self, name: str) -> VisionInspector:
        """Load the registry's active version of ``name`` and swap it in if it changed."""
        current = self._vision.get(name)
        wanted = self.registry.active_version(name)
        if current is not None and current.version == wanted:
            return current
        fresh = self._load_vision(name, wanted)
        with self._lock:
            self._vision[name] = fresh
        log.info("switched model %s to v%d", name, fresh.version)
        return fresh

    def refresh_if_changed(self) -> None:
        mtime = self._registry_mtime()
        if mtime == self._state_mtime:
            return
        self._state_mtime = mtime
        for name in list(self._vision):
            try:
                self.reload(name)
            except (ManifestError, UnknownModelError) as exc:
                log.error("model %s stays on v%d: the promoted version cannot be loaded: %s",
                          name, self._vision[name].version, exc)

    def watch(self, interval_s: float = 1.0) -> None:
        """Follow promotions and rollbacks made by other processes (e.g. the CLI)."""
        def loop() -> None:
            while not self._stop.wait(interval_s):
                self.refresh_if_changed()

        self._watcher = threading.Thread(target=loop, name="model-watcher", daemon=True)
        self._watcher.start()

    def stop(self) -> None:
        self._stop.set()
