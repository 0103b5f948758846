"""Soaks of the real station.

Unattended soak (issue 22, the default): the real service (`edge-inspect run` on loopback) judges parts at a
fixed rate for a long time, each part a camera image (magnetic tiles, the bundled vision model) and a sound
recording (fan id_00 normal clips, a model trained from them) posted by AOI clients over HTTP with the same
serial. Open loop: part n is sent at start + n / rate whatever the answers do. Reports the service's resident
memory growth: the mean of the last window over the second (the first holds the warm-up: the recent OK-image
ring, `storage.recent_ok_images_mb`, bounded at 256 MB, fills in the first minutes; the growth over the first
window is printed too) and its resident memory minute by minute, verdicts lost (acknowledged but absent or changed in
the database after the run) and failed requests, and each modality's answer time p99 in the first and last
windows (10 minutes each in a 1-hour run, a third of a shorter one).
Targets: memory growth under 5 %, zero lost verdicts, last-window p99 within 20 % of the first.

Capture soak (issue 4, ``--seconds``): continuous listening through PulseAudio's null-sink microphone while
the same process judges camera frames without pause (replayed magnetic tiles through the bundled vision
model). Reports audio overruns and lost windows, windows judged, and vision throughput and latency during
the soak, at 16 kHz and at 48 kHz.

Usage: .venv/bin/python bench/bench_soak.py [--minutes 60] [--rate 25] [--json FILE]
       .venv/bin/python bench/bench_soak.py --seconds 600 [--rates 16000 48000] [--json FILE]
"""

from __future__ import annotations

import argparse
import json
import os
import queue
import sys
import tempfile
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import soundfile as sf
import yaml
from scipy.signal import resample_poly

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "tests"))

from support import LiveService, cli_token, free_port  # noqa: E402
from test_fault_injection import missing  # noqa: E402

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
            rows = station.store.reader().execute(
                "SELECT modality, decision, latency_ms FROM verdicts").fetchall()
            vision_ms = [r["latency_ms"] for r in rows if r["modality"] == "vision"]
            decisions: dict[str, int] = {}
            for row in station.store.reader().execute(
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


@dataclass
class Answer:
    at_s: float  # when the part was due, from the start
    modality: str
    seconds: float  # request to answer
    status: int  # 0: no answer (connection error)
    verdict_id: int | None
    decision: str | None


def rss_kb(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    return 0


def unattended_station(workdir: Path) -> Path:
    """A station file: the bundled vision model, a sound model trained from the fan's clips, NG images kept."""
    clips = clips_at(16000, workdir)
    build = workdir / "fan-build"
    build.mkdir()
    train_acoustic_model(clips[:6], {}, "fan", build)
    data = workdir / "data"
    ModelRegistry(data / "models", bundled_root=None).register(build, read_manifest(build))
    config = workdir / "station.yaml"
    config.write_text(yaml.safe_dump({
        "station": {"id": "soak"},
        "storage": {"data_dir": str(data), "save_images": "ng"},
        "models": {"threads": 2, "vision": "tile-anomaly", "acoustic": "fan"},
        "api": {"host": "127.0.0.1", "port": 8080, "max_upload_mb": 2},
    }))
    return config


def unattended(minutes: float, rate: float, clients: int, workdir: Path) -> dict[str, Any]:
    config = unattended_station(workdir)
    images = [p.read_bytes() for p in sorted(TILES.glob("*.jpg"))[:40]]
    sounds = [p.read_bytes() for p in sorted(FAN.glob("*.wav"))[:8]]
    headers = cli_token(config, "aoi-soak", "aoi:verdict")
    service = LiveService(config, free_port()).start(timeout_s=120)
    assert service.process is not None
    pid = service.process.pid
    total_s = minutes * 60.0
    parts = int(total_s * rate)
    due: queue.Queue[tuple[int, float] | None] = queue.Queue()
    answers: list[Answer] = []
    lock = threading.Lock()
    memory: list[tuple[float, int]] = []
    backlog = 0  # the most parts due but not yet taken by a client: the service fell behind the rate
    start = time.monotonic()

    def post(http: httpx.Client, path: str, body: bytes, kind: str, serial: str) -> tuple[float, int, Any]:
        sent = time.monotonic()
        try:
            response = http.post(path, content=body, params={"serial": serial}, headers={"content-type": kind})
        except httpx.HTTPError:
            return time.monotonic() - sent, 0, None
        return time.monotonic() - sent, response.status_code, response.json() if response.status_code == 200 else None

    def client() -> None:
        with httpx.Client(base_url=service.url, timeout=30, headers=headers) as http:
            while (job := due.get()) is not None:
                n, at = job
                done = []
                for modality, path, body, kind in (
                        ("vision", "/api/v1/verdicts/vision", images[n % len(images)], "image/jpeg"),
                        ("acoustic", "/api/v1/verdicts/acoustic", sounds[n % len(sounds)], "audio/wav")):
                    seconds, status, answer = post(http, path, body, kind, f"P{n:08d}")
                    done.append(Answer(at, modality, seconds, status, answer and answer["id"],
                                       answer and answer["decision"]))
                with lock:
                    answers.extend(done)

    def sample_memory(stop: threading.Event) -> None:
        while not stop.wait(2.0):
            memory.append((time.monotonic() - start, rss_kb(pid)))

    workers = [threading.Thread(target=client, daemon=True) for _ in range(clients)]
    for worker in workers:
        worker.start()
    stop_sampling = threading.Event()
    sampler = threading.Thread(target=sample_memory, args=(stop_sampling,), daemon=True)
    sampler.start()
    try:
        for n in range(parts):
            at = n / rate
            delay = start + at - time.monotonic()
            if delay > 0:
                time.sleep(delay)
            due.put((n, at))
            backlog = max(backlog, due.qsize())
            if n and n % int(rate * 60) == 0:
                print(f"minute {n / rate / 60:.0f}: backlog {due.qsize()} parts, "
                      f"rss {memory[-1][1] / 1024 if memory else 0:.0f} MiB", flush=True)
        for _ in workers:
            due.put(None)
        for worker in workers:
            worker.join()
        elapsed = time.monotonic() - start
    finally:
        stop_sampling.set()
        service.stop()  # SIGTERM: the store drains, then the files are read
    acknowledged = {a.verdict_id: str(a.decision) for a in answers if a.verdict_id is not None}
    lost = missing(load_config(config).database_path, acknowledged)
    window = min(600.0, total_s / 3)

    def p99(modality: str, first: bool) -> float | None:
        times = [a.seconds * 1000 for a in answers if a.modality == modality and a.status == 200
                 and (a.at_s < window if first else a.at_s >= total_s - window)]
        return round(float(np.percentile(times, 99)), 1) if times else None

    def mean_rss(first: bool) -> float:
        values = [kb for t, kb in memory if (t < window if first else t >= total_s - window)]
        return float(np.mean(values)) if values else float("nan")

    rss_first, rss_last = mean_rss(True), mean_rss(False)
    settled = [kb for t, kb in memory if window <= t < 2 * window]
    rss_settled = float(np.mean(settled)) if settled else float("nan")
    by_minute = [round(kb / 1024) for t, kb in memory if int(t) % 60 < 2]
    latency: dict[str, dict[str, float | None]] = {}
    for modality in ("vision", "acoustic"):
        first, last = p99(modality, True), p99(modality, False)
        latency[modality] = {"p99_first_ms": first, "p99_last_ms": last,
                             "last_over_first": round(last / first, 3) if first and last else None}
    failed: dict[str, int] = {}
    for a in answers:
        if a.status != 200:
            failed[str(a.status)] = failed.get(str(a.status), 0) + 1
    return {
        "minutes": minutes, "rate": rate, "parts_sent": parts, "seconds": round(elapsed, 1),
        "achieved_parts_per_s": round(parts / elapsed, 2), "backlog_max_parts": backlog, "window_s": round(window, 1),
        "verdicts_acknowledged": len(acknowledged), "lost": len(lost), "failed_requests": failed,
        "rss_mib": {"first_window": round(rss_first / 1024, 1), "second_window": round(rss_settled / 1024, 1),
                    "last_window": round(rss_last / 1024, 1),
                    "max": round(max(kb for _, kb in memory) / 1024, 1) if memory else None},
        "rss_growth_pct": round((rss_last / rss_settled - 1) * 100, 2),
        "rss_growth_over_first_window_pct": round((rss_last / rss_first - 1) * 100, 2),
        "rss_mib_by_minute": by_minute,
        "latency": latency,
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--minutes", type=float, default=60.0, help="unattended soak: its length")
    parser.add_argument("--rate", type=float, default=25.0, help="unattended soak: parts per second")
    parser.add_argument("--clients", type=int, default=8, help="unattended soak: AOI clients sending due parts")
    parser.add_argument("--seconds", type=float, default=None, help="run the capture soak (issue 4) instead")
    parser.add_argument("--rates", type=int, nargs="+", default=[16000, 48000], help="capture soak: sample rates")
    parser.add_argument("--json", type=Path, default=None)
    args = parser.parse_args()
    if not FAN.is_dir() or not TILES.is_dir():
        print(f"needs the development datasets under {DATASETS}")
        return 2
    if args.seconds is None:
        print(f"# unattended soak, {os.cpu_count()} cores: {args.minutes:g} min at {args.rate:g} parts/s, "
              "each part an image and a sound over HTTP")
        with tempfile.TemporaryDirectory(prefix="soak-") as workdir:
            result = unattended(args.minutes, args.rate, args.clients, Path(workdir))
        print(json.dumps(result))
        ratios = [f["last_over_first"] for f in result["latency"].values()]
        met = (result["rss_growth_pct"] < 5 and result["lost"] == 0 and not result["failed_requests"]
               and result["backlog_max_parts"] < args.rate and all(r is not None and r <= 1.2 for r in ratios))
        print(f"target: memory growth < 5 %, zero lost verdicts, last-window p99 within 20 % of the first -> "
              f"{'MET' if met else 'MISSED'}")
        if args.json:
            args.json.write_text(json.dumps(result, indent=2))
        return 0
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
