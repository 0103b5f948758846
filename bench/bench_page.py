"""Benchmark of the station page in Debian's Chromium (headless, Playwright) against the real service
(``edge-inspect run`` on loopback, bundled tile-anomaly model, bundled sample images):

- first render: navigation to the operator view until it shows data (live stream open, a verdict and
  the batch counters on screen), cold (new browser context) and warm (reload); DOMContentLoaded too;
- stored-to-screen latency at a given part rate (default 25 parts/s): the verdict's commit time in the
  store (created_at) against the wall clock when the page's DOM shows it (same machine, same clock);
  baseline in the same run: a bare SSE client (Python, httpx) on the same stream, stored-to-received;
- replayed shift (``--hours H``, compressed): parts fed as fast as the station judges them, the page's DOM
  node count and JS heap (CDP Performance.getMetrics after a forced GC) sampled at intervals, to show
  they stay flat.

Usage: .venv/bin/python bench/bench_page.py [--renders 5] [--rate 25] [--seconds 20] [--hours 0.05]
       [--parts-per-hour 3600] [--json out.json]
Defaults are small (about a minute); an 8-hour shift: --hours 8 (28,800 parts at 3,600 parts/h).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from datetime import datetime
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import yaml

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))

from support import CHROMIUM, CHROMIUM_FLAGS, LiveService, free_port  # noqa: E402

SAMPLES = ROOT / "samples" / "magnetic-tile"
VISION = "/api/v1/verdicts/vision"

# Each time the verdict panel shows a new verdict id: [id, wall clock ms] (Date.now(), the server's clock).
WATCH = """() => {
    window.benchShown = [];
    const panel = document.getElementById("verdict");
    new MutationObserver((records) => {  // several verdicts in one task: each record's successor holds it
        const now = Date.now();
        const values = [...records.slice(1).map((r) => r.oldValue), panel.dataset.id];
        for (const id of values) window.benchShown.push([Number(id), now]);
    }).observe(panel, { attributes: true, attributeFilter: ["data-id"], attributeOldValue: true });
}"""
READY = """() => document.body.dataset.connection === "live" && document.body.dataset.lastVerdict
    && document.getElementById("count-parts").textContent.trim() !== "–" ? performance.now() : false"""


def percentiles(values: list[float]) -> dict[str, float]:
    data = np.asarray(values, dtype=float)
    if data.size == 0:
        return {"n": 0}
    return {"n": int(data.size), "p50": float(np.percentile(data, 50)), "p95": float(np.percentile(data, 95)),
            "p99": float(np.percentile(data, 99)), "max": float(data.max())}


def epoch_ms(iso: str) -> float:
    return datetime.fromisoformat(iso).timestamp() * 1000.0


def start_service(workdir: Path) -> tuple[subprocess.Popen[bytes], str]:
    config = {"station": {"id": "bench-page"},
              "storage": {"data_dir": str(workdir / "data"), "save_images": "ng", "min_free_mb": 10,
                          "backup_interval_hours": 0},
              "models": {"threads": 2, "vision": "tile-anomaly"}, "api": {"max_upload_mb": 25}}
    path = workdir / "station.yaml"
    path.write_text(yaml.safe_dump(config))
    service = LiveService(path, free_port(), "--no-sources").start(timeout_s=60)
    return service.process, service.url


class Feeder:
    """Posts the sample images at a fixed rate (or as fast as they are judged) from a few clients."""

    def __init__(self, url: str, images: list[bytes]) -> None:
        self.url = url
        self.images = images
        self.stored: dict[int, str] = {}  # verdict id -> created_at
        self.late_sends = 0
        self._lock = threading.Lock()

    def run(self, parts: int, rate: float | None, clients: int = 4) -> float:
        interval = 1.0 / rate if rate else 0.0
        started = time.monotonic()
        counter = iter(range(parts))

        def client() -> None:
            with httpx.Client(base_url=self.url, timeout=30) as http:
                for n in counter:
                    due = started + n * interval
                    wait = due - time.monotonic()
                    if wait > 0:
                        time.sleep(wait)
                    elif rate and wait < -interval:
                        self.late_sends += 1
                    response = http.post(VISION, content=self.images[n % len(self.images)],
                                         headers={"content-type": "image/jpeg"}, params={"serial": f"B{n}"})
                    body = response.json()
                    with self._lock:
                        self.stored[int(body["id"])] = str(body["created_at"])

        threads = [threading.Thread(target=client) for _ in range(clients)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        return time.monotonic() - started


def bare_sse(url: str, stop: threading.Event, received: dict[int, float]) -> None:
    """The baseline: a plain SSE client's receive time (wall clock ms) per verdict id."""
    with httpx.stream("GET", url + "/api/v1/events", timeout=None) as response:
        ident = None
        for line in response.iter_lines():
            if line.startswith("id: "):
                ident = int(line[4:])
            elif line.startswith("data: ") and ident is not None:
                received[ident] = time.time() * 1000.0
                ident = None
            if stop.is_set():
                return


def first_render(browser: Any, url: str, runs: int) -> dict[str, Any]:
    cold, warm, dom = [], [], []
    for _ in range(runs):
        context = browser.new_context(viewport={"width": 1280, "height": 800})
        page = context.new_page()
        page.goto(url + "/")
        cold.append(float(page.wait_for_function(READY, polling=10, timeout=30_000).json_value()))
        dom.append(float(page.evaluate("() => performance.getEntriesByType('navigation')[0].domContentLoadedEventEnd")))
        page.reload()
        warm.append(float(page.wait_for_function(READY, polling=10, timeout=30_000).json_value()))
        context.close()
    return {"cold_ms": percentiles(cold), "warm_ms": percentiles(warm), "dom_content_loaded_ms": percentiles(dom)}


def latency(browser: Any, url: str, feeder: Feeder, rate: float, seconds: float) -> dict[str, Any]:
    context = browser.new_context(viewport={"width": 1280, "height": 800})
    page = context.new_page()
    page.goto(url + "/")
    page.wait_for_function(READY, timeout=30_000)
    page.evaluate(WATCH)
    stop = threading.Event()
    bare: dict[int, float] = {}
    listener = threading.Thread(target=bare_sse, args=(url, stop, bare), daemon=True)
    listener.start()
    time.sleep(1.0)
    feeder.stored.clear()
    wall = feeder.run(int(rate * seconds), rate)
    time.sleep(1.0)
    shown = {int(i): float(t) for i, t in page.evaluate("() => window.benchShown")}
    stop.set()
    context.close()
    page_ms = [shown[i] - epoch_ms(at) for i, at in feeder.stored.items() if i in shown]
    bare_ms = [bare[i] - epoch_ms(at) for i, at in feeder.stored.items() if i in bare]
    missing = [i for i in feeder.stored if i not in shown]
    result = {"rate_requested": rate, "rate_achieved": len(feeder.stored) / wall, "late_sends": feeder.late_sends,
              "page_ms": percentiles(page_ms), "bare_sse_ms": percentiles(bare_ms), "not_shown": len(missing)}
    if bare_ms and page_ms:
        result["ratio_page_over_bare_p50"] = statistics.median(page_ms) / max(statistics.median(bare_ms), 1e-3)
    return result


def shift(browser: Any, url: str, feeder: Feeder, hours: float, per_hour: int, samples: int) -> dict[str, Any]:
    parts = max(samples, int(hours * per_hour))
    context = browser.new_context(viewport={"width": 1280, "height": 800})
    page = context.new_page()
    cdp = context.new_cdp_session(page)
    cdp.send("Performance.enable")
    page.goto(url + "/")
    page.wait_for_function(READY, timeout=30_000)
    trace = []
    started = time.monotonic()
    for step in range(samples):
        feeder.run(parts // samples, None, clients=2)
        time.sleep(1.0)  # the page settles (figures refresh at most twice a second)
        cdp.send("HeapProfiler.collectGarbage")
        metrics = {m["name"]: m["value"] for m in cdp.send("Performance.getMetrics")["metrics"]}
        trace.append({"parts": (step + 1) * (parts // samples), "seconds": round(time.monotonic() - started, 1),
                      "dom_nodes": int(metrics["Nodes"]), "js_heap_mb": round(metrics["JSHeapUsedSize"] / 2**20, 2),
                      "listeners": int(metrics.get("JSEventListeners", 0))})
        print(f"  shift: {trace[-1]}", flush=True)
    context.close()
    half = trace[len(trace) // 2:]
    return {"hours": hours, "parts": parts, "trace": trace,
            "dom_nodes_growth_second_half": half[-1]["dom_nodes"] - half[0]["dom_nodes"],
            "js_heap_mb_growth_second_half": round(half[-1]["js_heap_mb"] - half[0]["js_heap_mb"], 2)}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--renders", type=int, default=5, help="first-render runs")
    parser.add_argument("--rate", type=float, default=25.0, help="parts per second for the latency run")
    parser.add_argument("--seconds", type=float, default=20.0, help="length of the latency run")
    parser.add_argument("--hours", type=float, default=0.05, help="shift hours to replay (compressed)")
    parser.add_argument("--parts-per-hour", type=int, default=3600, help="line rate the shift is made of")
    parser.add_argument("--samples", type=int, default=6, help="DOM/heap samples over the shift")
    parser.add_argument("--json", type=Path, default=None)
    args = parser.parse_args()

    from playwright.sync_api import sync_playwright

    images = [p.read_bytes() for p in sorted(SAMPLES.glob("*.jpg"))]
    print(f"# station page benchmark: {os.cpu_count()} cores, Python {platform.python_version()}, "
          f"{len(images)} sample images, tile-anomaly")
    results: dict[str, Any] = {"command": " ".join(sys.argv), "cores": os.cpu_count()}
    with tempfile.TemporaryDirectory() as workdir:
        process, url = start_service(Path(workdir))
        try:
            feeder = Feeder(url, images)
            feeder.run(30, None)  # some parts, a figure set and a chart for the first render
            with sync_playwright() as playwright:
                browser = playwright.chromium.launch(executable_path=str(CHROMIUM), headless=True, args=CHROMIUM_FLAGS)
                results["first_render"] = first_render(browser, url, args.renders)
                print("first render (ms):", json.dumps(results["first_render"]), flush=True)
                results["latency"] = latency(browser, url, feeder, args.rate, args.seconds)
                print("stored-to-screen (ms):", json.dumps(results["latency"]), flush=True)
                results["shift"] = shift(browser, url, feeder, args.hours, args.parts_per_hour, args.samples)
                print("shift:", json.dumps({k: v for k, v in results["shift"].items() if k != "trace"}), flush=True)
                browser.close()
        finally:
            process.terminate()
            process.wait(20)
    if args.json:
        args.json.write_text(json.dumps(results, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
