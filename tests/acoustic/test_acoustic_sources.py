from __future__ import annotations

import threading
import time
from itertools import islice
from pathlib import Path

import numpy as np
import pytest
from acoustic_synth import machine_sound, skip_without_portaudio, write_wav

from acoustic.continuous import KOfNAlarm, continuous
from acoustic.inspector import AcousticInspector, AcousticResult
from acoustic.sources import MicrophoneSource, RingBuffer, WavFileSource

RATE = 16000


def test_ring_buffer_wraps_and_reports_overwritten_spans() -> None:
    ring = RingBuffer(capacity=10, channels=1)
    ring.write(np.arange(7, dtype=np.float32)[:, None])
    ring.write(np.arange(7, 14, dtype=np.float32)[:, None])
    assert ring.written == 14
    np.testing.assert_array_equal(ring.read(4, 10)[:, 0], np.arange(4, 14))  # type: ignore[index]
    assert ring.read(3, 5) is None  # sample 3 was overwritten
    assert not ring.wait_for(15, timeout=0.01)


def test_wav_source_records_and_rolls_windows(tmp_path: Path) -> None:
    wav = write_wav(tmp_path / "a.wav", machine_sound(1, seconds=3.0))
    source = WavFileSource([wav], loop=False)
    clip = source.record(1.0)
    assert clip.samples.shape == (RATE, 1) and clip.error is None
    windows = list(source.windows(1.0, hop_s=0.5))
    assert [w.samples.shape[0] for w in windows] == [RATE] * 3  # from 1.0 s: 1-2, 1.5-2.5, 2-3
    assert source.overruns == 0 and source.lost_windows == 0
    assert source.record(5.0).error == "end of WAV files"


def test_continuous_alarm_after_k_of_n(anomaly_inspector: AcousticInspector, tmp_path: Path) -> None:
    normal = [write_wav(tmp_path / f"n{i}.wav", machine_sound(200 + i)) for i in range(3)]
    faulty = [write_wav(tmp_path / f"f{i}.wav", machine_sound(300 + i, fault="bearing")) for i in range(3)]
    source = WavFileSource(normal + faulty, loop=False)
    verdicts = list(continuous(anomaly_inspector, source, k=2, n=3))
    assert [v.result.decision for v in verdicts] == ["OK"] * 3 + ["NG"] * 3
    assert [v.alarm for v in verdicts] == [False] * 4 + [True] * 2


def test_k_of_n_ignores_invalid_windows() -> None:
    alarm = KOfNAlarm(2, 3)
    ng = AcousticResult("NG", "anomalous", 9.0, 3.0)
    invalid = AcousticResult("INVALID", None, None, 3.0, "silence")
    assert not alarm.update(ng)
    assert not alarm.update(invalid)
    assert alarm.update(ng)
    with pytest.raises(ValueError):
        KOfNAlarm(4, 3)


def test_missing_device_gives_error_clips_and_backs_off() -> None:
    skip_without_portaudio()
    source = MicrophoneSource(device="no-such-microphone-xyz", retry_s=0.2, max_retry_s=1.0)
    started = time.monotonic()
    first = source.record(1.0)
    assert first.error is not None and "no-such-microphone-xyz" in first.error
    second = source.record(1.0)  # within back-off: answered at once, not retried
    assert second.error is not None and "retrying" in second.error
    assert time.monotonic() - started < 1.0
    windows = list(islice(source.windows(0.5), 2))
    assert all(w.error for w in windows)
    source.close()


class _Status:
    input_overflow = True


def test_microphone_counts_overruns_and_lost_windows() -> None:
    """Drive the callback by hand (no device): overflow flags and a lagging consumer are counted."""
    source = MicrophoneSource(device=None, sample_rate=1000, buffer_s=1.0)
    source._stream = object()  # pretend the stream is open; the callback below is the driver
    block = np.ones((250, 1), np.float32)

    def feed(blocks: int, status: object = None) -> None:
        for _ in range(blocks):
            source._callback(block, 250, None, status)

    windows = source.windows(0.5)
    feeder = threading.Timer(0.05, feed, args=(2,))
    feeder.start()
    first = next(windows)
    feeder.join()
    assert first.error is None and first.samples.shape == (500, 1)
    feed(8, _Status())  # 2 s arrive while the consumer is away: more than the 1 s ring holds
    assert source.overruns == 8
    feeder = threading.Timer(0.05, feed, args=(2,))
    feeder.start()
    second = next(windows)
    feeder.join()
    assert source.lost_windows == 1
    assert second.error is None and second.samples.shape == (500, 1)
