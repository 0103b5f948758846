"""Benchmark of the trusted record (issue 18), in one run on one machine:

1. verdict end to end, POST /api/v1/verdicts/vision on the real service (loopback), measured at the client:
   (a) Bearer token (scope aoi:verdict) on the current code: authentication + hash chain;
   (b) anonymous on the same service (loopback allows anonymous judging): hash chain only;
   (c) anonymous on the code before issue 18 (commit 8f410f3, a temporary git worktree): neither.
   The three are interleaved in rounds (the order rotates each round; all services stay up), so drift and
   other load hit them alike. Per variant p50/p90/p99, and the p50 differences with a bootstrap 95 % interval.
2. store throughput with the chain: verdict rows/s through VerdictStore.record from 4 threads (sync full);
   references in the same run: the same rows as plain INSERTs (no hash, no chain head) through the same
   writer, and the pre-issue VerdictStore.record imported from the worktree in a subprocess.
3. audit verify over --verify-records chained verdicts (written by VerdictStore.record, large group commits,
   sync normal) plus audit records: edge.store.verify.verify_chains timed in process, and the CLI
   `edge-inspect audit verify` once (wall clock). A breakdown of where the time goes (SQLite fetch,
   JSON canonicalisation, SHA-256) and a prototype of checking two id ranges in two processes.

Usage: .venv/bin/python bench/bench_trust.py [--requests 100] [--rounds 5] [--verify-records 1000000]
       [--store-rows 50000] [--json out.json]
"""

from __future__ import annotations

import argparse
import contextlib
import hashlib
import json
import os
import platform
import shutil
import signal
import sqlite3
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import Future, ProcessPoolExecutor
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import yaml
from prometheus_client.parser import text_string_to_metric_families

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

from bench_api import free_port, load_images, percentiles  # noqa: E402  # free_port: tests/support's

from edge.store import NewVerdict, PartContext, VerdictStore  # noqa: E402
from edge.store.chain import GENESIS, VERDICT_FIELDS, record_hash  # noqa: E402
from edge.store.schema import connect  # noqa: E402
from edge.store.verify import _SELECT, verify_chains, verify_database  # noqa: E402

BASELINE_COMMIT = "8f410f3"
MODEL = "tile-anomaly"
PYTHON = sys.executable


# -- cleanup -------------------------------------------------------------------------------------
class Cleanup:
    """Everything to undo at the end, in reverse order, even after Ctrl-C or an error."""

    def __init__(self) -> None:
        self._actions: list[tuple[str, Callable[[], None]]] = []

    def add(self, name: str, action: Callable[[], None]) -> None:
        self._actions.append((name, action))

    def run(self) -> None:
        while self._actions:
            name, action = self._actions.pop()
            try:
                action()
            except Exception as exc:  # keep cleaning up the rest
                print(f"# cleanup of {name} failed: {exc}", file=sys.stderr)


def stop_process(process: subprocess.Popen[bytes]) -> None:
    if process.poll() is None:
        process.terminate()
        try:
            process.wait(20)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(10)


def load_average() -> str:
    one, five, fifteen = os.getloadavg()
    return f"{one:.2f} {five:.2f} {fifteen:.2f}"


def utc() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%d %H:%M:%S UTC")


# -- services ------------------------------------------------------------------------------------
def station_file(folder: Path, with_access: bool, sync: str = "full") -> Path:
    """A station file whose data folder holds a copy of the bundled model (as models/<name>/<version>/)."""
    data = folder / "data"
    shutil.copytree(ROOT / "models" / MODEL, data / "models" / MODEL)
    config: dict[str, Any] = {
        "station": {"id": "bench"},
        "storage": {"data_dir": str(data), "save_images": "ng", "sync": sync},
        "models": {"threads": 2, "vision": MODEL},
        "api": {"host": "127.0.0.1", "max_upload_mb": 50},
    }
    if with_access:
        config["access"] = {}  # the defaults: anonymous reading and judging on loopback, tokens checked
    path = folder / "station.yaml"
    path.write_text(yaml.safe_dump(config), encoding="utf-8")
    return path


def start_service(config: Path, code_root: Path, cleanup: Cleanup, name: str) -> str:
    port = free_port()
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    if code_root != ROOT:
        env["PYTHONPATH"] = str(code_root)
    log = (config.parent / "service.log").open("wb")
    process = subprocess.Popen([PYTHON, "-m", "edge.cli", "run", "--config", str(config), "--port", str(port),
                                "--no-sources"], cwd=code_root, env=env, stdout=log, stderr=subprocess.STDOUT)
    def stop() -> None:
        stop_process(process)
        log.close()

    cleanup.add(f"service {name}", stop)
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 90
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"service {name} exited with {process.returncode}: "
                               f"{(config.parent / 'service.log').read_text()[-3000:]}")
        try:
            if httpx.get(f"{url}/api/v1/health", timeout=1).status_code == 200:
                return url
        except httpx.HTTPError:
            pass
        time.sleep(0.2)
    raise RuntimeError(f"service {name} did not become ready")


def create_token(config: Path) -> str:
    result = subprocess.run([PYTHON, "-m", "edge.cli", "tokens", "create", "--config", str(config), "--name",
                             "bench-aoi", "--scope", "aoi:verdict", "--json"], cwd=ROOT, capture_output=True,
                            text=True, check=True)
    return str(json.loads(result.stdout)["token"])


def add_worktree(cleanup: Cleanup, folder: Path) -> Path:
    tree = folder / "baseline-tree"
    subprocess.run(["git", "worktree", "add", "--detach", str(tree), BASELINE_COMMIT], cwd=ROOT, check=True,
                   capture_output=True)

    def remove() -> None:
        subprocess.run(["git", "worktree", "remove", "--force", str(tree)], cwd=ROOT, check=False,
                       capture_output=True)
        subprocess.run(["git", "worktree", "prune"], cwd=ROOT, check=False, capture_output=True)

    cleanup.add("worktree", remove)
    return tree


# -- 1. latency ----------------------------------------------------------------------------------
class Variant:
    def __init__(self, key: str, label: str, url: str, token: str | None) -> None:
        self.key, self.label, self.url = key, label, url
        headers = {"content-type": "image/jpeg"}
        if token is not None:
            headers["authorization"] = f"Bearer {token}"
        self.client = httpx.Client(base_url=url, timeout=30, headers=headers)
        self.samples: list[float] = []
        self.non_model: list[float] = []  # client time minus the model's own time (inference_ms in the answer)
        self.http_layer: list[float] = []  # client time minus the service's latency_ms (arrival to durable)

    def metrics(self) -> dict[str, float]:
        """Sums and counts of the service's stage and verdict latency histograms (seconds)."""
        text = httpx.get(f"{self.url}/metrics", timeout=10).text
        out: dict[str, float] = {}
        for family in text_string_to_metric_families(text):
            if family.name not in ("edge_stage_latency_seconds", "edge_verdict_latency_seconds"):
                continue
            for sample in family.samples:
                if sample.name.endswith(("_sum", "_count")):
                    stage = sample.labels.get("stage", "verdict")
                    key = f"{stage}{sample.name[sample.name.rindex('_'):]}"
                    out[key] = out.get(key, 0.0) + sample.value
        return out

    def post(self, images: list[bytes], count: int, offset: int, keep: bool = True) -> None:
        for i in range(count):
            data = images[(i + offset) % len(images)]
            started = time.perf_counter()
            response = self.client.post("/api/v1/verdicts/vision", content=data)
            elapsed = (time.perf_counter() - started) * 1000.0
            if response.status_code != 200:
                raise RuntimeError(f"{self.key}: {response.status_code} {response.text[:300]}")
            if keep:
                body = response.json()
                self.samples.append(elapsed)
                self.non_model.append(elapsed - float(body.get("inference_ms") or 0.0))
                self.http_layer.append(elapsed - float(body["latency_ms"]))


def bootstrap_median_difference(a: list[float], b: list[float], resamples: int = 2000,
                                seed: int = 0) -> tuple[float, float, float]:
    """(median(a) - median(b), 2.5 %, 97.5 % of the bootstrap distribution of that difference)."""
    rng = np.random.default_rng(seed)
    xa, xb = np.asarray(a), np.asarray(b)
    diffs = np.empty(resamples)
    for start in range(0, resamples, 250):
        n = min(250, resamples - start)
        ma = np.median(xa[rng.integers(0, len(xa), (n, len(xa)))], axis=1)
        mb = np.median(xb[rng.integers(0, len(xb), (n, len(xb)))], axis=1)
        diffs[start:start + n] = ma - mb
    low, high = np.percentile(diffs, [2.5, 97.5])
    return float(np.median(xa) - np.median(xb)), float(low), float(high)


def latency(variants: list[Variant], images: list[bytes], requests: int, rounds: int) -> dict[str, Any]:
    for v in variants:  # warm-up: model, caches, connections
        v.post(images, 20, 0, keep=False)
    round_p50: dict[str, list[float]] = {v.key: [] for v in variants}
    server: dict[str, dict[str, float]] = {v.key: {} for v in variants}
    for r in range(rounds):
        order = variants[r % len(variants):] + variants[:r % len(variants)]
        for v in order:
            before, counters = len(v.samples), v.metrics()
            v.post(images, requests, offset=r * 13)
            for name, value in v.metrics().items():
                server[v.key][name] = server[v.key].get(name, 0.0) + value - counters.get(name, 0.0)
            round_p50[v.key].append(float(np.median(v.samples[before:])))
        print(f"#   round {r + 1}/{rounds}: " + ", ".join(
            f"{v.key} p50 {round_p50[v.key][-1]:.2f} ms" for v in variants) + f"; load {load_average()}",
              flush=True)
    out: dict[str, Any] = {v.key: {"label": v.label, **percentiles(v.samples), "round_p50": round_p50[v.key]}
                           for v in variants}
    for v in variants:  # the service's own means per stage over the measured requests (histogram sums)
        totals = server[v.key]
        means = {stage: 1000.0 * totals[f"{stage}_sum"] / totals[f"{stage}_count"]
                 for stage in ("decode", "quality", "model", "verdict") if totals.get(f"{stage}_count")}
        out[v.key]["server_means_ms"] = means
        out[v.key]["client_mean_minus_model_ms"] = out[v.key]["mean"] - means.get("model", float("nan"))
        out[v.key]["client_mean_minus_verdict_ms"] = out[v.key]["mean"] - means.get("verdict", float("nan"))
    for v in variants:
        out[v.key]["non_model_ms"] = percentiles(v.non_model)
        out[v.key]["http_layer_ms"] = percentiles(v.http_layer)
    out["non_model_differences_p50_ms"] = {}
    for x, y in (("a", "b"), ("b", "c"), ("a", "c")):
        vx, vy = next(v for v in variants if v.key == x), next(v for v in variants if v.key == y)
        diff, low, high = bootstrap_median_difference(vx.non_model, vy.non_model)
        out["non_model_differences_p50_ms"][f"{x}-{y}"] = {"diff": diff, "ci95": [low, high]}
    samples = {v.key: v.samples for v in variants}
    out["differences_p50_ms"] = {}
    for x, y in (("a", "b"), ("b", "c"), ("a", "c")):
        diff, low, high = bootstrap_median_difference(samples[x], samples[y])
        per_round = float(np.median(np.subtract(round_p50[x], round_p50[y])))
        out["differences_p50_ms"][f"{x}-{y}"] = {"diff": diff, "ci95": [low, high], "median_of_round_diffs": per_round}
    return out


def component_costs(db: Path, token: str, calls: int = 20_000) -> dict[str, Any]:
    """What authentication and chaining add per request, in process: the token check the service runs for a
    Bearer request (AccessControl._token_identity: SHA-256 + one indexed lookup + expiry check) on the
    service's own database, and record_hash over a typical verdict's chained values. Median of 5 batches."""
    from edge.access import AccessControl
    from edge.config import AccessSettings

    conn = connect(db, readonly=True)

    class Reader:
        def reader(self) -> sqlite3.Connection:
            return conn

        def submit(self, operation: Callable[[sqlite3.Connection], Any]) -> Future[Any]:
            raise NotImplementedError

    access = AccessControl(AccessSettings(), Reader(), "127.0.0.1")
    part, verdict = next(bench_rows(1))
    values = [123456, 123456, part.serial, None, part.lot, verdict.modality, verdict.model_name, 1, verdict.label,
              verdict.score, verdict.threshold, verdict.decision, None, verdict.latency_ms, None, None, part.source,
              part.station, "2026-12-05T08:00:00.123456+00:00", json.dumps(verdict.details), None, None, 0,
              part.actor, None]

    def per_call_us(action: Callable[[], Any]) -> float:
        batches = []
        for _ in range(5):
            started = time.perf_counter()
            for _ in range(calls // 5):
                action()
            batches.append((time.perf_counter() - started) * 1e6 / (calls // 5))
        return float(np.median(batches))

    identity = access._token_identity(token)
    assert identity.actor == "token:bench-aoi", identity.actor
    out = {"token_check_us": per_call_us(lambda: access._token_identity(token)),
           "anonymous_identity_us": per_call_us(lambda: access.anonymous),
           "record_hash_us": per_call_us(lambda: record_hash(GENESIS, values))}
    conn.close()
    return out


# -- 2. store throughput -------------------------------------------------------------------------
def bench_rows(n: int) -> Iterator[tuple[PartContext, NewVerdict]]:
    """Realistic, varied rows: serials, lots, scores, decisions and details differ from row to row."""
    for i in range(n):
        ng = i % 17 == 0
        score = 0.25 + (i % 997) / 1000.0
        yield (PartContext("bench", "api", serial=f"SN-{i:08d}", lot=f"LOT-{i // 5000}", actor="token:bench-aoi"),
               NewVerdict("vision", "NG" if ng else "OK", "crack" if ng else "good", score, 1.05, MODEL, 1,
                          18.0 + (i % 89) / 10.0, image_ref=f"images/{i:08d}.jpg" if ng else None,
                          details={"width": 640, "height": 480, "region": [i % 640, i % 480, 32, 32] if ng else None}))


def timed_writers(store: VerdictStore, submit: Callable[[PartContext, NewVerdict], Future[Any]], rows: int,
                  writers: int) -> float:
    work = list(bench_rows(rows))
    share = rows // writers

    def write(chunk: list[tuple[PartContext, NewVerdict]]) -> None:
        futures = [submit(part, verdict) for part, verdict in chunk]
        for future in futures:
            future.result()

    threads = [threading.Thread(target=write, args=(work[k * share:(k + 1) * share],)) for k in range(writers)]
    started = time.perf_counter()
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return time.perf_counter() - started


_PLAIN_PART = ("INSERT INTO parts (serial, batch_id, lot, station, source, created_at, decision, inspections,"
               " trigger_seq) VALUES (?, NULL, ?, ?, ?, ?, ?, 1, NULL)")
_PLAIN_VERDICT = ("INSERT INTO verdicts (part_id, modality, model_name, model_version, label, score, threshold,"
                  " decision, reason, latency_ms, image_ref, heatmap_ref, source, station, created_at, details,"
                  " recipe, actuated, late, actor, refers_to, prev_hash, hash)"
                  " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, NULL, '', '')")


def plain_insert(store: VerdictStore, part: PartContext, v: NewVerdict) -> Future[int]:
    """The same part and verdict rows as two plain INSERTs: no hash, no chain head, no look-ups."""
    def operation(conn: sqlite3.Connection) -> int:
        now = datetime.now(UTC).isoformat(timespec="microseconds")
        part_id = conn.execute(_PLAIN_PART, (part.serial, part.lot, part.station, part.source, now,
                                             v.decision)).lastrowid
        details = json.dumps(v.details, sort_keys=True, separators=(",", ":")) if v.details else None
        return int(conn.execute(_PLAIN_VERDICT, (
            part_id, v.modality, v.model_name, v.model_version, v.label, v.score, v.threshold, v.decision, v.reason,
            v.latency_ms, v.image_ref, v.heatmap_ref, part.source, part.station, now, details, v.recipe,
            v.actuated, int(v.late), part.actor)).lastrowid or 0)

    return store.submit(operation)


_OLD_STORE = """
import sys, threading, time, json
from pathlib import Path
from edge.store import NewVerdict, PartContext, VerdictStore
rows, writers, path = int(sys.argv[1]), int(sys.argv[2]), Path(sys.argv[3])
work = []
for i in range(rows):
    ng = i % 17 == 0
    work.append((PartContext("bench", "api", serial=f"SN-{i:08d}", lot=f"LOT-{i // 5000}"),
                 NewVerdict("vision", "NG" if ng else "OK", "crack" if ng else "good", 0.25 + (i % 997) / 1000.0,
                            1.05, "tile-anomaly", 1, 18.0 + (i % 89) / 10.0,
                            image_ref=f"images/{i:08d}.jpg" if ng else None,
                            details={"width": 640, "height": 480,
                                     "region": [i % 640, i % 480, 32, 32] if ng else None})))
store = VerdictStore(path, sync="full")
store.start()
share = rows // writers
def write(chunk):
    for f in [store.record(p, [v]) for p, v in chunk]:
        f.result()
threads = [threading.Thread(target=write, args=(work[k * share:(k + 1) * share],)) for k in range(writers)]
t = time.perf_counter()
for th in threads: th.start()
for th in threads: th.join()
wall = time.perf_counter() - t
print(json.dumps({"rows": rows, "wall_s": wall, "rows_per_s": rows / wall, "commits": store.writer.commits}))
store.close()
"""


def old_store_throughput(tree: Path, folder: Path, rows: int, writers: int) -> dict[str, Any]:
    """The pre-issue VerdictStore.record, imported from the worktree in a subprocess (PartContext of that
    code has a lot but no actor; the old code has no chain)."""
    env = {**os.environ, "PYTHONPATH": str(tree)}
    result = subprocess.run([PYTHON, "-c", _OLD_STORE, str(rows), str(writers), str(folder / "old.db")], cwd=tree,
                            env=env, capture_output=True, text=True, check=True)
    out: dict[str, Any] = json.loads(result.stdout.strip().splitlines()[-1])
    return out


def chained_submit(store: VerdictStore) -> Callable[[PartContext, NewVerdict], Future[Any]]:
    return lambda part, verdict: store.record(part, [verdict])


def plain_submit(store: VerdictStore) -> Callable[[PartContext, NewVerdict], Future[Any]]:
    return lambda part, verdict: plain_insert(store, part, verdict)


def store_throughput(folder: Path, tree: Path, rows: int, writers: int) -> dict[str, Any]:
    out: dict[str, Any] = {"rows": rows, "writers": writers, "sync": "full"}
    # alternate chained / plain / old twice each; report the median-of-two and both runs
    runs: dict[str, list[dict[str, float]]] = {"chained": [], "plain": [], "old_store": []}
    for attempt in range(2):
        for kind in ("chained", "plain", "old_store") if attempt == 0 else ("old_store", "plain", "chained"):
            path = folder / f"store-{kind}-{attempt}.db"
            if kind == "old_store":
                r = old_store_throughput(tree, folder / f"old-{attempt}", rows, writers)
                runs[kind].append({"rows_per_s": r["rows_per_s"], "commits": r["commits"]})
            else:
                store = VerdictStore(path, sync="full")
                store.start()
                wall = timed_writers(store, chained_submit(store) if kind == "chained" else plain_submit(store),
                                     rows, writers)
                commits = store.writer.commits
                store.close()
                runs[kind].append({"rows_per_s": rows / wall, "commits": commits})
            with contextlib.suppress(FileNotFoundError):
                for suffix in ("", "-wal", "-shm"):
                    Path(str(path) + suffix).unlink(missing_ok=True)
            shutil.rmtree(folder / f"old-{attempt}", ignore_errors=True)
            print(f"#   store {kind} run {attempt + 1}: {runs[kind][-1]['rows_per_s']:.0f} rows/s "
                  f"({runs[kind][-1]['commits']:.0f} commits); load {load_average()}", flush=True)
    for kind, values in runs.items():
        out[kind] = {"runs": values, "rows_per_s": float(np.mean([v["rows_per_s"] for v in values]))}
    return out


# -- 3. audit verify -----------------------------------------------------------------------------
def build_chain(path: Path, records: int, audit_records: int) -> dict[str, Any]:
    """``records`` chained verdicts through VerdictStore.record (group commits of up to 5,000, sync normal),
    then ``audit_records`` audit records through VerdictStore.audit."""
    store = VerdictStore(path, max_batch=5000, sync="normal")
    store.start()
    started = time.perf_counter()
    pending: list[Future[Any]] = []
    for i, (part, verdict) in enumerate(bench_rows(records)):
        pending.append(store.record(part, [verdict]))
        if len(pending) >= 20_000:
            for future in pending:
                future.result()
            pending = []
            if (i + 1) % 200_000 == 0:
                print(f"#   built {i + 1} verdicts, {(i + 1) / (time.perf_counter() - started):.0f}/s", flush=True)
    for future in pending:
        future.result()
    audits = [store.audit("user:bench", "recipe_selected", "line", "bench", {"recipe": f"R{i % 7}"},
                          {"recipe": f"R{(i + 1) % 7}"}, {"via": "bench"}) for i in range(audit_records)]
    for future in audits:
        future.result()
    wall = time.perf_counter() - started
    counts = store.counts()
    store.close()
    return {"verdicts": counts["verdicts"], "audit": counts["audit_log"], "build_s": wall,
            "size_mb": path.stat().st_size / 1e6}


_ENCODER = json.JSONEncoder(separators=(",", ":"), ensure_ascii=False, allow_nan=True)


def fast_hash(prev_hash: str, values: list[Any]) -> str:
    """Prototype of a cheaper record_hash giving the same bytes: one JSONEncoder built once (json.dumps with
    arguments builds a new encoder per call) and one sha256 call over the joined bytes."""
    return hashlib.sha256(b"%s\n%s" % (prev_hash.encode("ascii"), _ENCODER.encode(values).encode())).hexdigest()


def walk(path: Path, mode: str, lo: int = 0,
         hi: int | None = None) -> tuple[float, int, str | None, str | None, float]:
    """The verdict chain's SELECT in id order, doing a part of verify's work per row: fetch (only),
    fetch_no_join (the same columns from verdicts alone), canonical (fetch + json), full (fetch + json +
    sha256 + compare: verify's check, through record_hash), fast (full through fast_hash).
    Returns (wall seconds, rows, first prev_hash, last hash, CPU seconds of this process)."""
    conn = connect(path, readonly=True)
    sql = _SELECT["verdicts"] + " WHERE v.id > ? AND v.id <= ? ORDER BY v.id"
    if mode == "fetch_no_join":
        columns = ("v.id" if c in ("serial", "batch_id", "lot") else f"v.{c}" for c in VERDICT_FIELDS)
        sql = ("SELECT " + ", ".join(columns) +
               ", v.prev_hash, v.hash FROM verdicts v WHERE v.id > ? AND v.id <= ? ORDER BY v.id")
    check = {"full": record_hash, "fast": fast_hash}.get(mode)
    started, cpu = time.perf_counter(), time.process_time()
    cursor = conn.execute(sql, (lo, hi if hi is not None else 2**62))
    cursor.row_factory = None
    count, first_prev, last, expected = 0, None, None, None
    dumps = json.dumps
    for raw in cursor:
        *values, prev_hash, stored = raw
        if check is not None:
            if expected is None:
                first_prev = prev_hash
            elif prev_hash != expected:
                raise RuntimeError(f"chain broken at {values[0]}")
            if check(prev_hash, values) != stored:
                raise RuntimeError(f"record {values[0]}: hash differs ({mode})")
            expected = stored
        elif mode == "canonical":
            dumps(list(values), separators=(",", ":"), ensure_ascii=False, allow_nan=True).encode()
        last = stored
        count += 1
    wall, cpu = time.perf_counter() - started, time.process_time() - cpu
    conn.close()
    return wall, count, first_prev, last, cpu


def sha_only(rows: int) -> float:
    """SHA-256 of ``rows`` canonical byte strings of a typical record's length (~ 330 bytes), as record_hash."""
    payload = b"x" * 330
    prev = GENESIS.encode()
    started = time.perf_counter()
    for _ in range(rows):
        digest = hashlib.sha256(prev)
        digest.update(b"\n")
        digest.update(payload)
        digest.hexdigest()
    return time.perf_counter() - started


def verify_two_processes(path: Path, last_id: int, mode: str = "full") -> dict[str, Any]:
    """Prototype: the verdict chain checked as two id ranges in two processes; the ranges join when the
    first row of the second range names the last hash of the first (as prev_hash)."""
    middle = last_id // 2
    started = time.perf_counter()
    with ProcessPoolExecutor(2) as pool:
        first = pool.submit(walk, path, mode, 0, middle)
        second = pool.submit(walk, path, mode, middle, None)
        a, b = first.result(), second.result()
    wall = time.perf_counter() - started
    joined = a[2] == GENESIS and b[2] == a[3]
    return {"wall_s": wall, "rows": a[1] + b[1], "joined": joined, "range_s": [a[0], b[0]],
            "range_cpu_s": [a[4], b[4]]}


def audit_verify(folder: Path, records: int, audit_records: int) -> dict[str, Any]:
    data = folder / "verify-data"
    data.mkdir()
    db = data / "verdicts.db"
    print(f"# building {records} chained verdicts + {audit_records} audit records ... (load {load_average()})",
          flush=True)
    out: dict[str, Any] = {"build": build_chain(db, records, audit_records)}
    print(f"#   built in {out['build']['build_s']:.1f} s ({out['build']['size_mb']:.0f} MB); load {load_average()}",
          flush=True)
    total = out["build"]["verdicts"] + out["build"]["audit"]
    # warm the page cache once (the database was just written, but a checkpoint may have moved pages)
    walk(db, "fetch")
    runs, cpus = [], []
    for _ in range(2):
        conn = connect(db, readonly=True)
        started, cpu = time.perf_counter(), time.process_time()
        reports = verify_chains(conn)
        wall, cpu = time.perf_counter() - started, time.process_time() - cpu
        conn.close()
        if not all(r.intact for r in reports) or sum(r.records for r in reports) != total:
            raise RuntimeError(f"verify found a problem or the wrong count: {reports}")
        runs.append(wall)
        cpus.append(cpu)
        print(f"#   verify_chains: {wall:.2f} s wall, {cpu:.2f} s CPU for {total} records ({total / wall:.0f}/s); "
              f"load {load_average()}", flush=True)
    out["verify_chains_s"] = runs
    out["verify_chains_cpu_s"] = cpus
    out["verify_chains_median_s"] = float(np.median(runs))
    out["verify_chains_median_cpu_s"] = float(np.median(cpus))
    out["records"] = total
    out["records_per_s"] = total / out["verify_chains_median_s"]
    # what `audit verify` runs: id ranges checked in parallel processes (the machine's cores, at most 4)
    parallel = []
    for _ in range(2):
        started = time.perf_counter()
        reports = verify_database(db)
        parallel.append(time.perf_counter() - started)
        if not all(r.intact for r in reports) or sum(r.records for r in reports) != total:
            raise RuntimeError(f"verify_database found a problem or the wrong count: {reports}")
        print(f"#   verify_database (parallel ranges): {parallel[-1]:.2f} s wall; load {load_average()}", flush=True)
    out["verify_database_s"] = parallel
    out["verify_database_median_s"] = float(np.median(parallel))
    # the CLI once, wall clock (process start, imports, config, verify, output)
    config = folder / "verify-station.yaml"
    config.write_text(yaml.safe_dump({"station": {"id": "bench"}, "storage": {"data_dir": str(data)},
                                      "models": {"vision": MODEL}}), encoding="utf-8")
    started = time.perf_counter()
    result = subprocess.run([PYTHON, "-m", "edge.cli", "audit", "verify", "--config", str(config), "--json"],
                            cwd=ROOT, capture_output=True, text=True)
    out["cli_wall_s"] = time.perf_counter() - started
    out["cli_exit"] = result.returncode
    out["cli_output"] = result.stdout.strip()[-600:]
    print(f"#   CLI audit verify: {out['cli_wall_s']:.2f} s wall, exit {result.returncode}; load {load_average()}",
          flush=True)
    # where the time goes (verdict chain only) and the prototypes, alternated twice; CPU seconds are what this
    # process used (less sensitive to the other work on the machine than wall clock)
    walls: dict[str, list[float]] = {}
    cpu_s: dict[str, list[float]] = {}
    joined, rows = True, 0
    for _ in range(2):
        for mode in ("fetch", "fetch_no_join", "canonical", "full", "fast"):
            wall, rows, _, _, cpu = walk(db, mode)
            walls.setdefault(mode, []).append(wall)
            cpu_s.setdefault(mode, []).append(cpu)
        for key, mode in (("two_processes", "full"), ("two_processes_fast_hash", "fast")):
            two = verify_two_processes(db, out["build"]["verdicts"], mode)
            joined = joined and two["joined"] and two["rows"] == rows
            walls.setdefault(key, []).append(two["wall_s"])
            cpu_s.setdefault(key, []).append(max(two["range_cpu_s"]))  # the longer range's CPU time
        print("#   walks (wall / CPU s): " + ", ".join(f"{k} {walls[k][-1]:.2f}/{cpu_s[k][-1]:.2f}" for k in walls) +
              f"; load {load_average()}", flush=True)
    wall_m = {k: float(np.median(v)) for k, v in walls.items()}
    cpu_m = {k: float(np.median(v)) for k, v in cpu_s.items()}
    sha_s = sha_only(rows)
    out["breakdown"] = {"rows": rows, "wall_s": wall_m, "cpu_s": cpu_m, "runs_wall_s": walls, "runs_cpu_s": cpu_s,
                        "cpu_fetch_s": cpu_m["fetch"], "cpu_parts_join_s": cpu_m["fetch"] - cpu_m["fetch_no_join"],
                        "cpu_json_s": cpu_m["canonical"] - cpu_m["fetch"],
                        "cpu_sha_and_compare_s": cpu_m["full"] - cpu_m["canonical"], "sha256_alone_s": sha_s,
                        "joined_and_complete": joined}
    print(f"#   breakdown over {rows} verdicts, CPU s: fetch {cpu_m['fetch']:.2f} (of which the parts join "
          f"{cpu_m['fetch'] - cpu_m['fetch_no_join']:.2f}), +json {cpu_m['canonical'] - cpu_m['fetch']:.2f}, "
          f"+sha256/compare {cpu_m['full'] - cpu_m['canonical']:.2f} (sha256 alone {sha_s:.2f}); "
          f"load {load_average()}", flush=True)
    shutil.rmtree(data, ignore_errors=True)
    return out


# -- main ----------------------------------------------------------------------------------------
def interrupt(signum: int, frame: object) -> None:
    raise KeyboardInterrupt(f"signal {signum}")


def fmt_diff(d: dict[str, Any]) -> str:
    return (f"{d['diff']:+.2f} ms [bootstrap 95 % CI {d['ci95'][0]:+.2f}, {d['ci95'][1]:+.2f}]; median of the "
            f"per-round p50 differences {d['median_of_round_diffs']:+.2f} ms")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--requests", type=int, default=80, help="requests per variant per round")
    parser.add_argument("--rounds", type=int, default=10)
    parser.add_argument("--images", type=int, default=60)
    parser.add_argument("--store-rows", type=int, default=50_000)
    parser.add_argument("--verify-records", type=int, default=1_000_000, help="chained verdicts to verify")
    parser.add_argument("--audit-records", type=int, default=1_000)
    parser.add_argument("--json", type=Path, default=None)
    args = parser.parse_args()

    # SIGTERM ends the run like Ctrl-C, so the cleanup below runs
    signal.signal(signal.SIGTERM, interrupt)
    cleanup = Cleanup()
    folder = Path(tempfile.mkdtemp(prefix="bench-trust-"))
    cleanup.add("temp folder", lambda: shutil.rmtree(folder, ignore_errors=True))
    results: dict[str, Any] = {"started": utc(), "load_average_start": load_average(), "cores": os.cpu_count(),
                               "python": platform.python_version(), "args": {k: str(v) for k, v in vars(args).items()}}
    try:
        images, image_note = load_images(args.images)
        results["images"] = image_note
        print(f"# edge-inspect trusted-record benchmark, {results['started']}: {os.cpu_count()} cores, "
              f"Python {platform.python_version()}, load average {results['load_average_start']}")
        head = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True, text=True)
        dirty = subprocess.run(["git", "status", "--porcelain", "--", "edge", "models", "vision"], cwd=ROOT,
                               capture_output=True, text=True).stdout.splitlines()
        results["code"] = {"head": head.stdout.strip(), "uncommitted_in_edge_models_vision": len(dirty)}
        print(f"# model {MODEL}, {image_note}; current code: working tree at {results['code']['head']} "
              f"({len(dirty)} uncommitted files under edge/ models/ vision/); baseline code: {BASELINE_COMMIT} "
              "(git worktree)", flush=True)

        tree = add_worktree(cleanup, folder)
        (folder / "current").mkdir()
        (folder / "baseline").mkdir()
        current_config = station_file(folder / "current", with_access=True)
        baseline_config = station_file(folder / "baseline", with_access=False)
        token = create_token(current_config)
        current_url = start_service(current_config, ROOT, cleanup, "current")
        baseline_url = start_service(baseline_config, tree, cleanup, "baseline")
        variants = [Variant("a", "token + chain (current)", current_url, token),
                    Variant("b", "anonymous + chain (current)", current_url, None),
                    Variant("c", f"anonymous, no chain ({BASELINE_COMMIT})", baseline_url, None)]
        for v in variants:
            cleanup.add(f"client {v.key}", v.client.close)
        print(f"# 1. verdict latency: {args.rounds} rounds x {args.requests} requests per variant, interleaved",
              flush=True)
        results["latency"] = latency(variants, images, args.requests, args.rounds)
        # sanity: the first verdict (warm-up of variant a) was recorded under the token's identity
        first = httpx.get(f"{current_url}/api/v1/verdicts?limit=1", timeout=10).json()
        results["latency"]["first_verdict_actor"] = first["items"][0].get("actor") if first.get("items") else None
        print(f"#   first verdict recorded by: {results['latency']['first_verdict_actor']}", flush=True)
        results["components"] = component_costs(folder / "current" / "data" / "verdicts.db", token)
        c = results["components"]
        print(f"#   in process: token check {c['token_check_us']:.1f} us per request, record_hash "
              f"{c['record_hash_us']:.1f} us per verdict; load {load_average()}", flush=True)
        results["load_average_after_latency"] = load_average()

        print(f"# 2. store throughput: {args.store_rows} rows, 4 writer threads, sync full", flush=True)
        results["store"] = store_throughput(folder, tree, args.store_rows, writers=4)
        results["load_average_after_store"] = load_average()

        print(f"# 3. audit verify over {args.verify_records} chained verdicts", flush=True)
        results["verify"] = audit_verify(folder, args.verify_records, args.audit_records)
        results["load_average_end"] = load_average()
        results["finished"] = utc()
    except KeyboardInterrupt:
        print("# interrupted: cleaning up", file=sys.stderr)
        cleanup.run()
        return 130
    finally:
        cleanup.run()

    lat = results["latency"]
    print()
    print(f"# results ({results['started']} .. {results['finished']}; load average start "
          f"{results['load_average_start']}, end {results['load_average_end']})")
    row = "{:<44} {:>8} {:>8} {:>8} {:>6}"
    print(row.format("verdict end to end (client)", "p50 ms", "p90 ms", "p99 ms", "n"))
    for key in ("a", "b", "c"):
        r = lat[key]
        print(row.format(f"({key}) {r['label']}", f"{r['p50']:.2f}", f"{r['p90']:.2f}", f"{r['p99']:.2f}", r["n"]))
    for key, d in lat["differences_p50_ms"].items():
        print(f"p50 difference {key}: {fmt_diff(d)}")
    print(row.format("time outside the model (client - inference_ms)", "p50 ms", "p90 ms", "p99 ms", "n"))
    for key in ("a", "b", "c"):
        r = lat[key]["non_model_ms"]
        print(row.format(f"({key}) {lat[key]['label']}", f"{r['p50']:.2f}", f"{r['p90']:.2f}", f"{r['p99']:.2f}",
                         r["n"]))
    for key, d in lat["non_model_differences_p50_ms"].items():
        print(f"p50 difference outside the model {key}: {d['diff']:+.2f} ms [bootstrap 95 % CI {d['ci95'][0]:+.2f}, "
              f"{d['ci95'][1]:+.2f}]")
    print("HTTP layer (client - service's latency_ms: upload, routing, authentication, answer), p50 ms: " +
          ", ".join(f"({k}) {lat[k]['http_layer_ms']['p50']:.2f}" for k in ("a", "b", "c")))
    print("means, ms: client; service's stages from its /metrics (decode, quality gate, model, judge start to "
          "stored verdict); client minus model; client minus stored-verdict time (HTTP, upload, auth, response)")
    for key in ("a", "b", "c"):
        r = lat[key]
        m = r["server_means_ms"]
        print(f"  ({key}) client {r['mean']:.2f}; decode {m.get('decode', float('nan')):.2f}, quality "
              f"{m.get('quality', float('nan')):.2f}, model {m.get('model', float('nan')):.2f}, to stored "
              f"{m.get('verdict', float('nan')):.2f}; client - model {r['client_mean_minus_model_ms']:.2f}; "
              f"client - stored {r['client_mean_minus_verdict_ms']:.2f}")
    ac = lat["differences_p50_ms"]["a-c"]
    # met: the estimate is under 0.5 ms; shown: the interval's upper end is too (the overhead is surely below)
    met_latency = ac["diff"] < 0.5
    shown = ac["ci95"][1] < 0.5
    print(f"target: p50 with authentication and chaining less than 0.5 ms above without (a-c) -> "
          f"{'MET' if met_latency else 'MISSED'} ({ac['diff']:+.2f} ms); the 95 % interval's upper end "
          f"{ac['ci95'][1]:+.2f} ms {'is' if shown else 'is NOT'} below +0.5 ms"
          f"{'' if shown else ' (the run cannot resolve 0.5 ms at this noise)'}")
    c = results["components"]
    print(f"in process: token check (SHA-256 + indexed lookup + expiry) {c['token_check_us']:.1f} us per request; "
          f"record_hash {c['record_hash_us']:.1f} us per verdict")
    st = results["store"]
    print(f"store, {st['rows']} rows, 4 writers, sync full (mean of 2 runs each):")
    for kind, label in (("chained", "VerdictStore.record (chain)"),
                        ("plain", "plain INSERTs, same rows, same writer, no hash"),
                        ("old_store", f"VerdictStore.record before issue 18 ({BASELINE_COMMIT})")):
        runs = ", ".join(f"{r['rows_per_s']:.0f}" for r in st[kind]["runs"])
        print(f"  {label:<52} {st[kind]['rows_per_s']:>8.0f} rows/s  (runs: {runs})")
    print(f"  chained / plain {st['chained']['rows_per_s'] / st['plain']['rows_per_s']:.2f}, chained / old store "
          f"{st['chained']['rows_per_s'] / st['old_store']['rows_per_s']:.2f}; writer time per row: chained "
          f"{1e6 / st['chained']['rows_per_s']:.0f} us, plain {1e6 / st['plain']['rows_per_s']:.0f} us, old store "
          f"{1e6 / st['old_store']['rows_per_s']:.0f} us")
    print(f"target: store >= 5000 rows/s with the chain -> "
          f"{'MET' if st['chained']['rows_per_s'] >= 5000 else 'MISSED'} ({st['chained']['rows_per_s']:.0f})")
    vf = results["verify"]
    b = vf["breakdown"]
    w, c2 = b["wall_s"], b["cpu_s"]
    print(f"audit verify: {vf['records']} records ({vf['build']['verdicts']} verdicts + {vf['build']['audit']} audit), "
          f"verify_chains {vf['verify_chains_median_s']:.2f} s wall (runs "
          f"{', '.join(f'{x:.2f}' for x in vf['verify_chains_s'])}), {vf['verify_chains_median_cpu_s']:.2f} s CPU; "
          f"{vf['records_per_s']:.0f} records/s; verify_database (parallel ranges, what the CLI runs) "
          f"{vf['verify_database_median_s']:.2f} s wall; CLI {vf['cli_wall_s']:.2f} s wall (exit {vf['cli_exit']})")
    print(f"  breakdown (verdict chain, {b['rows']} rows, CPU s, median of 2): SQLite fetch {c2['fetch']:.2f} (the "
          f"parts join {b['cpu_parts_join_s']:.2f} of it), JSON canonical {b['cpu_json_s']:.2f}, SHA-256 + compare "
          f"{b['cpu_sha_and_compare_s']:.2f} (SHA-256 alone {b['sha256_alone_s']:.2f}); total {c2['full']:.2f} "
          f"(wall {w['full']:.2f})")
    print(f"  prototypes (every hash checked; ranges joined: {b['joined_and_complete']}), wall / CPU s: one process "
          f"{w['full']:.2f} / {c2['full']:.2f}; one process, fast_hash {w['fast']:.2f} / {c2['fast']:.2f} "
          f"(CPU {c2['full'] / c2['fast']:.2f}x); two processes {w['two_processes']:.2f} / "
          f"{c2['two_processes']:.2f} per range; two processes, fast_hash {w['two_processes_fast_hash']:.2f} / "
          f"{c2['two_processes_fast_hash']:.2f} per range")
    print(f"target: audit verify over {vf['records']} records <= 10 s -> "
          f"{'MET' if min(vf['verify_chains_median_s'], vf['verify_database_median_s']) <= 10 else 'MISSED'} "
          f"({vf['verify_chains_median_s']:.2f} s one walk, {vf['verify_database_median_s']:.2f} s parallel ranges, "
          f"in process; CLI {vf['cli_wall_s']:.2f} s)")
    results["targets"] = {"latency_p50_under_0_5_ms": met_latency, "latency_ci_upper_under_0_5_ms": shown,
                          "store_5000_rows_per_s": st["chained"]["rows_per_s"] >= 5000,
                          "verify_10_s": vf["verify_chains_median_s"] <= 10}
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(results, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
