"""The real microphone path: a clip played into PulseAudio's null sink is recorded and judged."""

from __future__ import annotations

import threading
import time
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
from acoustic_synth import machine_sound, skip_without_portaudio, write_wav

from acoustic.features import FeatureConfig, LogMelExtractor
from acoustic.inspector import AcousticInspector
from acoustic.sources import Clip, MicrophoneSource
from acoustic.virtual_mic import VirtualMicrophone

RATE = 16000
LEAD_IN = np.zeros(RATE // 4, dtype=np.float32)  # PulseAudio may drop a few samples at stream start


def _play_and_record(mic: VirtualMicrophone, source: MicrophoneSource, wav: Path, seconds: float) -> Clip:
    """Start recording, then play ``wav`` from another process while the recording runs."""
    result: dict[str, Clip] = {}
    recorder = threading.Thread(target=lambda: result.setdefault("clip", source.record(seconds)))
    recorder.start()
    time.sleep(0.3)
    mic.play(wav)
    recorder.join(timeout=seconds + 10)
    return result["clip"]


def _align(recorded: np.ndarray, reference: np.ndarray) -> np.ndarray:
    """The part of ``recorded`` that lines up with ``reference`` (found by cross-correlation)."""
    probe = reference[LEAD_IN.size : LEAD_IN.size + 4000]
    scores = np.correlate(recorded, probe, mode="valid")
    start = int(np.argmax(scores)) - LEAD_IN.size
    assert start >= 0 and start + reference.size <= recorded.size, "the played clip was not captured whole"
    return recorded[start : start + reference.size]


def test_features_from_microphone_equal_features_from_disk(virtual_mic: VirtualMicrophone, tmp_path: Path) -> None:
    wav = write_wav(tmp_path / "played.wav", np.concatenate([LEAD_IN, machine_sound(7, seconds=2.0)]))
    from_disk, _ = sf.read(str(wav), dtype="float32")
    with MicrophoneSource("pulse", RATE, 1) as source:
        source.record(0.5)  # let the stream settle
        clip = _play_and_record(virtual_mic, source, wav, 4.0)
        assert clip.error is None and source.overruns == 0
    recorded = _align(clip.mono, from_disk)
    extractor = LogMelExtractor(FeatureConfig())
    np.testing.assert_allclose(extractor(recorded), extractor(from_disk), atol=1e-3)


def test_microphone_records_and_judges(
    virtual_mic: VirtualMicrophone, anomaly_inspector: AcousticInspector, tmp_path: Path
) -> None:
    verdicts = {}
    with MicrophoneSource("pulse", RATE, 1) as source:
        source.record(0.5)
        for name, fault in [("normal", None), ("faulty", "bearing")]:
            body = machine_sound(400, seconds=2.5, fault=fault)
            wav = write_wav(tmp_path / f"{name}.wav", np.concatenate([LEAD_IN, body]))
            clip = _play_and_record(virtual_mic, source, wav, 4.0)
            _, reference = LEAD_IN, sf.read(str(wav), dtype="float32")[0]
            window = _align(clip.mono, reference)[LEAD_IN.size : LEAD_IN.size + 2 * RATE]
            verdicts[name] = anomaly_inspector.judge(window, clip.sample_rate).decision
        silent = source.record(2.0)  # nothing playing: the null sink hears only zeros
        assert anomaly_inspector.judge_clip(silent).decision == "INVALID"
        assert source.overruns == 0 and source.lost_windows == 0
    assert verdicts == {"normal": "OK", "faulty": "NG"}


def test_microphone_reopens_after_the_device_returns(tmp_path: Path) -> None:
    skip_without_portaudio()
    from acoustic.virtual_mic import missing_tools

    if missing_tools():
        pytest.skip(f"PulseAudio not installed ({', '.join(missing_tools())} missing)")
    source = MicrophoneSource("pulse", RATE, 1, retry_s=0.1, max_retry_s=0.2, stall_timeout_s=1.0)
    with VirtualMicrophone(RATE):
        assert source.record(0.5).error is None
    # the server is gone: the next capture fails fast with a reason instead of hanging
    failed = source.record(0.5)
    assert failed.error is not None
    with VirtualMicrophone(RATE):
        time.sleep(0.3)
        deadline = time.monotonic() + 10
        clip = source.record(0.5)
        while clip.error and time.monotonic() < deadline:
            time.sleep(0.2)
            clip = source.record(0.5)
        assert clip.error is None and source.reopens >= 1
        source.close()


def test_a_hung_sound_server_costs_error_clips_not_a_stuck_capture(tmp_path: Path) -> None:
    """A sound server that hangs (alive, not answering) instead of dying: opening the stream would
    wait for it forever. Capture must answer with an error within its open timeout, not pile up
    attempts while the server stays hung, and record again once it answers."""
    skip_without_portaudio()
    from acoustic.virtual_mic import missing_tools

    if missing_tools():
        pytest.skip(f"PulseAudio not installed ({', '.join(missing_tools())} missing)")
    source = MicrophoneSource("pulse", RATE, 1, retry_s=0.1, max_retry_s=0.2, open_timeout_s=2.0)
    with VirtualMicrophone(RATE) as mic:
        mic.freeze()
        started = time.monotonic()
        hung = source.record(0.5)
        assert hung.error is not None and "no answer within 2 s" in hung.error, hung.error
        assert time.monotonic() - started < 4.0 and source.abandoned_streams == 1
        time.sleep(0.3)  # past the back-off: the next capture tries again
        again = source.record(0.5)
        assert again.error is not None and "still waiting" in again.error, again.error
        assert source.abandoned_streams == 1  # the earlier attempt is not stacked on
        mic.thaw()
        deadline = time.monotonic() + 15
        clip = source.record(0.5)
        while clip.error and time.monotonic() < deadline:
            time.sleep(0.2)
            clip = source.record(0.5)
        assert clip.error is None and clip.samples.shape == (RATE // 2, 1), clip.error
        assert source.reopens >= 1
        source.close()


def test_a_stream_that_hangs_on_close_is_abandoned_and_capture_carries_on() -> None:
    """A sound server that dies under a running stream can make PortAudio's abort wait forever;
    the source must not hang with it (a driver stuck in C cannot be produced on demand: the
    stream here stands in for one, the source around it is the real one)."""
    skip_without_portaudio()
    released = threading.Event()

    class HungStream:
        def abort(self) -> None:
            released.wait()

        def close(self) -> None:
            pass

    source = MicrophoneSource("no such device", RATE, 1, retry_s=0.1, max_retry_s=0.1, stall_timeout_s=0.3,
                              startup_grace_s=0.0)
    source._stream = HungStream()  # delivers nothing, and hangs when closed
    try:
        started = time.monotonic()
        clip = source.record(0.2)
        assert clip.error is not None and "delivered no data" in clip.error
        assert time.monotonic() - started < 5.0, "capture returned although the stream's close hung"
        assert source.abandoned_streams == 1
        time.sleep(0.2)
        reopened = source.record(0.2)  # the next capture tries a new stream: an unknown device says so
        assert reopened.error is not None and "cannot open audio device" in reopened.error
        assert source.abandoned_streams == 1
    finally:
        released.set()
