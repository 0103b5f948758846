"""Audio sources with one interface: a live microphone (sounddevice) and WAV-file replay.

Both offer per-part capture (``record(seconds)``) and continuous rolling windows
(``windows(window_s, hop_s)``), and expose their counters as attributes: ``overruns`` (blocks
the audio driver dropped because the callback was late) and ``lost_windows`` (windows that were
overwritten in the ring buffer before the consumer read them).
"""

from __future__ import annotations

import atexit
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import Any, Protocol

import numpy as np
import numpy.typing as npt

FloatArray = npt.NDArray[np.float32]


@dataclass
class Clip:
    """A stretch of captured audio; ``error`` is set when the device failed to deliver it."""

    samples: FloatArray  # (frames, channels) float32 in [-1, 1]
    sample_rate: int
    started_at: float  # time.time() of the first sample (approximate for live capture)
    error: str | None = None

    @property
    def duration_s(self) -> float:
        return self.samples.shape[0] / self.sample_rate

    @property
    def mono(self) -> FloatArray:
        if self.samples.ndim == 1:
            return self.samples
        return self.samples.mean(axis=1, dtype=np.float32) if self.samples.shape[1] > 1 else self.samples[:, 0]


class AudioSource(Protocol):
    sample_rate: int
    channels: int
    overruns: int
    lost_windows: int

    def open(self) -> None: ...
    def close(self) -> None: ...
    def record(self, seconds: float) -> Clip: ...
    def windows(self, window_s: float, hop_s: float | None = None) -> Iterator[Clip]: ...


class RingBuffer:
    """Fixed-capacity sample ring written by the audio callback and read by the consumer.

    Positions are absolute sample counts since the stream started, so a reader can tell
    whether the data it wants is still in the ring (``read`` returns None when it is not).
    """

    def __init__(self, capacity: int, channels: int) -> None:
        self.capacity = capacity
        self.channels = channels
        self._data = np.zeros((capacity, channels), dtype=np.float32)
        self._written = 0
        self._lock = threading.Lock()
        self._cond = threading.Condition(self._lock)

    @property
    def written(self) -> int:
        with self._lock:
            return self._written

    def write(self, block: npt.NDArray[np.floating[Any]]) -> None:
        n = block.shape[0]
        if n > self.capacity:
            block, n = block[-self.capacity :], self.capacity
        with self._cond:
            start = self._written % self.capacity
            first = min(n, self.capacity - start)
            self._data[start : start + first] = block[:first]
            self._data[: n - first] = block[first:]
            self._written += block.shape[0]
            self._cond.notify_all()

    def wait_for(self, position: int, timeout: float) -> bool:
        """Block until ``position`` samples have been written; False on timeout."""
        with self._cond:
            return self._cond.wait_for(lambda: self._written >= position, timeout=timeout)

    def read(self, start: int, n: int) -> FloatArray | None:
        """Samples ``start .. start+n`` (absolute), or None if they were overwritten already."""
        with self._lock:
            if start + n > self._written:
                raise ValueError("reading beyond what was written")
            if self._written - start > self.capacity:
                return None
            index = (np.arange(start, start + n) % self.capacity)
            return self._data[index].copy()

    def reset(self) -> None:
        with self._lock:
            self._written = 0


STREAM_CLOSE_TIMEOUT_S = 2.0  # a stream whose abort takes longer is abandoned (see close_stream)
STREAM_OPEN_TIMEOUT_S = 5.0  # a stream that takes longer to open and start is abandoned (see StreamOpener)


def _skip_portaudio_exit_cleanup() -> None:
    """PortAudio would close a hung stream again at interpreter exit and hang there too: skip that
    clean-up; the operating system releases the device when the process ends."""
    import sounddevice as sd

    exit_cleanup = getattr(sd, "_exit_handler", None)  # sounddevice's Pa_Terminate at exit
    if exit_cleanup is not None:
        atexit.unregister(exit_cleanup)


def close_stream(stream: Any, timeout_s: float = STREAM_CLOSE_TIMEOUT_S) -> bool:
    """Abort and close a sounddevice stream, waiting at most ``timeout_s``; False if it hung.

    When the sound server dies under a running stream, PortAudio's abort can wait forever for
    the driver (seen with ALSA's PulseAudio plugin). The close then runs on in a daemon thread
    and the stream is abandoned, so capture can reopen on a new stream (and PortAudio's clean-up
    at exit is skipped, see _skip_portaudio_exit_cleanup).
    """

    def abort_and_close() -> None:
        try:
            stream.abort()
            stream.close()
        except Exception:  # a vanished device may fail to close; it is gone either way
            pass

    closer = threading.Thread(target=abort_and_close, name="audio-stream-close", daemon=True)
    closer.start()
    closer.join(timeout_s)
    if not closer.is_alive():
        return True
    _skip_portaudio_exit_cleanup()
    return False


class StreamOpener:
    """Opens and starts a stream on a helper thread, so that a sound server that hangs (alive but not
    answering) cannot hang the caller: ``result`` waits a bounded time. A stream that opens after the
    caller gave up is closed at once by the helper."""

    def __init__(self, create: Callable[[], Any]) -> None:
        self._create = create
        self._lock = threading.Lock()
        self._done = threading.Event()
        self._stream: Any = None
        self._error: BaseException | None = None
        self._abandoned = False
        self._thread = threading.Thread(target=self._run, name="audio-stream-open", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        try:
            stream = self._create()
        except Exception as exc:  # PortAudioError, ValueError for an unknown device name
            with self._lock:
                self._error = exc
            self._done.set()
            return
        with self._lock:
            self._stream, late = stream, self._abandoned
        self._done.set()
        if late:
            close_stream(stream)

    @property
    def pending(self) -> bool:
        """The helper is still waiting for the sound server."""
        return self._thread.is_alive()

    def result(self, timeout_s: float) -> Any:
        """The started stream; re-raises the open's error, or raises TimeoutError (the attempt is then
        abandoned: its stream, if it ever opens, is closed)."""
        self._done.wait(timeout_s)
        with self._lock:
            if self._error is not None:
                raise self._error
            if self._stream is not None:
                return self._stream
            self._abandoned = True
        _skip_portaudio_exit_cleanup()
        raise TimeoutError(f"no answer within {timeout_s:g} s (is the sound server hung?)")


class MicrophoneSource:
    """A sounddevice input stream feeding a ring buffer; reopened with back-off when it fails.

    ``device`` is a sounddevice index or (part of) a device name, None for the default input.
    The callback only copies samples into the ring, so models running elsewhere never make
    the driver drop a buffer. A device that disappears makes ``record`` return a Clip with
    ``error`` set (judged INVALID) at once; later calls reopen it, waiting between attempts
    from ``retry_s`` doubling up to ``max_retry_s``, so the rest of the station never blocks.
    Opening and closing are bounded too (``open_timeout_s``, STREAM_CLOSE_TIMEOUT_S): a sound
    server that hangs instead of dying costs an error clip, not a stuck capture thread.
    """

    def __init__(
        self,
        device: int | str | None = None,
        sample_rate: int = 16000,
        channels: int = 1,
        buffer_s: float = 60.0,
        blocksize: int = 0,
        latency: str | float = "high",
        retry_s: float = 1.0,
        max_retry_s: float = 30.0,
        stall_timeout_s: float = 2.0,
        startup_grace_s: float = 5.0,
        open_timeout_s: float = STREAM_OPEN_TIMEOUT_S,
    ) -> None:
        self.device = device
        self.sample_rate = sample_rate
        self.channels = channels
        self.blocksize = blocksize
        self.latency = latency
        self.retry_s = retry_s
        self.max_retry_s = max_retry_s
        self.stall_timeout_s = stall_timeout_s
        self.startup_grace_s = startup_grace_s
        self.open_timeout_s = open_timeout_s
        self.ring = RingBuffer(int(buffer_s * sample_rate), channels)
        self.overruns = 0
        self.lost_windows = 0
        self.reopens = 0
        self.abandoned_streams = 0  # streams whose close or open hung (a dead or hung sound server)
        self.last_error: str | None = None
        self._stream: Any = None
        self._stream_failed = threading.Event()
        self._next_retry = 0.0
        self._backoff = retry_s
        self._lock = threading.Lock()
        self._generation = 0  # which stream's callbacks count: a late, abandoned stream's do not
        self._opener: StreamOpener | None = None

    # -- stream life cycle ----------------------------------------------------------------------
    def _callback(self, indata: npt.NDArray[np.float32], frames: int, time_info: Any, status: Any) -> None:
        if status and status.input_overflow:
            self.overruns += 1
        self.ring.write(indata)

    def _new_stream(self, generation: int) -> Any:
        """A started sounddevice stream whose callbacks count only while ``generation`` is current."""
        import sounddevice as sd

        def callback(indata: npt.NDArray[np.float32], frames: int, time_info: Any, status: Any) -> None:
            if generation == self._generation:
                self._callback(indata, frames, time_info, status)

        def finished() -> None:
            if generation == self._generation:
                self._stream_failed.set()

        stream = sd.InputStream(device=self.device, samplerate=self.sample_rate, channels=self.channels,
                                dtype="float32", blocksize=self.blocksize, latency=self.latency,
                                callback=callback, finished_callback=finished)
        stream.start()
        return stream

    def open(self) -> None:
        """Open the stream now; raises if the device cannot be opened or does not answer within
        ``open_timeout_s`` (a hung sound server: the attempt is abandoned, see StreamOpener)."""
        with self._lock:
            if self._stream is not None:
                return
            if self._opener is not None and self._opener.pending:
                raise TimeoutError("an earlier attempt to open it is still waiting for the sound server")
            self._stream_failed.clear()
            self.ring.reset()
            self._generation += 1
            generation = self._generation
            self._opener = StreamOpener(lambda: self._new_stream(generation))
            try:
                stream = self._opener.result(self.open_timeout_s)
            except TimeoutError:
                self._generation += 1  # the abandoned stream's callbacks no longer count
                self.abandoned_streams += 1
                raise
            self._stream = stream
            self._backoff = self.retry_s
            self.last_error = None

    def close(self) -> None:
        with self._lock:
            stream, self._stream = self._stream, None
        if stream is not None and not close_stream(stream):
            self.abandoned_streams += 1

    def _fail(self, reason: str) -> None:
        self.close()
        self.last_error = reason
        self._next_retry = time.monotonic() + self._backoff
        self._backoff = min(self._backoff * 2.0, self.max_retry_s)

    def _ensure_open(self) -> str | None:
        """Open (or reopen after a failure, respecting back-off); return the error if unavailable."""
        if self._stream is not None and self._stream_failed.is_set():
            self._fail(f"audio device {self.device!r} stopped")
        if self._stream is not None:
            return None
        if time.monotonic() < self._next_retry:
            return f"audio device {self.device!r} unavailable ({self.last_error}); retrying"
        had_failed = self.last_error is not None
        try:
            self.open()
        except Exception as exc:  # PortAudioError, ValueError for an unknown device name
            self._fail(f"cannot open audio device {self.device!r}: {exc}")
            return self.last_error
        if had_failed:
            self.reopens += 1
        return None

    def __enter__(self) -> MicrophoneSource:
        self.open()
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()

    # -- capture --------------------------------------------------------------------------------
    def _error_clip(self, reason: str) -> Clip:
        return Clip(np.zeros((0, self.channels), dtype=np.float32), self.sample_rate, time.time(), reason)

    def _read_span(self, start: int, n: int) -> Clip | None:
        """Wait for samples ``start .. start+n``; None when they were overwritten (a lost window)."""
        timeout = n / self.sample_rate + self.stall_timeout_s
        if self.ring.written == 0:  # a freshly opened stream may take a few seconds to deliver
            timeout += self.startup_grace_s
        if not self.ring.wait_for(start + n, timeout):
            reason = f"audio device {self.device!r} delivered no data for {timeout:.1f} s (disconnected?)"
            self._fail(reason)
            return self._error_clip(reason)
        samples = self.ring.read(start, n)
        if samples is None:
            return None
        started = time.time() - (self.ring.written - start) / self.sample_rate
        return Clip(samples, self.sample_rate, started)

    def record(self, seconds: float) -> Clip:
        """Capture the next ``seconds`` of audio (per-part mode)."""
        error = self._ensure_open()
        if error:
            return self._error_clip(error)
        n = round(seconds * self.sample_rate)
        clip = self._read_span(self.ring.written, n)
        if clip is None:
            self.lost_windows += 1
            return self._error_clip("capture buffer overwritten before it was read")
        return clip

    def windows(self, window_s: float, hop_s: float | None = None) -> Iterator[Clip]:
        """Rolling windows forever (continuous mode); error clips while the device is away."""
        n = round(window_s * self.sample_rate)
        hop = round((hop_s or window_s) * self.sample_rate)
        position: int | None = None
        while True:
            error = self._ensure_open()
            if error:
                position = None
                time.sleep(min(self.retry_s, window_s))
                yield self._error_clip(error)
                continue
            if position is None or position > self.ring.written:  # fresh or reopened stream
                position = self.ring.written
            clip = self._read_span(position, n)
            if clip is None:  # the consumer fell behind a whole ring: skip to the newest data
                self.lost_windows += 1
                position = max(0, self.ring.written - n)
                continue
            if clip.error:
                position = None
            else:
                position += hop
            yield clip


class WavFileSource:
    """Replays WAV files through the same interface (embedded default and tests).

    Files are read in order and looped; all must share one sample rate. ``realtime`` paces
    reads like a live device. Counters stay zero: a file never overruns.
    """

    def __init__(self, paths: Sequence[Path], loop: bool = True, realtime: bool = False, channels: int = 1) -> None:
        import soundfile as sf

        if not paths:
            raise ValueError("WavFileSource needs at least one WAV file")
        parts: list[FloatArray] = []
        rates: set[int] = set()
        for path in paths:
            data, rate = sf.read(str(path), dtype="float32", always_2d=True)
            rates.add(int(rate))
            if data.shape[1] != channels:
                data = np.repeat(data.mean(axis=1, keepdims=True), channels, axis=1)
            parts.append(data)
        if len(rates) != 1:
            raise ValueError(f"WAV files have different sample rates {sorted(rates)}; resample them first")
        self.paths = list(paths)
        self.sample_rate = rates.pop()
        self.channels = channels
        self.loop = loop
        self.realtime = realtime
        self.overruns = 0
        self.lost_windows = 0
        self._data = np.concatenate(parts)
        self._position = 0

    def open(self) -> None:
        self._position = 0

    def close(self) -> None:
        pass

    def __enter__(self) -> WavFileSource:
        self.open()
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()

    def _take(self, start: int, n: int) -> FloatArray | None:
        total = self._data.shape[0]
        if not self.loop and start + n > total:
            return None
        index = np.arange(start, start + n) % total
        return self._data[index]

    def record(self, seconds: float) -> Clip:
        n = round(seconds * self.sample_rate)
        samples = self._take(self._position, n)
        if samples is None:
            return Clip(np.zeros((0, self.channels), np.float32), self.sample_rate, time.time(), "end of WAV files")
        if self.realtime:
            time.sleep(seconds)
        self._position += n
        return Clip(samples, self.sample_rate, time.time())

    def windows(self, window_s: float, hop_s: float | None = None) -> Iterator[Clip]:
        n = round(window_s * self.sample_rate)
        hop = round((hop_s or window_s) * self.sample_rate)
        while True:
            samples = self._take(self._position, n)
            if samples is None:
                return
            if self.realtime:
                time.sleep(hop / self.sample_rate)
            yield Clip(samples, self.sample_rate, time.time())
            self._position += hop
