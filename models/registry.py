"""The model registry: versions on disk, which one is active, promotion and rollback.

Bundled models live read-only beside this file (``models/<name>/<version>/``); models trained
on the station are registered under the data folder (``<data>/models/<name>/<version>/``).
Which version of each name is active is kept in ``<data>/models/active.json`` with its history,
so a rollback returns to the version that was active before.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import shutil
import tempfile
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from models.manifest import (
    MANIFEST_FILE,
    Manifest,
    ManifestError,
    model_name_problem,
    read_manifest,
    sha256_of,
    write_manifest,
)

BUNDLED_ROOT = Path(__file__).resolve().parent
ACTIVE_FILE = "active.json"
BUILD_PREFIX = ".build-"  # + the owning process id + a random part
UNOWNED_BUILD_AGE_S = 24 * 3600.0  # a build folder that names no process (older versions) is removed after this


class UnknownModelError(LookupError):
    """A model name or version that the registry does not hold."""


@dataclass(frozen=True)
class ModelVersion:
    name: str
    version: int
    folder: Path
    bundled: bool


class ModelRegistry:
    def __init__(self, state_dir: Path, bundled_root: Path | None = BUNDLED_ROOT) -> None:
        self.state_dir = state_dir
        self.bundled_root = bundled_root
        self.state_dir.mkdir(parents=True, exist_ok=True)

    # -- discovery ---------------------------------------------------------------------------
    def _roots(self) -> list[tuple[Path, bool]]:
        roots = [(self.state_dir, False)]
        if self.bundled_root is not None:
            roots.append((self.bundled_root, True))
        return roots

    def versions(self, name: str) -> list[ModelVersion]:
        if problem := model_name_problem(name):  # never a path outside the registry ('../x')
            raise UnknownModelError(problem)
        found: dict[int, ModelVersion] = {}
        for root, bundled in self._roots():
            for folder in sorted((root / name).glob("*")) if (root / name).is_dir() else []:
                if folder.name.isdigit() and (folder / MANIFEST_FILE).is_file():
                    found.setdefault(int(folder.name), ModelVersion(name, int(folder.name), folder, bundled))
        return [found[v] for v in sorted(found)]

    def names(self) -> list[str]:
        names: set[str] = set()
        for root, _ in self._roots():
            if root.is_dir():
                names.update(p.parent.parent.name for p in root.glob(f"*/*/{MANIFEST_FILE}") if p.parent.name.isdigit())
        return sorted(names)

    def get(self, name: str, version: int | None = None) -> ModelVersion:
        versions = self.versions(name)
        if not versions:
            known = ", ".join(self.names()) or "none"
            raise UnknownModelError(f"unknown model '{name}' (known models: {known})")
        wanted = self.active_version(name) if version is None else version
        for candidate in versions:
            if candidate.version == wanted:
                return candidate
        raise UnknownModelError(
            f"model '{name}' has no version {wanted} (versions: {', '.join(str(v.version) for v in versions)})"
        )

    def manifest(self, name: str, version: int | None = None) -> Manifest:
        return read_manifest(self.get(name, version).folder)

    # -- active version ----------------------------------------------------------------------
    def _read_state(self) -> dict[str, dict[str, list[int]]]:
        path = self.state_dir / ACTIVE_FILE
        if not path.is_file():
            return {}
        try:
            state = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, json.JSONDecodeError) as exc:
            raise ManifestError(f"{path}: unreadable registry state ({exc}); fix or delete it") from exc
        return state if isinstance(state, dict) else {}

    def _write_state(self, state: dict[str, dict[str, list[int]]]) -> None:
        path = self.state_dir / ACTIVE_FILE
        tmp = path.with_suffix(".tmp")
        tmp.write_text(json.dumps(state, indent=2, sort_keys=True) + "\n", encoding="utf-8")
        with tmp.open("rb") as handle:
            os.fsync(handle.fileno())
        os.replace(tmp, path)

    def history(self, name: str) -> list[int]:
        return list(self._read_state().get(name, {}).get("history", []))

    def active_version(self, name: str) -> int:
        """The promoted version, or the newest one if none was ever promoted."""
        history = self.history(name)
        if history:
            return history[-1]
        versions = self.versions(name)
        if not versions:
            raise UnknownModelError(f"unknown model '{name}' (known models: {', '.join(self.names()) or 'none'})")
        return versions[-1].version

    @contextlib.contextmanager
    def _locked(self) -> Iterator[None]:
        with (self.state_dir / ".lock").open("a") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(lock, fcntl.LOCK_UN)

    def promote(self, name: str, version: int) -> ModelVersion:
        target = self.get(name, version)
        with self._locked():
            state = self._read_state()
            entry = state.setdefault(name, {"history": []})
            if not entry["history"]:
                # remember what ran before the first promotion, so it can be rolled back to
                current = self.active_version(name)
                if current != version:
                    entry["history"].append(current)
            if not entry["history"] or entry["history"][-1] != version:
                entry["history"].append(version)
            self._write_state(state)
        return target

    def rollback(self, name: str) -> ModelVersion:
        """Make the previously active version active again."""
        with self._locked():
            state = self._read_state()
            history = state.get(name, {}).get("history", [])
            if len(history) < 2:
                raise UnknownModelError(f"model '{name}' has no earlier active version to roll back to")
            history.pop()
            self._write_state(state)
            return self.get(name, history[-1])

    # -- registration ------------------------------------------------------------------------
    def register(self, build_dir: Path, manifest: Manifest, promote: bool = True) -> ModelVersion:
        """Copy a built model into the registry as the next version, atomically.

        ``build_dir`` holds ``model.onnx`` (and any other files). The manifest's version and
        sha256 are filled in here; an interrupted registration leaves nothing behind.
        """
        onnx_path = build_dir / manifest.onnx_file
        if not onnx_path.is_file():
            raise ManifestError(f"{onnx_path}: no ONNX file to register")
        with self._locked():
            existing = self.versions(manifest.name)
            version = (existing[-1].version if existing else 0) + 1
            state = self._read_state()
            if existing and not state.get(manifest.name, {}).get("history"):
                # pin what runs now, so a new version never becomes active by merely existing
                state[manifest.name] = {"history": [existing[-1].version]}
                self._write_state(state)
            staging = Path(tempfile.mkdtemp(prefix=".staging-", dir=self.state_dir))
            try:
                for item in build_dir.iterdir():
                    if item.is_file() and item.name != MANIFEST_FILE:
                        shutil.copy2(item, staging / item.name)
                final = manifest.model_copy(update={"version": version, "onnx_sha256": sha256_of(onnx_path)})
                Manifest.model_validate(final.model_dump())
                write_manifest(staging, final)
                for item in staging.iterdir():
                    with item.open("rb") as handle:
                        os.fsync(handle.fileno())
                target = self.state_dir / manifest.name / str(version)
                target.parent.mkdir(parents=True, exist_ok=True)
                os.rename(staging, target)
            except BaseException:
                shutil.rmtree(staging, ignore_errors=True)
                raise
        registered = ModelVersion(manifest.name, version, target, bundled=False)
        if promote:
            self.promote(manifest.name, version)
        return registered

    def new_build_dir(self) -> Path:
        """An empty folder for a training run to build a model in, named after this process."""
        folder = self.state_dir / f"{BUILD_PREFIX}{os.getpid()}-{uuid.uuid4().hex[:12]}"
        folder.mkdir(parents=True)
        return folder

    def clean_staging(self) -> list[Path]:
        """Remove, and return, the leftovers of registrations and training runs that were killed
        half-way. Build folders of runs whose process still lives (a `train` command beside a
        restarting service) are kept; so is a registration in progress (it holds the lock)."""
        removed = []
        with self._locked():
            removed += list(self.state_dir.glob(".staging-*"))
            for folder in self.state_dir.glob(f"{BUILD_PREFIX}*"):
                owner = folder.name[len(BUILD_PREFIX):].split("-")[0]
                if owner.isdigit():
                    if _process_exists(int(owner)):
                        continue
                elif time.time() - folder.stat().st_mtime < UNOWNED_BUILD_AGE_S:
                    continue
                removed.append(folder)
            for leftover in removed:
                shutil.rmtree(leftover, ignore_errors=True)
        return removed


def _process_exists(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except (ProcessLookupError, OverflowError):  # gone, or no process id at all
        return False
    except PermissionError:  # someone else's process
        return True
    return True
