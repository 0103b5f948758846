"""Random SIGKILLs under load: the real service (`edge-inspect run` on loopback) judges images posted by AOI
clients over HTTP and is killed with SIGKILL at a random instant, then started again, N times in a row.

Counts clean restarts (the health route answers within the time-out), verdicts acknowledged and lost (absent
or with another decision), and times each restart (exec to a healthy answer: median, p95, max). At the end:
``PRAGMA integrity_check`` and ``edge-inspect audit verify``. Issue 22's target: 100 clean restarts, zero
acknowledged verdicts lost. Uses the fault-injection test's load and checks (tests/test_fault_injection.py).

Usage: .venv/bin/python bench/bench_kills.py [--kills 100] [--clients 3] [--seed N] [--json FILE]
"""

from __future__ import annotations

import argparse
import json
import random
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "tests"))

from support import LiveService, cli_token, free_port, write_station_config  # noqa: E402
from test_fault_injection import Load, audit_verify, integrity, missing  # noqa: E402

from edge.config import load_config  # noqa: E402


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q / 100 * (len(ordered) - 1)))]


def run(kills: int, clients: int, seed: int, min_s: float, max_s: float, folder: Path) -> dict[str, Any]:
    rng = random.Random(seed)
    config = write_station_config(folder)
    db = load_config(config).database_path
    load = Load(cli_token(config, "aoi-bench", "aoi:verdict"), clients)
    restarts: list[float] = []
    failed_starts: list[str] = []
    lost_after: list[int] = []  # kill numbers after which an acknowledged verdict was missing
    started = time.monotonic()
    for kill in range(kills):
        began = time.monotonic()
        try:
            service = LiveService(config, free_port()).start(timeout_s=120)
        except RuntimeError as exc:
            failed_starts.append(f"start {kill}: {str(exc)[-300:]}")
            continue
        restarts.append(time.monotonic() - began)
        finish = load.run(service.url)
        time.sleep(rng.uniform(min_s, max_s))
        service.kill()
        finish()
        if missing(db, load.snapshot()):
            lost_after.append(kill)
        print(f"kill {kill + 1}/{kills}: restart {restarts[-1]:.2f} s, {len(load.snapshot())} acknowledged so far",
              flush=True)
    acknowledged = load.snapshot()
    lost = missing(db, acknowledged)
    code, report = audit_verify(config)
    return {
        "seed": seed, "kills": kills, "clients": clients, "interval_s": [min_s, max_s],
        "clean_restarts": len(restarts), "failed_starts": failed_starts,
        "acknowledged": len(acknowledged), "lost": len(lost), "lost_examples": dict(list(lost.items())[:5]),
        "first_kill_with_a_loss": lost_after[0] + 1 if lost_after else None,
        "restart_s": {"median": round(statistics.median(restarts), 2), "p95": round(percentile(restarts, 95), 2),
                      "max": round(max(restarts), 2)} if restarts else None,
        "integrity_check": integrity(db), "audit_verify_exit": code, "chain_intact": report.get("intact"),
        "wall_s": round(time.monotonic() - started, 1),
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--kills", type=int, default=100)
    parser.add_argument("--clients", type=int, default=3, help="AOI clients posting images without pause")
    parser.add_argument("--seed", type=int, default=None, help="for the kill instants (printed when not given)")
    parser.add_argument("--min-s", type=float, default=0.2, help="shortest run under load before a kill")
    parser.add_argument("--max-s", type=float, default=3.0, help="longest run under load before a kill")
    parser.add_argument("--json", type=Path, default=None)
    args = parser.parse_args()
    seed = args.seed if args.seed is not None else random.SystemRandom().randrange(2**32)
    print(f"# {args.kills} random SIGKILLs under load, seed {seed}")
    with tempfile.TemporaryDirectory(prefix="kills-") as folder:
        result = run(args.kills, args.clients, seed, args.min_s, args.max_s, Path(folder))
    print(json.dumps(result))
    met = (result["clean_restarts"] == args.kills and result["lost"] == 0 and result["integrity_check"] == "ok"
           and result["audit_verify_exit"] == 0)
    print(f"target: {args.kills} clean restarts, zero acknowledged verdicts lost, integrity ok, chain intact -> "
          f"{'MET' if met else 'MISSED'}")
    if args.json:
        args.json.write_text(json.dumps(result, indent=2))
    return 0 if met else 1


if __name__ == "__main__":
    sys.exit(main())
