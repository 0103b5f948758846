"""Promote, roll back and set the threshold of a model from the workbench, as `edge-inspect models
promote|rollback|calibrate` do, audited under the logged-in person, and swap the running model at once."""

from __future__ import annotations

import sqlite3
from typing import Any

from edge.model_manager import ModelManager
from edge.site_calibration import register_calibrated
from edge.store import ConflictError, VerdictStore
from edge.store.chain import append_audit
from models.registry import ModelRegistry, UnknownModelError


class ModelActions:
    def __init__(self, store: VerdictStore, models: ModelManager, overrides: dict[str, float]) -> None:
        self.store = store
        self.models = models
        self.registry: ModelRegistry = models.registry
        self.overrides = overrides  # models.thresholds of the station file: they win over a manifest's

    def _active(self, name: str) -> int | None:
        try:
            return self.registry.active_version(name)
        except UnknownModelError:
            return None

    def _swap(self, name: str) -> None:
        """Load the new active version now (the registry watcher would within a second)."""
        self.models.reload(name)

    def promote(self, name: str, version: int, actor: str) -> dict[str, Any]:
        self.registry.get(name, version)  # UnknownModelError before anything changes

        def operation(conn: sqlite3.Connection) -> int | None:
            before = self._active(name)
            self.registry.promote(name, version)
            append_audit(conn, actor, "model_promoted", "model", name, {"active_version": before},
                         {"active_version": version})
            return before

        before = self.store.submit(operation).result()
        self._swap(name)
        return self.state(name) | {"previous_version": before}

    def rollback(self, name: str, actor: str) -> dict[str, Any]:
        def operation(conn: sqlite3.Connection) -> int | None:
            before = self._active(name)
            entry = self.registry.rollback(name)
            append_audit(conn, actor, "model_rolled_back", "model", name, {"active_version": before},
                         {"active_version": entry.version})
            return before

        try:
            before = self.store.submit(operation).result()
        except UnknownModelError as exc:
            if self.registry.versions(name):
                raise ConflictError(str(exc)) from exc  # a known model with nothing to return to
            raise
        self._swap(name)
        return self.state(name) | {"previous_version": before}

    def set_threshold(self, name: str, version: int, threshold: float, actor: str,
                      rates: dict[str, Any] | None = None) -> dict[str, Any]:
        """A new version with the same ONNX and ``threshold`` (register_calibrated, as `models calibrate`);
        made active when ``version`` was the active one, so the station judges with it at once."""
        source = self.registry.get(name, version)
        manifest = self.registry.manifest(name, version)
        promote = self._active(name) == version
        summary = {"set_on": "maintenance workbench", **({"held_out_rates": rates} if rates else {})}

        def operation(conn: sqlite3.Connection) -> int:
            registered = register_calibrated(self.registry, source, manifest, threshold, summary, promote)
            append_audit(conn, actor, "model_calibrated", "model", name,
                         {"version": version, "threshold": manifest.threshold},
                         {"version": registered.version, "threshold": threshold, "active": promote}, summary)
            return registered.version

        new_version = self.store.submit(operation).result()
        if promote:
            self._swap(name)
        result = self.state(name) | {"registered_version": new_version, "threshold": threshold, "active": promote}
        if name in self.overrides:
            result["warning"] = (f"the station config overrides this model's threshold ({self.overrides[name]}): "
                                 f"remove models.thresholds.{name} for this one to apply")
        return result

    def state(self, name: str) -> dict[str, Any]:
        """The registry's versions of ``name`` and the one the station judges with now."""
        versions = self.registry.versions(name)
        if not versions:
            raise UnknownModelError(f"unknown model '{name}' (known models: {', '.join(self.registry.names())})")
        loaded = self.models.loaded().get(name)
        return {
            "model": name, "active_version": self._active(name),
            "running_version": None if loaded is None else loaded.version,
            "versions": [{"version": v.version, "bundled": v.bundled,
                          "threshold": self.registry.manifest(name, v.version).threshold,
                          "kind": self.registry.manifest(name, v.version).kind}
                         for v in versions],
        }
