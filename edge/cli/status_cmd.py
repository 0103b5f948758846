"""``edge-inspect status``: a health summary a technician can read, from the running service when it
answers and from the station's files in any case (so it also works, and says so, when the service is down).

Exit status: 0 when the service answers ready, 1 when it is down or not ready, 2 for a command error.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sqlite3
import ssl
import urllib.error
import urllib.request
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from prometheus_client.parser import text_string_to_metric_families

from edge.cli.common import CommandError, add_config_option, config_from, registry_for
from edge.config import StationConfig
from edge.store.backup import backups_in
from edge.store.schema import connect

WILDCARDS = {"0.0.0.0", "::", ""}


def register(commands: argparse._SubParsersAction) -> None:
    parser = commands.add_parser(
        "status", help="health summary: service, models, verdict rate, batch, alarms, disk, backup",
        description="Health of this station: whether the service runs and is ready, its uptime and models, "
                    "the last verdict and the rate, the open batch, active alarms, the store queue, disk and "
                    "database use, the last backup and the chain heads. Works when the service is down (reads "
                    "the database and config directly). Exit status 0 when ready, 1 when down or not ready.")
    add_config_option(parser)
    parser.add_argument("--port", type=int, default=None, help="the service's port (default: api.port)")
    parser.add_argument("--json", action="store_true", help="the same as one JSON object")
    parser.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    config = config_from(args)
    report = gather(config, args.port if args.port is not None else config.api.port)
    print(json.dumps(report, indent=2) if args.json else render(report))
    return 0 if report["service"]["status"] == "ready" else 1


def gather(config: StationConfig, port: int) -> dict[str, Any]:
    service = probe_service(config, port)
    metrics = service.pop("metrics", {})
    database = config.database_path
    report: dict[str, Any] = {"station": config.station.id, "checked_at": _now().isoformat(timespec="seconds"),
                              "service": service}
    report["models"] = service.pop("models", None) or _registry_models(config)
    if not database.exists():
        raise CommandError(f"no station database at {database}: run `edge-inspect run` once, or check --config")
    try:
        conn = connect(database, readonly=True)
    except sqlite3.Error as exc:
        raise CommandError(f"cannot open the station database {database}: {exc}") from exc
    try:
        report.update(_from_database(conn))
    except sqlite3.Error as exc:
        raise CommandError(f"cannot read the station database {database}: {exc}") from exc
    finally:
        conn.close()
    report["store_queue"] = metrics.get("edge_store_queue_depth")
    report["disk"] = _disk(config, metrics)
    report["database"] = {"path": str(database), "bytes": sum(
        p.stat().st_size for p in (database, Path(f"{database}-wal"), Path(f"{database}-shm")) if p.exists())}
    report["backup"] = _last_backup(config)
    return report


def probe_service(config: StationConfig, port: int) -> dict[str, Any]:
    """GET /api/v1/health (and /metrics where anonymous reading is allowed) on this machine."""
    host = "127.0.0.1" if config.api.host in WILDCARDS else config.api.host
    scheme = "https" if config.api.tls_certificate else "http"
    url = f"{scheme}://{host}:{port}"
    # Our own service on this machine; nothing secret is sent, so its certificate is not checked.
    context = ssl._create_unverified_context() if scheme == "https" else None
    service: dict[str, Any] = {"url": url, "running": False, "status": "down", "pid": _listener_pid(port)}
    try:
        health = _get(f"{url}/api/v1/health", context)
    except urllib.error.HTTPError as exc:  # 503: running but not ready
        health = json.loads(exc.read() or b"{}")
    except (OSError, ValueError) as exc:
        service["error"] = str(getattr(exc, "reason", exc))
        return service
    checks = health.get("checks", {})
    service.update(running=True, status=health.get("status", "unknown"), uptime_s=health.get("uptime_s"),
                   checks={k: v for k, v in checks.items() if k not in ("models", "acoustic_models")})
    service["models"] = {**checks.get("models", {}), **checks.get("acoustic_models", {})}
    try:
        text = _get(f"{url}/metrics", context, raw=True)
        service["metrics"] = {family.name: sample.value for family in text_string_to_metric_families(text)
                              for sample in family.samples if not sample.labels}
    except (OSError, ValueError):
        service["metrics"] = {}  # /metrics needs a qms:read credential on this station
    return service


def _get(url: str, context: ssl.SSLContext | None, raw: bool = False) -> Any:
    with urllib.request.urlopen(url, timeout=3, context=context) as answer:
        body = answer.read().decode()
    return body if raw else json.loads(body)


def _listener_pid(port: int) -> int | None:
    """The process listening on ``port`` on this machine (Linux /proc; None where it cannot be told)."""
    inodes: set[str] = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        try:
            lines = Path(table).read_text().splitlines()[1:]
        except OSError:
            continue
        for line in lines:
            fields = line.split()
            if len(fields) > 9 and fields[3] == "0A" and int(fields[1].rsplit(":", 1)[1], 16) == port:
                inodes.add(fields[9])
    if not inodes:
        return None
    wanted = {f"socket:[{inode}]" for inode in inodes}
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            if any(os.readlink(f"/proc/{pid}/fd/{fd}") in wanted for fd in os.listdir(f"/proc/{pid}/fd")):
                return int(pid)
        except OSError:
            continue
    return None


def _registry_models(config: StationConfig) -> dict[str, int]:
    """The active version of each configured model, read from the registry (the service is down)."""
    registry = registry_for(config)
    names = [config.models.vision, config.models.acoustic, *(r.model for r in config.recipes)]
    found: dict[str, int] = {}
    for name in filter(None, names):
        try:
            found[name] = registry.active_version(name)
        except Exception:  # a broken model is reported as missing, not a crash of status
            continue
    return found


def _from_database(conn: sqlite3.Connection) -> dict[str, Any]:
    now = _now()
    total, last_at = conn.execute("SELECT COUNT(*), MAX(created_at) FROM verdicts").fetchone()
    recent = {label: conn.execute("SELECT COUNT(*) FROM parts WHERE created_at >= ?",
                                  (_iso_ago(now, seconds),)).fetchone()[0]
              for label, seconds in (("last_minute", 60), ("last_hour", 3600))}
    verdicts = {"total": total, "last_at": last_at,
                "last_age_s": round((now - datetime.fromisoformat(last_at)).total_seconds(), 1) if last_at else None,
                "parts_last_minute": recent["last_minute"], "parts_last_hour": recent["last_hour"],
                "parts_per_s_last_minute": round(recent["last_minute"] / 60.0, 2)}
    batch = conn.execute("SELECT id, lot, product, recipe, opened_at FROM batches WHERE closed_at IS NULL "
                         "ORDER BY id DESC LIMIT 1").fetchone()
    alarms = conn.execute("SELECT id, kind, severity, message, raised_at FROM alarms WHERE acknowledged_at IS NULL "
                          "AND cleared_at IS NULL ORDER BY id DESC LIMIT 20").fetchall()
    heads = conn.execute("SELECT chain, last_id, hash FROM chain_heads ORDER BY chain").fetchall()
    return {"verdicts": verdicts, "open_batch": dict(batch) if batch else None,
            "active_alarms": [dict(a) for a in alarms],
            "chain_heads": {h["chain"]: {"last_id": h["last_id"], "hash": h["hash"]} for h in heads}}


def _disk(config: StationConfig, metrics: dict[str, float]) -> dict[str, Any]:
    usage = shutil.disk_usage(config.data_dir)
    budget_mb = float(getattr(config.storage, "image_budget_mb", 0.0))
    return {"data_dir": str(config.data_dir), "free_bytes": usage.free, "total_bytes": usage.total,
            "min_free_bytes": int(config.storage.min_free_mb * 1024 * 1024),
            "images_bytes": metrics.get("edge_image_bytes"),
            "image_budget_bytes": int(budget_mb * 1024 * 1024) if budget_mb else None}


def _last_backup(config: StationConfig) -> dict[str, Any] | None:
    folder = getattr(config.storage, "backup_dir", None)
    folder = config.resolve(folder) if folder is not None else config.data_dir / "backups"
    found = backups_in(folder, config.database_path.stem)
    if not found:
        return None
    newest = found[-1]
    at = datetime.fromtimestamp(newest.stat().st_mtime, UTC)
    return {"path": str(newest), "at": at.isoformat(timespec="seconds"), "bytes": newest.stat().st_size,
            "age_h": round((_now() - at).total_seconds() / 3600.0, 1)}


def _now() -> datetime:
    return datetime.now(UTC)


def _iso_ago(now: datetime, seconds: float) -> str:
    return datetime.fromtimestamp(now.timestamp() - seconds, UTC).isoformat(timespec="microseconds")


def _size(n: float | None) -> str:
    if n is None:
        return "?"
    for unit in ("B", "KB", "MB", "GB", "TB"):
        if abs(n) < 1024 or unit == "TB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return "?"


def _duration(seconds: float | None) -> str:
    if seconds is None:
        return "?"
    s = int(seconds)
    return f"{s // 86400}d {s % 86400 // 3600}h {s % 3600 // 60}m" if s >= 86400 else \
        f"{s // 3600}h {s % 3600 // 60}m {s % 60}s" if s >= 3600 else f"{s // 60}m {s % 60}s"


def render(r: dict[str, Any]) -> str:
    s, v = r["service"], r["verdicts"]
    lines = [f"Station {r['station']}  ({r['checked_at']})"]
    if s["running"]:
        lines.append(f"Service     {s['status'].upper()} at {s['url']}, pid {s['pid'] or '?'}, "
                     f"up {_duration(s.get('uptime_s'))}")
        failing = [k for k, ok in s.get("checks", {}).items() if ok is False]
        if failing:
            lines.append(f"            failing checks: {', '.join(failing)}")
    else:
        lines.append(f"Service     DOWN (nothing answers at {s['url']}: {s.get('error', '?')}); "
                     "figures below are read from the station's files")
    models = ", ".join(f"{name} v{version}" for name, version in r["models"].items()) or "none"
    lines.append(f"Models      {models}{'' if s['running'] else ' (active in the registry)'}")
    if v["last_at"]:
        lines.append(f"Verdicts    {v['total']} stored; last {v['last_at']} ({_duration(v['last_age_s'])} ago); "
                     f"{v['parts_last_minute']} parts in the last minute ({v['parts_per_s_last_minute']}/s), "
                     f"{v['parts_last_hour']} in the last hour")
    else:
        lines.append("Verdicts    none yet")
    b = r["open_batch"]
    lines.append(f"Batch       #{b['id']} lot {b['lot']}, open since {b['opened_at']}" if b
                 else "Batch       none open")
    alarms = r["active_alarms"]
    lines.append(f"Alarms      {len(alarms)} active" + "".join(
        f"\n            [{a['severity']}] {a['kind']}: {a['message']} (since {a['raised_at']})" for a in alarms))
    queue = r["store_queue"]
    lines.append(f"Store queue {int(queue) if queue is not None else '? (service down or /metrics needs a token)'}")
    d = r["disk"]
    images = f"images {_size(d['images_bytes'])}" + (f" of {_size(d['image_budget_bytes'])} budget"
                                                       if d["image_budget_bytes"] else "")
    lines.append(f"Disk        {_size(d['free_bytes'])} free of {_size(d['total_bytes'])} "
                 f"(floor {_size(d['min_free_bytes'])}); {images}")
    lines.append(f"Database    {_size(r['database']['bytes'])} at {r['database']['path']}")
    backup = r["backup"]
    lines.append(f"Backup      {backup['path']} ({backup['age_h']} h ago, {_size(backup['bytes'])})" if backup
                 else "Backup      none found")
    for chain, head in r["chain_heads"].items():
        lines.append(f"Chain       {chain}: #{head['last_id']} {head['hash'][:16]}…")
    return "\n".join(lines)
