"""``edge-inspect tokens``: API tokens for machines and visitors (AOI, QMS, an auditor for an afternoon)."""

from __future__ import annotations

import argparse
import json
from dataclasses import asdict
from datetime import UTC, datetime

from edge.access import SCOPES, create_token, list_tokens, parse_duration, revoke_token
from edge.access.scopes import SCOPE_DESCRIPTIONS
from edge.cli.common import CommandError, add_config_option, change, cli_actor, config_from, station_database


def register(commands: argparse._SubParsersAction) -> None:
    scopes_help = "; ".join(f"{s}: {SCOPE_DESCRIPTIONS[s]}" for s in SCOPES)
    parser = commands.add_parser("tokens", help="API tokens: create, list, revoke",
                                 description="Bearer tokens for machines and people (Authorization: Bearer "
                                             "<token>). The secret is shown once at creation and stored only as "
                                             "its SHA-256. Every change is written to the audit trail.")
    actions = parser.add_subparsers(dest="action", required=True, metavar="ACTION")
    create = actions.add_parser("create", help="create a token and print its secret once")
    add_config_option(create)
    create.add_argument("--name", required=True, help="token name: letters, digits, _ . @ - (1 to 64)")
    create.add_argument("--scope", action="append", required=True, metavar="SCOPE", dest="scopes",
                        help=f"repeatable. {scopes_help}")
    create.add_argument("--expires", metavar="DURATION", default=None,
                        help="expire after e.g. 30m, 90m, 4h, 2d, 1w (default: never)")
    create.add_argument("--json", action="store_true", help="one JSON object (with the secret as 'token')")
    create.set_defaults(handler=run_create)
    listing = actions.add_parser("list", help="all tokens with their state (never their secrets)")
    add_config_option(listing)
    listing.add_argument("--json", action="store_true", help="one JSON array")
    listing.set_defaults(handler=run_list)
    revoke = actions.add_parser("revoke", help="revoke a token; the next request with it is refused")
    add_config_option(revoke)
    revoke.add_argument("name")
    revoke.set_defaults(handler=run_revoke)


def run_create(args: argparse.Namespace) -> int:
    config = config_from(args)
    try:
        expires_in = parse_duration(args.expires) if args.expires is not None else None
    except ValueError as exc:
        raise CommandError(str(exc)) from exc
    actor = cli_actor()
    with station_database(config) as conn:
        token, secret = change(conn, lambda c: create_token(c, actor, args.name, args.scopes, expires_in))
    if args.json:
        print(json.dumps({"token": secret, "name": token.name, "scopes": list(token.scopes),
                          "created_at": token.created_at, "expires_at": token.expires_at}))
        return 0
    print(f"token {token.name} created with scopes {' '.join(token.scopes)}, "
          f"{'expires ' + token.expires_at if token.expires_at else 'no expiry'}.\n"
          "The secret is shown only this once; it cannot be recovered (revoke and create another if lost):\n\n"
          f"    {secret}\n\nSend it as: Authorization: Bearer {secret[:6]}...")
    return 0


def run_list(args: argparse.Namespace) -> int:
    with station_database(config_from(args)) as conn:
        tokens = list_tokens(conn)
    now = datetime.now(UTC)
    if args.json:
        print(json.dumps([{**asdict(t), "scopes": list(t.scopes), "state": t.state(now)} for t in tokens], indent=2))
        return 0
    if not tokens:
        print("no tokens (create one: edge-inspect tokens create --name NAME --scope SCOPE)")
    for t in tokens:
        print(f"{t.name:<24} {t.state(now):<8} {' '.join(t.scopes):<28} created {t.created_at} by {t.created_by}"
              f"  expires {t.expires_at or 'never'}" + (f"  revoked {t.revoked_at} by {t.revoked_by}"
                                                        if t.revoked_at else ""))
    return 0


def run_revoke(args: argparse.Namespace) -> int:
    actor = cli_actor()
    with station_database(config_from(args)) as conn:
        token = change(conn, lambda c: revoke_token(c, actor, args.name))
    print(f"token {token.name} revoked; requests with it are refused from now on")
    return 0
