"""The station: everything one config file describes, started in order with errors a technician
can act on (StartupError), and stopped without losing a queued verdict."""

from __future__ import annotations

import json
import logging
import os
import sqlite3
import threading
import time
import uuid
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from edge.access import AccessConfigError, AccessControl, check_startup
from edge.archive import ImageArchive
from edge.config import ReplaySource, StationConfig
from edge.inspection import InspectionService, quality_limits
from edge.line.factory import build_bridge, build_camera
from edge.line.pipeline import LinePipeline
from edge.metrics import StationMetrics
from edge.microphone import ContinuousListener, build_microphone
from edge.model_manager import ModelManager
from edge.page.hub import EventHub
from edge.quality import attach_quality
from edge.retention import KeepOverridden, StorageKeeper
from edge.runner import SourceRunner
from edge.store import VerdictStore
from edge.store.backup import StationLock, integrity_problems
from edge.store.chain import append_audit
from edge.store.signing import StationKey
from edge.upstream import Upstream
from edge.upstream.topics import BrokerUrlError
from edge.workbench import Workbench
from models.manifest import ManifestError
from models.registry import ModelRegistry, UnknownModelError
from vision.sources import FolderReplaySource, FrameSource

if TYPE_CHECKING:
    from acoustic.sources import AudioSource

log = logging.getLogger(__name__)


class StartupError(Exception):
    """The station cannot start; the message says what to fix."""


def check_writable(folder_label: str, path: os.PathLike[str] | str) -> None:
    try:
        os.makedirs(path, exist_ok=True)
        probe = os.path.join(path, f".write-test-{uuid.uuid4().hex}")
        with open(probe, "wb") as handle:
            handle.write(b"ok")
            os.fsync(handle.fileno())
        os.unlink(probe)
    except OSError as exc:
        raise StartupError(
            f"{folder_label} {path} is not writable ({exc.strerror}). Give the service user write access, "
            "or point storage.data_dir in the station config at a writable folder."
        ) from exc


@dataclass
class Station:
    config: StationConfig
    metrics: StationMetrics = field(default_factory=StationMetrics)
    started_at: float = 0.0

    def __post_init__(self) -> None:
        self.store: VerdictStore | None = None
        self.models: ModelManager | None = None
        self.inspection: InspectionService | None = None
        self.runners: list[SourceRunner] = []
        self.line: LinePipeline | None = None
        self.listener: ContinuousListener | None = None
        self.microphone: AudioSource | None = None
        self.access: AccessControl | None = None
        self.key: StationKey | None = None
        self.upstream: Upstream | None = None
        self.keeper: StorageKeeper | None = None
        self._lock: StationLock | None = None
        self.workbench: Workbench | None = None
        self.events: EventHub | None = None  # live changes for the station page (server-sent events)
        self._stopping = threading.Event()

    @property
    def id(self) -> str:
        return self.config.station.id

    def start(self, with_sources: bool = True) -> None:
        cfg = self.config
        check_writable("data folder", cfg.data_dir)
        self._check_database()
        try:
            self.store = VerdictStore(cfg.database_path, cfg.storage.commit_interval_ms / 1000.0,
                                      cfg.storage.max_commit_batch, cfg.storage.sync)
        except (sqlite3.Error, RuntimeError) as exc:
            raise StartupError(f"cannot open the verdict database {cfg.database_path}: {exc}") from exc
        try:
            for line in check_startup(cfg, self.store.reader(), cfg.api.host, cfg.source_path):
                log.warning(line)
        except AccessConfigError as exc:
            raise StartupError(str(exc)) from exc
        self.access = AccessControl.from_config(cfg, self.store)
        try:
            self.key = StationKey.load_or_create(cfg.data_dir)
        except (OSError, ValueError) as exc:
            raise StartupError(f"the station key cannot be read or created: {exc}") from exc
        registry = ModelRegistry(cfg.data_dir / "models")
        registry.clean_staging()
        self.models = ModelManager(registry, cfg.models.threads, cfg.models.thresholds)
        wanted = {cfg.models.vision} | {s.model for s in cfg.sources if s.model}
        for name in sorted(wanted):
            try:
                self.models.vision(name)
            except (ManifestError, UnknownModelError, ValueError) as exc:
                raise StartupError(f"model '{name}' cannot be loaded: {exc}") from exc
        archive = ImageArchive(cfg.data_dir, cfg.storage.save_images, cfg.storage.min_free_mb,
                               cfg.storage.keep_images_days, cfg.storage.image_budget_mb, cfg.storage.ok_sample_rate,
                               cfg.storage.recent_ok_images_mb)
        self.store.add_listener(KeepOverridden(archive))  # an override keeps its OK image held in memory
        self.inspection = InspectionService(self.models, self.store, archive, self.metrics, cfg.models.vision,
                                            int(cfg.api.max_image_megapixels * 1_000_000),
                                            quality_limits(cfg.quality))
        self._load_acoustic_models()
        self.workbench = Workbench(self, self.store, self.models, archive)  # sample listener, before start
        self.inspection.sampler = self.workbench.sampler
        self.quality = attach_quality(self.store, cfg)  # batch figures listener, SPC alarms, batch reports
        try:
            self.upstream = Upstream(cfg.upstream, self.id, self.metrics)
        except BrokerUrlError as exc:
            raise StartupError(f"upstream.mqtt_url: {exc}") from exc
        self.upstream.attach(self.store)  # the outbox listener sees every record from the first one on
        self.events = EventHub()
        self.events.attach(self.store)  # hints only; the page's streams read committed records
        self.store.start()
        self.keeper = StorageKeeper(cfg, self.store, archive, self.metrics)  # images, archives, backups
        self.keeper.start()
        self.workbench.start()
        self.upstream.start()
        self._audit_config()
        self.models.watch()
        microphone = self._build_microphone() if with_sources else None
        if microphone is not None and cfg.microphone is not None and cfg.microphone.mode == "continuous":
            model = cfg.microphone.model or cfg.models.acoustic
            assert model is not None, "validated by the config"
            self.listener = ContinuousListener(cfg.microphone, microphone, self.inspection, model, self.id)
            self.listener.start()
            microphone = None
        if cfg.line is not None and with_sources:
            self._start_line(microphone)
        if with_sources:
            for settings in cfg.sources:
                runner = SourceRunner(self._build_source(settings), self.inspection, self.id, settings.model)
                runner.start()
                self.runners.append(runner)
        self.started_at = time.time()
        log.info("station %s started: %d model(s), %d source(s), database %s", self.id,
                 len(self.models.loaded()), len(self.runners), cfg.database_path)

    def _audit_config(self) -> None:
        """Audit the station file when it differs from the one the last start ran with."""
        assert self.store is not None
        current = self.config.model_dump(mode="json")

        def operation(conn: sqlite3.Connection) -> None:
            row = conn.execute("SELECT after FROM audit_log WHERE action = 'config_applied' ORDER BY id DESC"
                               " LIMIT 1").fetchone()
            before = None if row is None else json.loads(row[0])
            if before != current:
                changed = sorted(k for k in set(current) | set(before or {}) if (before or {}).get(k) != current.get(k))
                append_audit(conn, "system", "config_applied", "config", self.id, before, current,
                             {"file": str(self.config.source_path or ""), "changed_sections": changed})

        self.store.submit(operation).result()

    def _load_acoustic_models(self) -> None:
        cfg = self.config
        assert self.models is not None
        names = {cfg.models.acoustic} | {r.acoustic.model for r in cfg.recipes if r.acoustic and r.acoustic.model}
        if cfg.microphone is not None:
            names.add(cfg.microphone.model)
        for name in sorted(n for n in names if n):
            try:
                self.models.acoustic(name)
            except ImportError as exc:
                raise StartupError(f"acoustic model '{name}' needs the audio extra: pip install "
                                   f"'edge-inspect[audio]' ({exc})") from exc
            except (ManifestError, UnknownModelError, ValueError) as exc:
                raise StartupError(f"acoustic model '{name}' cannot be loaded: {exc}") from exc

    def _build_microphone(self) -> AudioSource | None:
        cfg = self.config
        if cfg.microphone is None:
            return None
        try:
            source = build_microphone(cfg.microphone, cfg)
        except (ImportError, ValueError, OSError) as exc:
            raise StartupError(f"microphone '{cfg.microphone.name}': {exc}") from exc
        self.microphone = source
        return source

    def _start_line(self, microphone: AudioSource | None) -> None:
        cfg = self.config
        assert cfg.line is not None and self.inspection is not None and self.models is not None
        for recipe in cfg.recipes:
            if recipe.model:
                try:
                    self.models.vision(recipe.model)
                except (ManifestError, UnknownModelError, ValueError) as exc:
                    raise StartupError(f"recipe {recipe.number} ({recipe.name}): model '{recipe.model}' cannot be "
                                       f"loaded: {exc}") from exc
        try:
            camera = build_camera(cfg.line.camera, cfg)
            bridge = build_bridge(cfg.line.bridge)
        except ValueError as exc:
            raise StartupError(str(exc)) from exc
        if microphone is not None:
            microphone.open()
        self.line = LinePipeline(cfg, camera, bridge, self.inspection, microphone)
        try:
            self.line.start()
        except OSError as exc:
            raise StartupError(f"the line bridge cannot start ({cfg.line.bridge.type}): {exc}") from exc

    def _check_database(self) -> None:
        """Hold the data folder's station lock (a restore waits for it) and check the database file's
        integrity before opening it; a damaged one stops the start with what to do."""
        path = self.config.database_path
        self._lock = StationLock(self.config.data_dir)
        if not self._lock.acquire(exclusive=False):
            raise StartupError(f"a database restore is running on {self.config.data_dir}: start the station once "
                               f"`edge-inspect db restore` has finished")
        problems = integrity_problems(path, quick=True) if path.is_file() else []
        if problems:
            self._lock.release()
            raise StartupError(
                f"the verdict database {path} failed its integrity check ({'; '.join(problems[:3])}). Restore the "
                f"latest sound backup with `edge-inspect db restore PATH` (scheduled backups are in "
                f"{self.config.backup_dir}); the damaged file is kept aside. Or move the file away to start an "
                f"empty database.")

    def _build_source(self, settings: ReplaySource) -> FrameSource:
        try:
            return FolderReplaySource(settings.name, self.config.resolve(settings.folder), settings.interval_s,
                                      settings.loop, int(self.config.api.max_image_megapixels * 1_000_000))
        except FileNotFoundError as exc:
            raise StartupError(f"{exc}. Fix sources[{settings.name}].folder in the station config.") from exc

    def ready(self) -> tuple[bool, dict[str, object]]:
        models = self.models.loaded() if self.models else {}
        store_ok = self.store is not None and self.store.writable()
        checks: dict[str, object] = {
            "store_writable": store_ok,
            "models": {name: inspector.version for name, inspector in models.items()},
            "sources": {r.source.name: r.running for r in self.runners},
        }
        if self.line is not None:
            checks["camera_connected"] = self.line.camera.connected
        if self.listener is not None:
            checks["listening"] = self.listener.running
        acoustic = self.models.loaded_acoustic() if self.models else {}
        if acoustic:
            checks["acoustic_models"] = {name: inspector.model.version for name, inspector in acoustic.items()}
        return bool(models) and store_ok, checks

    def stop(self) -> None:
        """Stop sources, then drain and close the store. Safe to call more than once."""
        self._stopping.set()
        if self.keeper is not None:
            self.keeper.stop()
            self.keeper = None
        if self.line is not None:
            self.line.stop()
            self.line = None
        if self.listener is not None:
            self.listener.stop()
            self.listener = None
        if self.microphone is not None:
            self.microphone.close()
            self.microphone = None
        for runner in self.runners:
            runner.stop()
        if self.models is not None:
            self.models.stop()
        if self.workbench is not None:  # a running retraining ends as interrupted, while the store is open
            self.workbench.stop()
        if self.upstream is not None:  # before the store closes: it records what was delivered
            self.upstream.stop()
            self.upstream = None
        if self.store is not None:
            self.store.close()
        if self.inspection is not None:
            self.inspection.archive.close()
        if self._lock is not None:
            self._lock.release()
            self._lock = None
