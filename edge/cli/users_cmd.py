"""``edge-inspect users``: add, list and remove the people who log in to the station (audited)."""

from __future__ import annotations

import argparse
import getpass
import json
import sys
from dataclasses import asdict
from typing import TypeVar

from edge.access import ROLES, PinHasher, add_user, list_users, remove_user
from edge.access.hashing import HashParameters, check_pin
from edge.cli.common import CommandError, add_config_option, change, cli_actor, config_from, station_database

T = TypeVar("T")


def register(commands: argparse._SubParsersAction) -> None:
    parser = commands.add_parser("users", help="station users: add, list, remove",
                                 description="People who log in to the station page with a PIN or password. "
                                             "Every change is written to the audit trail.")
    actions = parser.add_subparsers(dest="action", required=True, metavar="ACTION")
    add = actions.add_parser("add", help="add a user (asks for the PIN twice)")
    add_config_option(add)
    add.add_argument("name", help="user name: letters, digits, _ . @ - (1 to 64)")
    add.add_argument("--role", required=True, choices=ROLES,
                     help="operator: batches, overrides, alarms, recipe, line stop; maintenance: also models and "
                          "calibration; admin: also users and tokens")
    add.add_argument("--pin-stdin", action="store_true", help="read the PIN or password from stdin (one line)")
    add.set_defaults(handler=run_add)
    listing = actions.add_parser("list", help="active users")
    add_config_option(listing)
    listing.add_argument("--json", action="store_true", help="one JSON array")
    listing.add_argument("--all", action="store_true", help="removed users too")
    listing.set_defaults(handler=run_list)
    remove = actions.add_parser("remove", help="remove a user and end their sessions")
    add_config_option(remove)
    remove.add_argument("name")
    remove.set_defaults(handler=run_remove)


def read_pin(from_stdin: bool) -> str:
    if from_stdin:
        pin = sys.stdin.readline().rstrip("\r\n")
    elif sys.stdin.isatty():
        pin = getpass.getpass("PIN or password: ")
        if getpass.getpass("again: ") != pin:
            raise CommandError("the two entries differ; nothing was changed")
    else:
        raise CommandError("stdin is not a terminal: pass --pin-stdin to read the PIN from it")
    try:
        return check_pin(pin)
    except ValueError as exc:
        raise CommandError(f"{exc}; nothing was changed") from exc


def run_add(args: argparse.Namespace) -> int:
    config = config_from(args)
    pin = read_pin(args.pin_stdin)
    p = config.access.password_hash
    pin_hash = PinHasher(HashParameters(p.time_cost, p.memory_kib, p.parallelism)).hash(pin)  # before the lock
    actor = cli_actor()
    with station_database(config) as conn:
        user = change(conn, lambda c: add_user(c, actor, args.name, args.role, pin_hash))
    print(f"user {user.name} added with role {user.role}")
    return 0


def run_list(args: argparse.Namespace) -> int:
    with station_database(config_from(args)) as conn:
        users = list_users(conn, include_removed=args.all)
    if args.json:
        print(json.dumps([asdict(u) for u in users], indent=2))
        return 0
    if not users:
        print("no users (add one: edge-inspect users add NAME --role admin)")
    for u in users:
        removed = f"  removed {u.removed_at} by {u.removed_by}" if u.removed_at else ""
        print(f"{u.name:<24} {u.role:<12} added {u.created_at} by {u.created_by}{removed}")
    return 0


def run_remove(args: argparse.Namespace) -> int:
    actor = cli_actor()
    with station_database(config_from(args)) as conn:
        user = change(conn, lambda c: remove_user(c, actor, args.name))
    print(f"user {user.name} removed; their sessions have ended")
    return 0
