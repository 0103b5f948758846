"""``edge-inspect run``: the service."""

from __future__ import annotations

import argparse
import logging

from edge.api.app import create_app
from edge.cli.common import CommandError, add_config_option, config_from
from edge.logs import setup_logging
from edge.server import TlsError, server_for, tls_files
from edge.station import StartupError, Station
from edge.watchdog import PipelineWatchdog

log = logging.getLogger("edge.run")


def register(commands: argparse._SubParsersAction) -> None:
    parser = commands.add_parser("run", help="run the station service (API, sources, store)",
                                 description="Start the station: load models, open the store, start sources, "
                                             "serve the HTTP API.")
    add_config_option(parser)
    parser.add_argument("--host", default=None, help="listen address (default: api.host from the config)")
    parser.add_argument("--port", type=int, default=None, help="listen port (default: api.port from the config)")
    parser.add_argument("--mqtt-url", default=None, metavar="mqtt://HOST:PORT",
                        help="push every record to this MQTT broker (default: upstream.mqtt_url from the config)")
    parser.add_argument("--no-sources", action="store_true", help="serve the API only; do not start sources")
    parser.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    config = config_from(args)
    if args.host:  # the bound address decides what access control demands at start
        config = config.model_copy(update={"api": config.api.model_copy(update={"host": args.host})})
    if args.mqtt_url:  # checked when the station starts (BrokerUrl), with a message that names it
        config = config.model_copy(
            update={"upstream": config.upstream.model_copy(update={"mqtt_url": args.mqtt_url})})
    if args.log_format is None and config.logging.format != "text":
        setup_logging(config.logging.format, args.verbose, replace=True)
    if not config.logging.requests:
        logging.getLogger("edge.http").setLevel(logging.WARNING)
    try:
        tls_files(config)  # unusable certificate or key: said before anything starts
    except TlsError as exc:
        raise CommandError(f"cannot start station {config.station.id}: {exc}") from exc
    station = Station(config)
    try:
        station.start(with_sources=not args.no_sources)
    except StartupError as exc:
        station.stop()
        raise CommandError(f"cannot start station {config.station.id}: {exc}") from exc
    host = config.api.host
    port = args.port if args.port is not None else config.api.port
    app = create_app(station, stop_station_on_shutdown=True)
    assert station.store is not None, "started above"
    watchdog = PipelineWatchdog.from_environment(station.store, station.runners)  # under systemd only
    server = server_for(watchdog.wrap(app) if watchdog else app, config, host, port)
    if station.events is not None:  # open event streams end when the server stops, not after its grace time
        station.events.shutting_down = lambda: server.should_exit
    if watchdog is not None:  # uvicorn calls it from the event loop, about once a second
        server.config.callback_notify, server.config.timeout_notify = watchdog.loop_tick, 1
        watchdog.start()
    scheme = "https" if config.api.tls_certificate else "http"
    log.info("serving on %s://%s:%d (OpenAPI at /docs)", scheme, host, port)
    try:
        server.run()
    finally:
        if watchdog is not None:
            watchdog.stop()
        station.stop()  # idempotent; covers a server that never started
    if not server.started:
        raise CommandError(f"could not serve on {host}:{port} (is the port in use?)")
    return 0
