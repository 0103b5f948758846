"""Keeps the active version of each model loaded, and swaps in a newly promoted one without a restart.

A swap replaces one reference: a request already holding the old inspector finishes with it, the
next one gets the new version, and no verdict is lost in between.
"""

from __future__ import annotations

import logging
import threading
from pathlib import Path
from typing import TYPE_CHECKING, Any

from models.manifest import ManifestError
from models.registry import ACTIVE_FILE, ModelRegistry, UnknownModelError
from models.runtime import load_model
from vision.inspector import VisionInspector

if TYPE_CHECKING:
    from acoustic.inspector import AcousticInspector

log = logging.getLogger(__name__)


class ModelManager:
    def __init__(self, registry: ModelRegistry, threads: int, thresholds: dict[str, float] | None = None) -> None:
        self.registry = registry
        self.threads = threads
        self.thresholds = dict(thresholds or {})
        self._vision: dict[str, VisionInspector] = {}
        self._acoustic: dict[str, AcousticInspector] = {}
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

    def load_vision(self, name: str, version: int | None = None) -> VisionInspector:
        """A new, uncached inspector for a version (default: the active one)."""
        model = load_model(self.registry.get(name, version).folder, threads=self.threads)
        inspector = VisionInspector(model, self.thresholds.get(name))
        log.info("loaded vision model %s v%d in %.0f ms", name, model.version, model.load_ms)
        return inspector

    def load_acoustic(self, name: str, version: int | None = None) -> AcousticInspector:
        """A new, uncached inspector for a version (default: the active one)."""
        from acoustic.inspector import AcousticInspector

        model = load_model(self.registry.get(name, version).folder, threads=1, warm_up=False)
        if model.manifest.modality != "acoustic":
            raise ValueError(f"model '{name}' is a {model.manifest.kind} model, not an acoustic model")
        inspector = AcousticInspector(model)  # warms up its features and session
        log.info("loaded acoustic model %s v%d", name, model.version)
        return inspector

    def _get(self, table: dict[str, Any], name: str, loader: Any) -> Any:
        inspector = table.get(name)
        if inspector is not None:
            return inspector
        with self._lock:
            if name not in table:
                table[name] = loader(name)
            return table[name]

    def vision(self, name: str) -> VisionInspector:
        """The loaded inspector for ``name``; loads it on first use (raises UnknownModelError)."""
        inspector: VisionInspector = self._get(self._vision, name, self.load_vision)
        return inspector

    def acoustic(self, name: str) -> AcousticInspector:
        inspector: AcousticInspector = self._get(self._acoustic, name, self.load_acoustic)
        return inspector

    def loaded(self) -> dict[str, VisionInspector]:
        return dict(self._vision)

    def loaded_acoustic(self) -> dict[str, AcousticInspector]:
        return dict(self._acoustic)

    def reload(self, name: str) -> None:
        """Load the registry's active version of ``name`` and swap it in if it changed."""
        wanted = self.registry.active_version(name)
        tables: tuple[tuple[dict[str, Any], Any], ...] = (
            (self._vision, self.load_vision), (self._acoustic, self.load_acoustic))
        for table, loader in tables:
            current = table.get(name)
            if current is None or current.model.version == wanted:
                continue
            fresh = loader(name, wanted)
            with self._lock:
                table[name] = fresh
            log.info("switched model %s to v%d", name, wanted)

    def refresh_if_changed(self) -> None:
        mtime = self._registry_mtime()
        if mtime == self._state_mtime:
            return
        self._state_mtime = mtime
        for name in {*self._vision, *self._acoustic}:
            try:
                self.reload(name)
            except (ManifestError, UnknownModelError, ValueError) as exc:
                log.error("model %s stays on its version: the promoted one cannot be loaded: %s", name, exc)

    def watch(self, interval_s: float = 1.0) -> None:
        """Follow promotions and rollbacks made by other processes (e.g. the CLI)."""
        def loop() -> None:
            while not self._stop.wait(interval_s):
                self.refresh_if_changed()

        self._watcher = threading.Thread(target=loop, name="model-watcher", daemon=True)
        self._watcher.start()

    def stop(self) -> None:
        self._stop.set()
