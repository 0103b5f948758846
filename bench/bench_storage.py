"""Benchmark of storage care (issue 22), in one run on one machine:

1. Archiving: ``--rows`` verdicts are stored (sync full), then archived to gzip NDJSON files while a writer keeps
   recording verdicts at ``--rate`` parts/s. Figures: archiving rate (records/s, file writing and removal
   together), the longest removal transaction, and the writer's latency (submit to durable) during archiving
   against the same writer's latency just before it in the same run (p50/p99/max: the pause it felt).
2. A full disk during a run: a real ``edge-inspect run`` replaying the sample images with every image kept,
   its free-space floor set ``--margin-mb`` below the data filesystem's real free space; a ballast file then
   fills the disk past the floor. Checked: verdicts keep being stored, the images_not_kept alarm is raised, no
   crash; the ballast removed, the alarm clears. (Real statvfs: on a shared machine other writers move the
   free space too; the margin is chosen larger than their noise.)
3. Image writes (``--images N``, alone with ``--images-only``): per kept image, the archive's durable write
   (temporary name, fsync, rename, folder sync: one batch per image, as an NG part is written) against a plain
   write of the same bytes, interleaved in the same run (p50/p99 and the ratio of medians); and per OK part, what
   the earlier grace files cost (an uncompressed PNG of the frame, written) against holding it in memory.
   ``--frame WxH`` sets the camera frame (default 2448x2048, 5 MP grey); an upload is a JPEG of ``--jpeg-kb``.
   Files go under ``--dir`` (default: a folder in the system temporary folder; give the data disk's).

Usage: .venv/bin/python bench/bench_storage.py [--rows 100000] [--rate 25] [--margin-mb 200] [--json out.json]
       [--skip-disk] [--images 200] [--images-only] [--frame 2448x2048] [--jpeg-kb 300] [--dir PATH]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import yaml

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from edge.archive import ImageArchive  # noqa: E402
from edge.store import NewVerdict, PartContext, VerdictStore  # noqa: E402
from edge.store.archiving import archive_verdicts  # noqa: E402
from edge.store.chain import utc_now  # noqa: E402
from edge.store.verify import verify_database  # noqa: E402
from vision.images import encode_png  # noqa: E402


def _verdict(i: int) -> NewVerdict:
    return NewVerdict("vision", "NG" if i % 10 == 0 else "OK", "good", 0.01 * (i % 100), 0.5, "tile-anomaly", 3,
                      6.5, details={"width": 256, "height": 256, "timings_ms": {"model": 5.1, "quality": 0.4}})


def _percentiles(values: list[float]) -> dict[str, float]:
    array = np.asarray(values) if values else np.asarray([0.0])
    return {"n": len(values), "p50_ms": round(float(np.percentile(array, 50)), 2),
            "p99_ms": round(float(np.percentile(array, 99)), 2), "max_ms": round(float(array.max()), 2)}


def bench_archiving(folder: Path, rows: int, rate: float) -> dict[str, Any]:
    store = VerdictStore(folder / "verdicts.db")
    store.start()
    started = time.perf_counter()
    pending = []
    for i in range(rows):
        pending.append(store.record(PartContext("bench", "replay", serial=f"S{i}"), [_verdict(i)]))
        if len(pending) >= 500:
            for future in pending:
                future.result()
            pending = []
    for future in pending:
        future.result()
    fill_s = time.perf_counter() - started
    cutoff = utc_now()
    latencies: dict[str, list[float]] = {"before": [], "during": []}
    phase = ["before"]
    stop = threading.Event()

    def writer() -> None:
        i = rows
        while not stop.is_set():
            begun = time.perf_counter()
            store.record(PartContext("bench", "line", serial=f"L{i}"), [_verdict(i)]).result()
            latencies[phase[0]].append((time.perf_counter() - begun) * 1000.0)
            i += 1
            stop.wait(max(0.0, 1.0 / rate - (time.perf_counter() - begun)))

    thread = threading.Thread(target=writer)
    thread.start()
    time.sleep(5.0)  # the baseline: the same writer before archiving
    phase[0] = "during"
    began = time.perf_counter()
    run = archive_verdicts(store, folder / "archive", cutoff)
    archive_s = time.perf_counter() - began
    stop.set()
    thread.join()
    store.close()
    reports = verify_database(folder / "verdicts.db")
    size = sum(p.stat().st_size for p in (folder / "archive").glob("*.gz"))
    return {"rows": rows, "fill_s": round(fill_s, 2), "archived": run.records, "files": len(run.files),
            "archive_s": round(archive_s, 2), "records_per_s": round(run.records / archive_s),
            "archive_bytes": size, "bytes_per_record": round(size / max(1, run.records), 1),
            "removal_transactions": run.removal_transactions,
            "longest_removal_ms": round(run.longest_removal_ms, 2),
            "writer_before": _percentiles(latencies["before"]), "writer_during": _percentiles(latencies["during"]),
            "chain_intact_after": all(r.intact for r in reports)}


def bench_full_disk(folder: Path, margin_mb: float) -> dict[str, Any]:
    data = folder / "data"
    data.mkdir(parents=True)
    free_mb = shutil.disk_usage(data).free / 2**20
    floor_mb = free_mb - margin_mb
    config = yaml.safe_load((ROOT / "config" / "station.yaml").read_text())
    config["storage"].update({"data_dir": str(data), "save_images": "all", "min_free_mb": floor_mb,
                              "image_budget_mb": 0, "housekeeping_interval_s": 1, "backup_interval_hours": 0})
    config["sources"][0]["folder"] = str(ROOT / "samples" / "magnetic-tile")
    config["sources"][0]["interval_s"] = 0.1
    config["api"]["port"] = port = _free_port()
    path = folder / "station.yaml"
    path.write_text(yaml.safe_dump(config))
    log = (folder / "service.log").open("wb")
    service = subprocess.Popen([sys.executable, "-m", "edge.cli", "run", "--config", str(path)], stdout=log,
                               stderr=subprocess.STDOUT, cwd=ROOT)
    url = f"http://127.0.0.1:{port}"
    timeline: list[dict[str, Any]] = []
    try:
        _wait_ready(url, service)

        def snapshot(stage: str) -> dict[str, Any]:
            verdicts = httpx.get(f"{url}/api/v1/verdicts", params={"since": 0, "limit": 1000}, timeout=10).json()
            alarms = [a for a in httpx.get(f"{url}/api/v1/alarms", timeout=10).json()
                      if a["kind"] == "images_not_kept"]
            kept = sum(1 for v in verdicts["items"] if v["image_ref"])
            point = {"stage": stage, "t_s": round(time.monotonic() - t0, 1), "alive": service.poll() is None,
                     "verdicts": len(verdicts["items"]), "with_image": kept,
                     "alarm_active": any(a["cleared_at"] is None for a in alarms),
                     "free_mb_over_floor": round(shutil.disk_usage(data).free / 2**20 - floor_mb, 1)}
            timeline.append(point)
            return point

        t0 = time.monotonic()
        time.sleep(3)
        snapshot("before")
        ballast = data / "ballast.bin"
        with open(ballast, "wb") as handle:  # fill past the floor
            handle.truncate(0)
            block = b"\0" * 2**20
            for _ in range(int(margin_mb + 50)):
                handle.write(block)
            handle.flush()
            os.fsync(handle.fileno())
        time.sleep(4)
        full = snapshot("disk at its floor")
        time.sleep(4)
        later = snapshot("still full")
        ballast.unlink()
        time.sleep(4)
        snapshot("space returned")
        return {"floor_mb": round(floor_mb), "margin_mb": margin_mb, "timeline": timeline,
                "verdicts_flowed_while_full": later["verdicts"] > full["verdicts"],
                "images_not_kept_while_full": later["with_image"] == full["with_image"] or None,
                "alarm_raised": full["alarm_active"] or later["alarm_active"],
                "alarm_cleared": not timeline[-1]["alarm_active"], "no_crash": service.poll() is None}
    finally:
        service.terminate()
        service.wait(30)
        log.close()


def bench_image_writes(folder: Path, count: int, frame_size: tuple[int, int], jpeg_kb: int) -> dict[str, Any]:
    folder.mkdir(parents=True)
    archive = ImageArchive(folder, "all", min_free_mb=0)
    rng = np.random.default_rng(0)
    upload = rng.integers(0, 256, jpeg_kb * 1024, dtype=np.uint8).tobytes()  # the size of a JPEG upload
    frame = (rng.integers(0, 40, frame_size[::-1], dtype=np.uint8) + 30)  # a dark 8-bit camera frame
    plain: list[float] = []
    durable: list[float] = []
    try:
        for i in range(count):  # interleaved: both see the same disk state
            path = archive.reserve("jpg")
            assert path is not None
            started = time.perf_counter()
            path.with_name(f"plain-{i}.jpg").write_bytes(upload)  # as images were written before
            plain.append((time.perf_counter() - started) * 1000.0)
            started = time.perf_counter()
            archive.write_later([(path, upload)]).result()
            durable.append((time.perf_counter() - started) * 1000.0)
        grace: list[float] = []
        held: list[float] = []
        for i in range(min(count, 20)):
            started = time.perf_counter()
            (folder / f"grace-{i}.png").write_bytes(encode_png(frame, 0))  # what every OK part cost before
            grace.append((time.perf_counter() - started) * 1000.0)
            started = time.perf_counter()
            archive.recent.put(f"held-{i}", frame)
            held.append((time.perf_counter() - started) * 1000.0)
    finally:
        archive.close()
    durable_p50 = float(np.median(durable))
    return {"images": count, "image_bytes": len(upload), "frame": f"{frame_size[0]}x{frame_size[1]}",
            "plain_write": _percentiles(plain), "durable_write": _percentiles(durable),
            "durable_over_plain_p50": round(durable_p50 / max(float(np.median(plain)), 1e-6), 2),
            "durable_cost_p50_ms": round(durable_p50 - float(np.median(plain)), 2),
            "ok_part_grace_file": _percentiles(grace), "ok_part_held": _percentiles(held)}


def _free_port() -> int:
    import socket
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _wait_ready(url: str, service: subprocess.Popen[bytes]) -> None:
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if service.poll() is not None:
            raise RuntimeError(f"edge-inspect run exited with {service.returncode}")
        try:
            if httpx.get(f"{url}/api/v1/health", timeout=1).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.2)
    raise RuntimeError("edge-inspect run not ready after 60 s")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rows", type=int, default=100_000)
    parser.add_argument("--rate", type=float, default=25.0, help="parts/s the writer records during archiving")
    parser.add_argument("--margin-mb", type=float, default=200.0)
    parser.add_argument("--skip-disk", action="store_true")
    parser.add_argument("--json", type=Path)
    parser.add_argument("--images", type=int, default=0, help="kept images to time (0: none)")
    parser.add_argument("--images-only", action="store_true", help="only the image writes")
    parser.add_argument("--frame", default="2448x2048", help="camera frame WxH")
    parser.add_argument("--jpeg-kb", type=int, default=300)
    parser.add_argument("--dir", type=Path, default=None, help="where files go (the data disk)")
    args = parser.parse_args()
    results: dict[str, Any] = {"command": " ".join(sys.argv), "host": platform.node(), "cpus": os.cpu_count(),
                               "at": utc_now()}
    with tempfile.TemporaryDirectory(prefix="bench-storage-", dir=args.dir) as tmp:
        if not args.images_only:
            results["archiving"] = bench_archiving(Path(tmp) / "a", args.rows, args.rate)
            print(json.dumps(results["archiving"], indent=2))
        if not args.skip_disk and not args.images_only:
            results["full_disk"] = bench_full_disk(Path(tmp) / "d", args.margin_mb)
            print(json.dumps(results["full_disk"], indent=2))
        if args.images:
            width, height = (int(v) for v in args.frame.lower().split("x"))
            results["image_writes"] = bench_image_writes(Path(tmp) / "i", args.images, (width, height),
                                                         args.jpeg_kb)
            print(json.dumps(results["image_writes"], indent=2))
    if args.json:
        args.json.write_text(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
