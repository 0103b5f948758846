"""Access control (edge.access) through a real SQLite file, real argon2 (lowered parameters) and a FastAPI
app built with the same dependencies the station's routes use."""

import logging
import sqlite3
import time
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Annotated, Any

import pytest
from fastapi import APIRouter, Depends, FastAPI
from fastapi.testclient import TestClient

from edge.access import (
    AOI_VERDICT,
    CSRF_HEADER,
    MAINTENANCE,
    OPERATOR,
    QMS_READ,
    SESSION_COOKIE,
    UNSCOPED_ROUTES,
    AccessConfigError,
    AccessControl,
    AccessRecordError,
    Identity,
    PinHasher,
    add_user,
    check_startup,
    create_token,
    declared_scope,
    grants,
    install,
    list_tokens,
    operation_scopes,
    parse_duration,
    remove_user,
    revoke_token,
)
from edge.access.database import in_transaction, open_database
from edge.access.hashing import HashParameters, digest
from edge.api.errors import install_error_handlers
from edge.config import AccessSettings, PasswordHashSettings, StationConfig
from edge.store import VerdictStore

FAST_HASH = {"time_cost": 1, "memory_kib": 1024, "parallelism": 1}
PIN = "4711-secret"


def settings(**overrides: Any) -> AccessSettings:
    return AccessSettings.model_validate({"password_hash": FAST_HASH, **overrides})


def build_app(access: AccessControl) -> FastAPI:
    """An app with one route per scope, wired as the station's routes are."""
    app = FastAPI()
    install_error_handlers(app)
    router = APIRouter()

    @router.get("/api/v1/things")
    async def read(identity: Annotated[Identity, Depends(access.requires(QMS_READ))]) -> dict[str, str]:
        return {"actor": identity.actor}

    @router.post("/api/v1/things")
    async def change(identity: Annotated[Identity, Depends(access.requires(OPERATOR))]) -> dict[str, str]:
        return {"actor": identity.actor}

    @router.post("/api/v1/verdicts/vision", dependencies=[Depends(access.requires(AOI_VERDICT))])
    async def judge() -> dict[str, str]:
        return {"decision": "OK"}

    @router.post("/api/v1/models/promote", dependencies=[Depends(access.requires(MAINTENANCE))])
    async def promote() -> dict[str, str]:
        return {"promoted": "yes"}

    app.include_router(router)
    install(app, access)
    return app


@dataclass
class Env:
    store: VerdictStore
    access: AccessControl
    http: TestClient

    def run(self, operation: Any) -> Any:
        return self.store.submit(operation).result()

    def token(self, name: str, *scopes: str, **kwargs: Any) -> str:
        _, secret = self.run(lambda conn: create_token(conn, "test", name, list(scopes), **kwargs))
        return str(secret)

    def user(self, name: str, role: str, pin: str = PIN) -> None:
        pin_hash = self.access.hasher.hash(pin)
        self.run(lambda conn: add_user(conn, "test", name, role, pin_hash))

    def audit(self) -> list[sqlite3.Row]:
        return list(self.store.reader().execute("SELECT * FROM audit_log ORDER BY id"))


def make_env(tmp_path: Path, host: str = "127.0.0.1", **overrides: Any) -> Iterator[Env]:
    store = VerdictStore(tmp_path / "verdicts.db")
    store.start()
    access = AccessControl(settings(**overrides), store, host)
    with TestClient(build_app(access), base_url="http://127.0.0.1") as http:
        yield Env(store, access, http)
    store.close()


@pytest.fixture
def env(tmp_path: Path) -> Iterator[Env]:
    yield from make_env(tmp_path, login_lockout_s=0.5)


def bearer(secret: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {secret}"}


def login(env: Env, user: str, pin: str = PIN) -> Any:
    return env.http.post("/api/v1/session", json={"user": user, "pin": pin})


# -- scopes ------------------------------------------------------------------------------------------------

def test_scopes_imply_the_lesser_ones() -> None:
    assert grants(["admin"], "qms:read") and grants(["admin"], "aoi:verdict") and grants(["admin"], "maintenance")
    assert grants(["maintenance"], "operator") and grants(["maintenance"], "qms:read")
    assert grants(["operator"], "qms:read") and not grants(["operator"], "maintenance")
    assert not grants(["operator"], "aoi:verdict") and not grants(["aoi:verdict"], "qms:read")
    assert not grants(["qms:read"], "operator") and not grants([], "qms:read")


def test_duration_parsing_is_strict() -> None:
    assert parse_duration("90m") == timedelta(minutes=90)
    assert parse_duration("4h") == timedelta(hours=4) and parse_duration("2d") == timedelta(days=2)
    for bad in ("", "0m", "5", "m", "1.5h", "-3h", "3 h", "4hours", "10y", "99999999d"):
        with pytest.raises(ValueError, match="expiry"):
            parse_duration(bad)


def test_default_hash_parameters_are_production_grade() -> None:
    defaults = PasswordHashSettings()
    assert defaults.memory_kib >= 65536 and defaults.time_cost >= 2
    assert HashParameters() == HashParameters(defaults.time_cost, defaults.memory_kib, defaults.parallelism)


# -- users and tokens in the database -----------------------------------------------------------------------

def test_user_and_token_changes_are_audited_without_secrets(env: Env) -> None:
    env.user("ann", "operator")
    with pytest.raises(AccessRecordError, match="exists already"):
        env.user("ann", "admin")
    with pytest.raises(AccessRecordError, match="at least 4"):
        env.user("bob", "operator", pin="123")
    with pytest.raises(AccessRecordError, match="unknown role"):
        env.user("bob", "boss")
    with pytest.raises(AccessRecordError, match="not allowed"):
        env.user("bob smith", "operator")
    with pytest.raises(AccessRecordError, match="never the PIN"):
        env.run(lambda conn: add_user(conn, "test", "bob", "operator", PIN))
    secret = env.token("qms", "qms:read", expires_in=timedelta(hours=4))
    with pytest.raises(AccessRecordError, match="unknown scope"):
        env.token("x", "root")
    env.run(lambda conn: revoke_token(conn, "test", "qms"))
    env.run(lambda conn: remove_user(conn, "test", "ann"))
    with pytest.raises(AccessRecordError, match="no active user"):
        env.run(lambda conn: remove_user(conn, "test", "ann"))

    actions = [(row["actor"], row["action"], row["entity_id"]) for row in env.audit()]
    assert actions == [("test", "user_added", "ann"), ("test", "token_created", "qms"),
                       ("test", "token_revoked", "qms"), ("test", "user_removed", "ann")]
    stored = env.store.reader().execute("SELECT secret_hash FROM users").fetchone()[0]
    assert stored.startswith("$argon2id$") and PIN not in stored
    assert env.store.reader().execute("SELECT secret_hash FROM api_tokens").fetchone()[0] == digest(secret)
    trail = " ".join(str(tuple(row)) for row in env.audit())
    for leaked in (PIN, secret, digest(secret), stored):
        assert leaked not in trail
    (token,) = env.run(list_tokens)
    assert token.state() == "revoked" and token.scopes == ("qms:read",)


# -- bearer tokens over HTTP --------------------------------------------------------------------------------

def test_anonymous_on_loopback_reads_and_judges_but_changes_nothing(env: Env) -> None:
    assert env.http.get("/api/v1/things").json() == {"actor": "anonymous@loopback"}
    assert env.http.post("/api/v1/verdicts/vision").status_code == 200
    refused = env.http.post("/api/v1/things")
    assert refused.status_code == 401 and refused.headers["www-authenticate"] == "Bearer"
    assert refused.json()["error"]["code"] == "not_authenticated" and "operator" in refused.json()["error"]["message"]


def test_tokens_grant_their_scopes_and_nothing_else(env: Env) -> None:
    aoi = env.token("aoi-1", "aoi:verdict")
    operator = env.token("line-lead", "operator")
    assert env.http.post("/api/v1/verdicts/vision", headers=bearer(aoi)).status_code == 200
    forbidden = env.http.post("/api/v1/things", headers=bearer(aoi))
    assert forbidden.status_code == 403
    error = forbidden.json()["error"]
    assert error["code"] == "forbidden" and "'operator'" in error["message"] and "token:aoi-1" in error["message"]
    assert error["details"]["required_scope"] == "operator"
    assert env.http.post("/api/v1/things", headers=bearer(operator)).json() == {"actor": "token:line-lead"}
    assert env.http.get("/api/v1/things", headers=bearer(operator)).status_code == 200  # operator implies qms:read
    assert env.http.post("/api/v1/models/promote", headers=bearer(operator)).status_code == 403


def test_unknown_expired_revoked_and_malformed_credentials_are_401(env: Env) -> None:
    past = env.token("auditor", "qms:read", expires_at=datetime.now(UTC) - timedelta(minutes=1))
    short = env.token("visitor", "qms:read", expires_in=timedelta(minutes=30))
    revoked = env.token("old", "operator")
    env.run(lambda conn: revoke_token(conn, "test", "old"))
    assert env.http.get("/api/v1/things", headers=bearer(short)).status_code == 200
    cases = [(bearer(past), "token_expired"), (bearer(revoked), "token_revoked"),
             (bearer("ei_" + "A" * 43), "token_invalid"), ({"Authorization": "Basic YTpi"}, "bad_credential")]
    for headers, code in cases:
        # a credential that does not hold is refused even where anonymous callers may read
        response = env.http.get("/api/v1/things", headers=headers)
        assert response.status_code == 401, code
        assert response.json()["error"]["code"] == code and response.headers["www-authenticate"] == "Bearer"


def test_beyond_loopback_anonymous_callers_get_nothing(tmp_path: Path) -> None:
    for env in make_env(tmp_path, host="0.0.0.0"):
        response = env.http.get("/api/v1/things")
        assert response.status_code == 401 and response.json()["error"]["code"] == "not_authenticated"
        assert env.access.anonymous.actor == "anonymous" and not env.access.anonymous.scopes


# -- sessions and CSRF --------------------------------------------------------------------------------------

def test_login_session_cookie_csrf_and_logout(env: Env) -> None:
    env.user("olga", "operator")
    response = login(env, "olga")
    assert response.status_code == 200
    body = response.json()
    assert body["user"] == "olga" and body["role"] == "operator" and "qms:read" in body["scopes"]
    assert body["csrf_token"] and body["expires_at"]
    cookie_header = response.headers["set-cookie"].lower()
    for attribute in ("httponly", "samesite=strict", "path=/"):
        assert attribute in cookie_header
    assert "secure" not in cookie_header  # plain http on loopback; https gets Secure
    csrf = {CSRF_HEADER: body["csrf_token"]}

    whoami = env.http.get("/api/v1/session").json()
    assert whoami["actor"] == "user:olga" and whoami["csrf_token"] == body["csrf_token"]
    assert env.http.get("/api/v1/things").json() == {"actor": "user:olga"}
    missing = env.http.post("/api/v1/things")
    assert missing.status_code == 403 and missing.json()["error"]["code"] == "csrf_failed"
    wrong = env.http.post("/api/v1/things", headers={CSRF_HEADER: "x" * 64})
    assert wrong.status_code == 403 and wrong.json()["error"]["code"] == "csrf_failed"
    assert env.http.post("/api/v1/things", headers=csrf).json() == {"actor": "user:olga"}
    assert env.http.post("/api/v1/models/promote", headers=csrf).status_code == 403  # operator role only

    old_cookie = env.http.cookies[SESSION_COOKIE]
    assert env.http.delete("/api/v1/session", headers=csrf).status_code == 204
    assert SESSION_COOKIE not in env.http.cookies
    replayed = env.http.post("/api/v1/things", headers={**csrf, "cookie": f"{SESSION_COOKIE}={old_cookie}"})
    assert replayed.status_code == 401 and replayed.json()["error"]["code"] == "session_invalid"
    # the old CSRF token with a new session is refused too
    assert login(env, "olga").status_code == 200
    assert env.http.post("/api/v1/things", headers=csrf).json()["error"]["code"] == "csrf_failed"
    assert [r["action"] for r in env.audit()][-3:] == ["login", "logout", "login"]


def test_bearer_requests_need_no_csrf_and_win_over_a_cookie(env: Env) -> None:
    env.user("olga", "operator")
    assert login(env, "olga").status_code == 200
    token = env.token("aoi", "aoi:verdict")
    assert env.http.post("/api/v1/verdicts/vision", headers=bearer(token)).status_code == 200
    assert env.http.get("/api/v1/session", headers=bearer(token)).json()["actor"] == "token:aoi"


def test_forged_cookie_and_removed_user_are_refused(env: Env) -> None:
    forged = env.http.get("/api/v1/things", headers={"cookie": f"{SESSION_COOKIE}=forged-cookie-value"})
    assert forged.status_code == 401 and forged.json()["error"]["code"] == "session_invalid"
    env.user("olga", "operator")
    assert login(env, "olga").status_code == 200
    env.run(lambda conn: remove_user(conn, "admin-test", "olga"))
    assert env.http.get("/api/v1/things").json()["error"]["code"] == "session_invalid"


def test_wrong_pin_and_unknown_user_both_run_argon2_and_say_the_same(env: Env) -> None:
    env.user("olga", "operator")
    before = env.access.hasher.verifications
    wrong = login(env, "olga", "0000")
    unknown = login(env, "nobody", PIN)
    assert wrong.status_code == unknown.status_code == 401
    assert wrong.json()["error"] == unknown.json()["error"]
    assert env.access.hasher.verifications == before + 2  # the unknown user is checked against a dummy hash
    malformed = env.http.post("/api/v1/session", json={"user": "olga", "pin": PIN, "extra": 1})
    assert malformed.status_code == 422


def test_pins_are_rehashed_when_the_parameters_change(env: Env) -> None:
    old = PinHasher(HashParameters(time_cost=1, memory_kib=2048, parallelism=1))
    old_hash = old.hash(PIN)
    env.run(lambda conn: add_user(conn, "test", "olga", "operator", old_hash))
    before = env.store.reader().execute("SELECT secret_hash FROM users").fetchone()[0]
    assert login(env, "olga").status_code == 200
    after = env.store.reader().execute("SELECT secret_hash FROM users").fetchone()[0]
    assert after != before and "m=1024" in after
    assert '"pin_rehashed":true' in env.audit()[-1]["details"]


# -- throttling -----------------------------------------------------------------------------------------

def test_failed_logins_are_throttled_without_hashing(tmp_path: Path) -> None:
    for env in make_env(tmp_path, login_lockout_s=2.0):
        env.user("olga", "operator")
        for _ in range(5):
            assert login(env, "olga", "0000").status_code == 401
        verifications = env.access.hasher.verifications
        started = time.perf_counter()
        flood = 0
        while flood < 500 and time.perf_counter() - started < 1.5:  # a flood while locked: argon2 never runs
            throttled = login(env, "olga", "0000")
            assert throttled.status_code == 429
            flood += 1
        assert flood >= 50 and env.access.hasher.verifications == verifications
        assert int(throttled.headers["retry-after"]) >= 1
        assert throttled.json()["error"]["code"] == "login_throttled"
        assert login(env, "olga").status_code == 429  # even the right PIN waits
        lockouts = [r for r in env.audit() if r["action"] == "login_locked"]
        assert len(lockouts) == 1 and "olga" in lockouts[0]["details"]  # one record per lockout, not per failure
        time.sleep(env.access.throttle.retry_after("user:olga") + 0.05)
        assert login(env, "olga").status_code == 200  # the lock ran out; success resets
        assert login(env, "olga", "0000").status_code == 401


def test_throttle_backs_off_exponentially_up_to_the_limit() -> None:
    from edge.access.throttle import LoginThrottle

    now = [0.0]
    throttle = LoginThrottle(max_failures=3, base_s=1.0, max_s=5.0, clock=lambda: now[0])
    assert throttle.begin(["k"]) == [] and throttle.begin(["k"]) == []
    assert throttle.begin(["k"]) == ["k"]  # the third failure locks, once
    waits = []
    for _ in range(5):
        waits.append(throttle.retry_after("k"))
        now[0] += waits[-1]
        throttle.begin(["k"])
    assert waits == [1.0, 2.0, 4.0, 5.0, 5.0]
    throttle.succeeded(["k"])
    assert throttle.retry_after("k") == 0.0


# -- Host and cross-site checks ------------------------------------------------------------------------

def test_foreign_host_header_is_refused(tmp_path: Path) -> None:
    for env in make_env(tmp_path, allowed_hosts=["station-7.plant.example"]):
        for host in ("evil.example", "evil.example:8080", "127.0.0.1.evil.example", "", "a b"):
            refused = env.http.get("/api/v1/things", headers={"host": host})
            assert refused.status_code == 421, host
            assert refused.json()["error"]["code"] == "host_not_allowed"
        for host in ("127.0.0.1:8080", "localhost", "[::1]:8080", "10.1.2.3", "Station-7.plant.example:80"):
            assert env.http.get("/api/v1/things", headers={"host": host}).status_code == 200, host


def test_cross_site_posts_are_refused_even_where_anonymous_may_judge(env: Env) -> None:
    files = {"image": ("a.jpg", b"\xff\xd8 not really", "image/jpeg")}
    for headers in ({"origin": "http://evil.example"}, {"origin": "http://127.0.0.1:9999"}, {"origin": "null"},
                    {"sec-fetch-site": "cross-site"}):
        refused = env.http.post("/api/v1/verdicts/vision", files=files, headers=headers)
        assert refused.status_code == 403 and refused.json()["error"]["code"] == "cross_site_request", headers
    same = {"origin": "http://127.0.0.1", "sec-fetch-site": "same-origin"}
    assert env.http.post("/api/v1/verdicts/vision", files=files, headers=same).status_code == 200
    assert env.http.get("/api/v1/things", headers={"origin": "http://evil.example"}).status_code == 200
    env.user("olga", "operator")
    assert env.http.post("/api/v1/session", json={"user": "olga", "pin": PIN},
                         headers={"origin": "http://evil.example"}).status_code == 403  # no login CSRF


async def promote_stub() -> None:
    return None


# -- OpenAPI ----------------------------------------------------------------------------------------------

def test_openapi_shows_security_schemes_and_each_routes_scope(env: Env) -> None:
    schema = env.http.get("/openapi.json").json()
    assert set(schema["components"]["securitySchemes"]) == {"bearer", "session"}
    operation = schema["paths"]["/api/v1/things"]["post"]
    assert operation["x-required-scope"] == "operator" and "Requires scope `operator`" in operation["description"]
    assert schema["paths"]["/api/v1/models/promote"]["post"]["x-required-scope"] == "maintenance"
    assert operation["security"] == [{"bearer": ["operator"]}, {"session": ["operator"]}]
    app = env.http.app
    assert isinstance(app, FastAPI)
    scopes = operation_scopes(app)
    assert scopes[("GET", "/api/v1/things")] == "qms:read" and scopes[("GET", "/api/v1/session")] is None
    unscoped = {key for key, scope in scopes.items() if key[0] in ("POST", "PUT", "PATCH", "DELETE") and scope is None}
    assert unscoped == set(UNSCOPED_ROUTES)
    router = APIRouter()
    router.add_api_route("/x", promote_stub, methods=["POST"], dependencies=[Depends(env.access.requires(MAINTENANCE))])
    assert declared_scope(router.routes[0]) == "maintenance"


# -- secrets never logged ----------------------------------------------------------------------------------

def test_secrets_never_reach_the_log(env: Env, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    env.user("olga", "operator")
    token = env.token("aoi", "aoi:verdict")
    env.http.post("/api/v1/verdicts/vision", headers=bearer(token))
    for _ in range(6):
        login(env, "olga", "wrong-pin-9")
    time.sleep(0.6)
    body = login(env, "olga").json()
    cookie = env.http.cookies[SESSION_COOKIE]
    env.http.delete("/api/v1/session", headers={CSRF_HEADER: body["csrf_token"]})
    secrets = [PIN, "wrong-pin-9", token, digest(token), cookie, digest(cookie), body["csrf_token"]]
    trail = " ".join(str(tuple(row)) for row in env.audit())
    assert "login_locked" in trail and "logout" in trail
    for secret in secrets:
        assert secret not in caplog.text and secret not in trail


# -- secure by default -------------------------------------------------------------------------------------

def test_startup_refuses_beyond_loopback_until_an_admin_exists(tmp_path: Path) -> None:
    config = StationConfig.model_validate({"api": {"host": "0.0.0.0"}, "access": {"password_hash": FAST_HASH}})
    hasher = PinHasher(HashParameters(1, 1024, 1))
    with open_database(tmp_path / "verdicts.db") as conn:
        with pytest.raises(AccessConfigError) as refused:
            check_startup(config, conn, config_path="/etc/edge/station.yaml")
        message = str(refused.value)
        assert "0.0.0.0" in message and "no admin" in message
        assert "edge-inspect users add NAME --role admin --config /etc/edge/station.yaml" in message
        with pytest.raises(AccessConfigError):  # a run --host beyond loopback counts, whatever the file says
            check_startup(StationConfig(), conn, host="192.168.1.20")
        assert "without credentials" in check_startup(StationConfig(), conn)[0]  # loopback: open, and says so
        in_transaction(conn, lambda c: create_token(c, "test", "ops", ["admin"],
                                                    expires_at=datetime.now(UTC) - timedelta(hours=1)))
        with pytest.raises(AccessConfigError):  # an expired admin token administers nothing
            check_startup(config, conn)
        in_transaction(conn, lambda c: add_user(c, "test", "root", "admin", hasher.hash(PIN)))
        (line,) = check_startup(config, conn)
        assert "every request needs a token or a session" in line
