"""Capture soak in the real station: continuous listening through PulseAudio's null-sink
microphone while the same process judges camera frames without pause (replayed magnetic tiles
through the bundled vision model). Reports audio overruns and lost windows, windows judged, and
vision throughput and latency during the soak — at 16 kHz and at 48 kHz.

Usage: .venv/bin/python bench/bench_soak.py [--seconds 600] [--rates 16000 48000]
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import numpy as np
import soundfile as sf
import yaml
from scipy.signal import resample_poly

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from acoustic.training import train_acoustic_model  # noqa: E402
from acoustic.virtual_mic import VirtualMicrophone  # noqa: E402
from edge.config import load_config  # noqa: E402
from edge.station import Station  # noqa: E402
from models.manifest import read_manifest  # noqa: E402
from models.registry import ModelRegistry  # noqa: E402

DATASETS = ROOT.parent / "shared" / "datasets"
FAN = DATASETS / "mimii-fan-id00" / "normal"
TILES = DATASETS / "magnetic-tile" / "free"


def clips_at(rate: int, folder: Path) -> list[Path]:
    """The fan's normal clips at ``rate`` (resampled from 16 kHz when needed)."""
    out = []
    for path in sorted(FAN.glob("*.wav"))[:8]:
        samples, original = sf.read(str(path), dtype="float32")
        if rate != original:
            samples = resample_poly(samples, rate // 1000, original // 1000).astype(np.float32)
        target = folder / f"{path.stem}_{rate}.wav"
        sf.write(str(target), samples, rate, subtype="PCM_16")
        out.append(target)
    return out


def soak(rate: int, seconds: float, workdir: Path) -> dict[str, Any]:
    clips = clips_at(rate, workdir)
    build = workdir / f"fan-{rate}"
    build.mkdir()
    train_acoustic_model(clips[:6], {}, f"fan-{rate}", build)
    data = workdir / f"data-{rate}"
    ModelRegistry(data / "models", bundled_root=None).register(build, read_manifest(build))
    loop_wav = workdir / f"loop-{rate}.wav"
    sf.write(str(loop_wav), np.concatenate([sf.read(str(c), dtype="float32")[0] for c in clips]), rate)
    frames = workdir / "frames"
    if not frames.exists():
        frames.mkdir()
        for path in sorted(TILES.glob("*.jpg"))[:40]:
            (frames / path.name).symlink_to(path)
    config = workdir / f"station-{rate}.yaml"
    config.write_text(yaml.safe_dump({
        "station": {"id": "soak"},
        "storage": {"data_dir": str(data), "save_images": "none"},
        "models": {"threads": 2, "vision": "tile-anomaly", "acoustic": f"fan-{rate}"},
        "sources": [{"type": "replay", "name": "cam", "folder": str(frames), "interval_s": 0.001}],
        "microphone": {"type": "sounddevice", "device": "pulse", "sample_rate": rate, "mode": "continuous",
                       "continuous": {"k": 3, "n": 5}},
    }))
    with VirtualMicrophone(sample_rate=rate) as mic:
        stop = threading.Event()

        def play_forever() -> None:
            while not stop.is_set():
                mic.play(loop_wav, wait=True)

        player = threading.Thread(target=play_forever, daemon=True)
        player.start()
        station = Station(load_config(config))
        station.start()
        started = time.monotonic()
        try:
            time.sleep(seconds)
        finally:
            elapsed = time.monotonic() - started
            assert station.listener is not None and station.store is not None
            source = station.listener.source
            overruns, lost = source.overruns, source.lost_windows
            windows = station.listener.windows_judged
            runner = station.runners[0]
            rows = station.store._reader().query(
                "SELECT modality, decision, latency_ms FROM verdicts")
            vision_ms = [r["latency_ms"] for r in rows if r["modality"] == "vision"]
            decisions: dict[str, int] = {}
            for row in station.store._reader().query(
                    "SELECT decision, COUNT(*) AS n FROM verdicts WHERE modality = 'acoustic' GROUP BY decision"):
                decisions[row["decision"]] = row["n"]
            station.stop()
            stop.set()
    return {
        "rate": rate, "seconds": round(elapsed, 1), "overruns": overruns, "lost_windows": lost,
        "windows_judged": windows, "window_decisions": decisions, "vision_verdicts": runner.judged,
        "vision_per_s": round(runner.judged / elapsed, 1),
        "vision_latency_ms": {"p50": round(float(np.percentile(vision_ms, 50)), 2),
                              "p99": round(float(np.percentile(vision_ms, 99)), 2)} if vision_ms else None,
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seconds", type=float, default=600.0)
    parser.add_argument("--rates", type=int, nargs="+", default=[16000, 48000])
    parser.add_argument("--json", type=Path, default=None)
    args = parser.parse_args()
    if not FAN.is_dir() or not TILES.is_dir():
        print(f"needs the development datasets under {DATASETS}")
        return 2
    results = []
    print(f"# capture soak in the station, {os.cpu_count()} cores: continuous listening + continuous vision")
    for rate in args.rates:
        with tempfile.TemporaryDirectory(prefix="soak-") as workdir:
            result = soak(rate, args.seconds, Path(workdir))
        results.append(result)
        print(json.dumps(result))
    ok = all(r["overruns"] == 0 and r["lost_windows"] == 0 for r in results)
    print(f"target: zero overruns, zero lost windows -> {'MET' if ok else 'MISSED'}")
    if args.json:
        args.json.write_text(json.dumps(results, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
