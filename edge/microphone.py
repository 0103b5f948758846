"""The station's microphone: the source a config describes, and continuous listening to a machine."""

from __future__ import annotations

import logging
import threading
import time
from typing import TYPE_CHECKING

from edge.config import MicrophoneSettings, StationConfig
from edge.inspection import InspectionService
from edge.store import PartContext

if TYPE_CHECKING:
    from acoustic.sources import AudioSource

log = logging.getLogger(__name__)


def build_microphone(settings: MicrophoneSettings, config: StationConfig) -> AudioSource:
    """A sounddevice input or a WAV replay with the same interface (acoustic.sources)."""
    from acoustic.sources import MicrophoneSource, WavFileSource

    if settings.type == "wav":
        if settings.folder is None:
            raise ValueError(f"microphone '{settings.name}': type wav needs 'folder'")
        folder = config.resolve(settings.folder)
        files = sorted(folder.glob("*.wav")) if folder.is_dir() else []
        if not files:
            raise ValueError(f"microphone '{settings.name}': no .wav files in {folder}")
        return WavFileSource(files, loop=True, realtime=True, channels=settings.channels)
    device: int | str | None = settings.device
    if isinstance(device, str) and device.isdigit():
        device = int(device)
    return MicrophoneSource(device, settings.sample_rate, settings.channels, settings.buffer_s)


class ContinuousListener:
    """Judges rolling windows of a running machine; every window is a stored verdict, k anomalous
    windows in the last n raise an alarm, and overruns or lost windows are counted and alarmed."""

    def __init__(self, settings: MicrophoneSettings, source: AudioSource, inspection: InspectionService,
                 model: str, station: str) -> None:
        self.settings = settings
        self.source = source
        self.inspection = inspection
        self.model = model
        self.station = station
        self.windows_judged = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name=f"listen-{settings.name}", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self.source.close()
        self._thread.join(5)

    @property
    def running(self) -> bool:
        return self._thread.is_alive()

    def _open_or_alarm(self) -> None:
        """Open the microphone now. If it cannot be opened (not plugged in yet at boot, a sound server
        that is down or hung), raise an alarm and go on: the windows reopen it with back-off, and are
        judged INVALID with the reason until it answers."""
        name = self.settings.name
        try:
            self.source.open()
        except Exception as exc:
            log.warning("microphone %s cannot be opened now: %s", name, exc)
            self.inspection.store.raise_alarm(
                "microphone_unavailable", f"{name}: cannot open the microphone ({exc}); retrying", "critical",
                f"mic:{name}")

    def _run(self) -> None:
        from acoustic.continuous import continuous

        name = self.settings.name
        metrics = self.inspection.metrics
        store = self.inspection.store
        inspector = self.inspection.models.acoustic(self.model)
        overruns_seen = lost_seen = 0
        listening = self.settings.continuous
        try:
            self._open_or_alarm()
            windows = continuous(inspector, self.source, listening.k, listening.n, listening.hop_s)
            for window in windows:
                if self._stop.is_set():
                    return
                started = time.perf_counter()
                clip_seconds = inspector.window_s
                verdict = self.inspection.acoustic_verdict(window.result, inspector, started, clip_seconds,
                                                           inspector.sample_rate)
                part = PartContext(self.station, f"mic:{name}", f"{name}-window-{self.windows_judged + 1}")
                store.record(part, [verdict])
                self.windows_judged += 1
                metrics.verdicts.labels("acoustic", verdict.decision, verdict.model_name or "").inc()
                metrics.audio_overruns.labels(name).set(window.overruns)
                metrics.audio_lost_windows.labels(name).set(window.lost_windows)
                metrics.audio_abandoned_streams.labels(name).set(getattr(self.source, "abandoned_streams", 0))
                if window.alarm:
                    store.raise_alarm("acoustic_anomaly", f"{name}: {listening.k} of the last {listening.n} "
                                      "sound windows are anomalous", "critical", f"mic:{name}")
                if window.overruns > overruns_seen or window.lost_windows > lost_seen:
                    store.raise_alarm("audio_overrun", f"{name}: {window.overruns} input overruns, "
                                      f"{window.lost_windows} lost windows since start", "warning", f"mic:{name}")
                    overruns_seen, lost_seen = window.overruns, window.lost_windows
        except Exception as exc:
            if not self._stop.is_set():
                log.exception("listening on %s stopped", name)
                store.raise_alarm("microphone_failed", f"{name}: listening stopped: {exc}", "critical", f"mic:{name}")
