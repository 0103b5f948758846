"""``edge-inspect collect``: a fleet's MQTT messages, exactly once, into a central database."""

from __future__ import annotations

import argparse
import json
import logging
import signal
import threading
from pathlib import Path
from types import FrameType

from edge.cli.common import CommandError
from edge.upstream.collector import Collector
from edge.upstream.collector_db import CollectorDatabaseError, open_collector_database
from edge.upstream.topics import DEFAULT_FLEET_TOPIC, BrokerUrl, BrokerUrlError

log = logging.getLogger("edge.collect")


def register(commands: argparse._SubParsersAction) -> None:
    parser = commands.add_parser(
        "collect", help="collect a fleet's MQTT messages into a central database, exactly once",
        description="Subscribe to the stations' topics (persistent session, QoS 1) and write every verdict, batch, "
                    "alarm and override exactly once into SQLite (default) or PostgreSQL. A message is acknowledged "
                    "only once committed; duplicates are dropped by their idempotency key.")
    parser.add_argument("--mqtt-url", default=None, metavar="mqtt://HOST:PORT", help="the broker")
    where = parser.add_mutually_exclusive_group()
    where.add_argument("--db", type=Path, default=None, metavar="PATH",
                       help="SQLite file of the central database (default: fleet.db)")
    where.add_argument("--db-url", default=None, metavar="postgresql://...",
                       help="PostgreSQL instead of SQLite (needs: pip install 'psycopg[binary]')")
    parser.add_argument("--topic", action="append", default=None, metavar="FILTER",
                        help=f"topic filter, repeatable (default: {DEFAULT_FLEET_TOPIC})")
    parser.add_argument("--client-id", default="edge-inspect-collector",
                        help="MQTT client id: the broker keeps this session's queue while the collector is away")
    parser.add_argument("--repair-interval", type=float, default=30.0, metavar="S",
                        help="every S seconds, ask stations again for verdicts their hash chain says are missing "
                             "(a broker that crashed after acknowledging them); 0: never")
    parser.add_argument("--stats-interval", type=float, default=60.0, metavar="S",
                        help="log counts every S seconds (0: never)")
    parser.add_argument("--check", action="store_true",
                        help="do not collect: report per station the verdicts held and any gaps in their hash chain "
                             "(exit 1 when there are gaps)")
    parser.set_defaults(handler=collect)


def collect(args: argparse.Namespace) -> int:
    url = None if args.check else _broker(args.mqtt_url)
    try:
        database = open_collector_database(args.db, args.db_url)
    except CollectorDatabaseError as exc:
        raise CommandError(str(exc)) from exc
    if args.check:
        report = database.completeness()
        database.close()
        print(json.dumps(report, indent=2))
        return 1 if any(station["gaps_before"] for station in report.values()) else 0
    assert url is not None
    collector = Collector(url, database, tuple(args.topic or [DEFAULT_FLEET_TOPIC]), args.client_id,
                          repair_interval_s=args.repair_interval)
    done = threading.Event()

    def finish(signum: int, frame: FrameType | None) -> None:
        done.set()

    signal.signal(signal.SIGTERM, finish)
    signal.signal(signal.SIGINT, finish)
    collector.start()
    log.info("collecting %s from %s into %s", ", ".join(collector.topics), url,
             "PostgreSQL" if args.db_url else (args.db or "fleet.db"))
    interval = args.stats_interval if args.stats_interval > 0 else None
    while not done.wait(interval):
        log.info("collector: %s", json.dumps(collector.stats()))
    collector.stop()
    print(json.dumps(collector.stats()))
    return 0


def _broker(mqtt_url: str | None) -> BrokerUrl:
    if mqtt_url is None:
        raise CommandError("--mqtt-url mqtt://HOST:PORT is needed to collect (or --check to inspect the database)")
    try:
        return BrokerUrl.parse(mqtt_url)
    except BrokerUrlError as exc:
        raise CommandError(f"--mqtt-url: {exc}") from exc
