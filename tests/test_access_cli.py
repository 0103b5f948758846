"""``edge-inspect users`` and ``edge-inspect tokens`` as a technician runs them, against a real station
database, including a revocation from the CLI taking effect at once on a running service."""

import getpass
import io
import json
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

import httpx
import pytest
import uvicorn
import yaml
from support import EDGE_INSPECT, PROJECT_ROOT, free_port
from test_access import FAST_HASH, build_app

from edge.access import AccessControl
from edge.access.hashing import digest
from edge.cli import main
from edge.config import load_config
from edge.store import VerdictStore


def station_file(folder: Path) -> Path:
    path = folder / "station.yaml"
    config = {"station": {"id": "cli-test"}, "storage": {"data_dir": str(folder / "data")},
              "access": {"password_hash": FAST_HASH}}
    path.write_text(yaml.safe_dump(config), encoding="utf-8")
    return path


def cli(config: Path, *args: str, stdin: str | None = None) -> subprocess.CompletedProcess[str]:
    """The real command in a process of its own (as the acceptance checks call it)."""
    return subprocess.run([*EDGE_INSPECT, *args, "--config", str(config)], input=stdin, capture_output=True,
                          text=True, cwd=PROJECT_ROOT, timeout=60)


@dataclass
class Result:
    returncode: int
    stdout: str
    stderr: str


@pytest.fixture
def run(capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch) -> Callable[..., Result]:
    """The same command line through edge.cli.main in this process (seconds faster per call)."""

    def call(config: Path, *args: str, stdin: str = "") -> Result:
        capsys.readouterr()
        monkeypatch.setattr(sys, "stdin", io.StringIO(stdin))
        try:
            code = main([*args, "--config", str(config)])
        except SystemExit as exc:  # argparse refusals
            code = int(exc.code or 0)
        out, err = capsys.readouterr()
        return Result(code, out, err)

    return call


def database_bytes(config: Path) -> bytes:
    data = config.parent / "data"
    return b"".join(p.read_bytes() for p in sorted(data.glob("verdicts.db*")))


@pytest.fixture
def config(tmp_path: Path) -> Path:
    return station_file(tmp_path)


def test_tokens_create_list_revoke(config: Path, run: Callable[..., Result]) -> None:
    created = cli(config, "tokens", "create", "--name", "qms-audit", "--scope", "qms:read", "--expires", "90m",
                  "--json")
    assert created.returncode == 0, created.stderr
    token = json.loads(created.stdout)
    assert token["token"].startswith("ei_") and token["name"] == "qms-audit" and token["scopes"] == ["qms:read"]
    expires = datetime.fromisoformat(token["expires_at"])
    assert abs(expires - (datetime.now(UTC) + timedelta(minutes=90))) < timedelta(minutes=1)
    text = run(config, "tokens", "create", "--name", "aoi-1", "--scope", "aoi:verdict", "--scope", "qms:read")
    assert text.returncode == 0 and "shown only this once" in text.stdout

    listed = run(config, "tokens", "list", "--json")
    assert listed.returncode == 0
    rows = {row["name"]: row for row in json.loads(listed.stdout)}
    assert rows["qms-audit"]["state"] == "active" and rows["aoi-1"]["scopes"] == ["aoi:verdict", "qms:read"]
    assert token["token"] not in listed.stdout and digest(token["token"]) not in listed.stdout
    assert token["token"].encode() not in database_bytes(config)  # stored as its SHA-256 only

    assert run(config, "tokens", "revoke", "qms-audit").returncode == 0
    assert json.loads(run(config, "tokens", "list", "--json").stdout)[0]["state"] == "revoked"
    assert "revoked" in run(config, "tokens", "list").stdout
    # the name is free again once revoked
    assert run(config, "tokens", "create", "--name", "qms-audit", "--scope", "qms:read", "--json").returncode == 0


@pytest.mark.parametrize(("args", "message"), [
    (["tokens", "create", "--name", "x", "--scope", "root"], "unknown scope"),
    (["tokens", "create", "--name", "x", "--scope", "qms:read", "--expires", "soon"], "not a duration"),
    (["tokens", "create", "--name", "x", "--scope", "qms:read", "--expires", "0m"], "not a duration"),
    (["tokens", "create", "--name", "bad name", "--scope", "qms:read"], "not allowed"),
    (["tokens", "revoke", "nobody"], "no unrevoked token"),
    (["users", "remove", "nobody"], "no active user"),
])
def test_clear_errors_exit_2(config: Path, args: list[str], message: str, run: Callable[..., Result]) -> None:
    result = run(config, *args)
    assert result.returncode == 2 and message in result.stderr, result.stderr
    assert "Traceback" not in result.stderr


def test_users_add_list_remove_and_the_audit_trail(config: Path, run: Callable[..., Result]) -> None:
    added = run(config, "users", "add", "ada", "--role", "admin", "--pin-stdin", stdin="correct horse\n")
    assert added.returncode == 0, added.stderr
    again = run(config, "users", "add", "ada", "--role", "operator", "--pin-stdin", stdin="1234\n")
    assert again.returncode == 2 and "exists already" in again.stderr
    short = run(config, "users", "add", "bo", "--role", "operator", "--pin-stdin", stdin="123\n")
    assert short.returncode == 2 and "at least 4" in short.stderr
    bad_role = run(config, "users", "add", "bo", "--role", "boss", "--pin-stdin", stdin="1234\n")
    assert bad_role.returncode == 2 and "invalid choice" in bad_role.stderr
    no_tty = run(config, "users", "add", "bo", "--role", "operator", stdin="1234\n")
    assert no_tty.returncode == 2 and "--pin-stdin" in no_tty.stderr
    assert run(config, "users", "add", "bo", "--role", "operator", "--pin-stdin", stdin="0815\n").returncode == 0

    users = json.loads(run(config, "users", "list", "--json").stdout)
    assert [(u["name"], u["role"]) for u in users] == [("ada", "admin"), ("bo", "operator")]
    assert "secret" not in json.dumps(users) and "argon2" not in json.dumps(users)
    assert run(config, "users", "remove", "bo").returncode == 0
    assert [u["name"] for u in json.loads(run(config, "users", "list", "--json").stdout)] == ["ada"]

    store = VerdictStore(load_config(config).database_path)
    try:
        trail = list(store.reader().execute("SELECT actor, action, entity_id, details, before, after FROM audit_log"))
    finally:
        store.close()
    actor = f"cli:{getpass.getuser()}"
    assert [(r["actor"], r["action"], r["entity_id"]) for r in trail] == [
        (actor, "user_added", "ada"), (actor, "user_added", "bo"), (actor, "user_removed", "bo")]
    text = " ".join(str(tuple(r)) for r in trail)
    assert "correct horse" not in text and "0815" not in text and "argon2" not in text


class Server:
    """The access-controlled app under uvicorn on loopback, in a thread, over the station's database."""

    def __init__(self, config: Path) -> None:
        station = load_config(config)
        self.store = VerdictStore(station.database_path)
        self.store.start()
        app = build_app(AccessControl.from_config(station, self.store))
        self.port = free_port()
        self.server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=self.port, log_level="warning"))
        self.thread = threading.Thread(target=self.server.run, daemon=True)

    def __enter__(self) -> str:
        self.thread.start()
        deadline = time.monotonic() + 10
        while not self.server.started and time.monotonic() < deadline:
            time.sleep(0.02)
        assert self.server.started
        return f"http://127.0.0.1:{self.port}"

    def __exit__(self, *_: object) -> None:
        self.server.should_exit = True
        self.thread.join(10)
        self.store.close()


@pytest.fixture
def service(config: Path) -> Iterator[str]:
    with Server(config) as url:
        yield url


def test_revocation_by_the_cli_applies_to_the_next_request(config: Path, service: str) -> None:
    created = cli(config, "tokens", "create", "--name", "line-lead", "--scope", "operator", "--json")
    headers = {"Authorization": f"Bearer {json.loads(created.stdout)['token']}"}
    with httpx.Client(base_url=service, timeout=10) as http:
        assert http.post("/api/v1/things", headers=headers).json() == {"actor": "token:line-lead"}
        assert cli(config, "tokens", "revoke", "line-lead").returncode == 0
        refused = http.post("/api/v1/things", headers=headers)
        assert refused.status_code == 401 and refused.json()["error"]["code"] == "token_revoked"
        assert refused.headers["www-authenticate"] == "Bearer"


def test_a_user_added_by_the_cli_logs_in_and_removal_ends_the_session(config: Path, service: str,
                                                                      run: Callable[..., Result]) -> None:
    assert run(config, "users", "add", "olga", "--role", "operator", "--pin-stdin", stdin="2468\n").returncode == 0
    with httpx.Client(base_url=service, timeout=10) as http:
        session = http.post("/api/v1/session", json={"user": "olga", "pin": "2468"})
        assert session.status_code == 200
        csrf = {"X-CSRF-Token": session.json()["csrf_token"]}
        assert http.post("/api/v1/things", headers=csrf).json() == {"actor": "user:olga"}
        assert run(config, "users", "remove", "olga").returncode == 0
        assert http.post("/api/v1/things", headers=csrf).json()["error"]["code"] == "session_invalid"
