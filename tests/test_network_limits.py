"""Network exposure of the real service (``edge-inspect run`` on loopback): slow clients cut off, a
connection cap, request size and rate limits, TLS, and stored files never named by a client."""

from __future__ import annotations

import asyncio
import datetime
import json
import re
import socket
import ssl
import subprocess
import time
from pathlib import Path

import httpx
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID
from starlette.types import Message, Receive, Scope, Send
from support import EDGE_INSPECT, PROJECT_ROOT, LiveService, free_port, jpeg, write_station_config

from edge.api.limits import RateLimit
from edge.config import ApiSettings
from edge.metrics import StationMetrics

HEALTH = "/api/v1/health"
VISION = "/api/v1/verdicts/vision"


def api(**settings: object) -> dict[str, object]:
    return {"host": "127.0.0.1", "port": 8080, "max_upload_mb": 1, **settings}


def read_all(sock: socket.socket) -> bytes:
    chunks = []
    while chunk := sock.recv(65536):
        chunks.append(chunk)
    return b"".join(chunks)


async def trickle(port: int, request: bytes, every_s: float) -> tuple[float, bytes]:
    """Send ``request`` a byte at a time; the seconds until the server closed the connection, and its answer."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    started = time.monotonic()
    answer = b""
    try:
        for i in range(len(request)):
            writer.write(request[i:i + 1])
            await writer.drain()
            try:
                answer = await asyncio.wait_for(reader.read(65536), every_s)
            except TimeoutError:
                continue
            break  # answered or closed
        if answer:
            answer += await asyncio.wait_for(reader.read(), 5)
    except (ConnectionError, OSError):
        pass
    finally:
        writer.close()
    return time.monotonic() - started, answer


def test_sixty_trickling_clients_are_cut_off_while_a_normal_client_is_served(tmp_path: Path) -> None:
    config = write_station_config(tmp_path, api=api(header_timeout_s=2.0, body_timeout_s=3.0))
    service = LiveService(config, free_port()).start()
    head = b"GET /api/v1/health HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Padding: " + b"a" * 200 + b"\r\n\r\n"
    body_head = (b"POST /api/v1/verdicts/vision HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: image/jpeg\r\n"
                 b"Content-Length: 500\r\n\r\n")

    async def scenario() -> tuple[list[tuple[float, bytes]], tuple[float, bytes], float, list[int]]:
        slow = [asyncio.create_task(trickle(service.port, head, 1.0)) for _ in range(60)]
        slow_body = asyncio.create_task(trickle_body(service.port, body_head))
        blank_lines = asyncio.create_task(trickle_after_a_request(service.port))
        await asyncio.sleep(1.0)
        statuses = []
        async with httpx.AsyncClient(base_url=service.url, timeout=5) as http:
            for _ in range(3):  # served while the 60 are connected
                statuses.append((await http.get(HEALTH)).status_code)
                await asyncio.sleep(0.2)
        return await asyncio.gather(*slow), await slow_body, await blank_lines, statuses

    try:
        cut, body_cut, blank_cut, statuses = asyncio.run(scenario())
        assert statuses == [200, 200, 200]
        for seconds, answer in cut:
            assert 1.5 <= seconds <= 4.5, seconds  # api.header_timeout_s 2 s, not the minute before
            assert answer.startswith(b"HTTP/1.1 408 ")
            assert json.loads(answer.split(b"\r\n\r\n", 1)[1])["error"]["code"] == "request_timeout"
        seconds, answer = body_cut
        assert 2.5 <= seconds <= 5.5 and answer.startswith(b"HTTP/1.1 408 "), (seconds, answer[:80])
        assert blank_cut <= 4.5, blank_cut  # blank lines after a request keep no connection open
        assert httpx.get(service.url + HEALTH).status_code == 200
    finally:
        service.stop()


async def trickle_body(port: int, head: bytes) -> tuple[float, bytes]:
    """Send a request head at once, then its body a byte a second."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(head)
    await writer.drain()
    started = time.monotonic()
    try:
        while True:
            writer.write(b"x")
            await writer.drain()
            try:
                answer = await asyncio.wait_for(reader.read(65536), 1.0)
            except TimeoutError:
                continue
            return time.monotonic() - started, answer
    except (ConnectionError, OSError):
        return time.monotonic() - started, b""
    finally:
        writer.close()


async def trickle_after_a_request(port: int) -> float:
    """One normal request on a kept-alive connection, then a blank line every half second; the seconds
    from the first blank line until the server closed the connection."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(b"GET /api/v1/health HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
    await writer.drain()
    answer = await asyncio.wait_for(reader.read(65536), 5)
    assert answer.startswith(b"HTTP/1.1 200 ")
    started = time.monotonic()
    try:
        while time.monotonic() - started < 30:
            writer.write(b"\r\n")
            await writer.drain()
            try:
                if not await asyncio.wait_for(reader.read(65536), 0.5):
                    break  # closed
            except TimeoutError:
                continue
    except (ConnectionError, OSError):
        pass
    finally:
        writer.close()
    return time.monotonic() - started


def test_connection_cap_refuses_extra_connections_until_others_close(tmp_path: Path) -> None:
    config = write_station_config(tmp_path, api=api(max_connections=5))
    service = LiveService(config, free_port()).start()
    idle = [socket.create_connection(("127.0.0.1", service.port)) for _ in range(5)]
    try:
        time.sleep(0.3)
        with socket.create_connection(("127.0.0.1", service.port), timeout=5) as extra:
            answer = read_all(extra)
        assert answer.startswith(b"HTTP/1.1 503 ") and b"retry-after: 1" in answer
        assert b"api.max_connections" in answer
        for sock in idle:
            sock.close()
        time.sleep(0.3)
        assert httpx.get(service.url + HEALTH, timeout=5).status_code == 200
    finally:
        for sock in idle:
            sock.close()
        service.stop()


def test_oversized_bodies_are_refused_before_being_read(tmp_path: Path) -> None:
    config = write_station_config(tmp_path)  # api.max_upload_mb 1
    service = LiveService(config, free_port()).start()
    try:
        for path in (VISION, "/api/v1/batches"):  # an upload route and a JSON route
            with socket.create_connection(("127.0.0.1", service.port), timeout=5) as sock:
                sock.sendall(f"POST {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: image/jpeg\r\n"
                             f"Content-Length: {50 * 1024 * 1024}\r\n\r\n".encode())
                answer = read_all(sock)  # nothing of the 50 MB body was sent
            assert answer.startswith(b"HTTP/1.1 413 "), answer[:200]
            assert json.loads(answer.split(b"\r\n\r\n", 1)[1])["error"]["code"] == "too_large"

        def chunks() -> object:
            for _ in range(40):
                yield b"x" * 65536  # 2.5 MB without a declared length

        with httpx.Client(base_url=service.url, timeout=10) as http:
            refused = http.post("/api/v1/batches", content=chunks(), headers={"content-type": "application/json"})
            assert refused.status_code == 413 and refused.json()["error"]["code"] == "too_large"
            assert http.get(HEALTH).status_code == 200
    finally:
        service.stop()


def test_rate_limit_answers_429_with_retry_after(tmp_path: Path) -> None:
    config = write_station_config(tmp_path, api=api(rate_limit_per_s=2, rate_limit_burst=5))
    service = LiveService(config, free_port()).start()
    try:
        with httpx.Client(base_url=service.url, timeout=5) as http:
            answers = [http.get(HEALTH) for _ in range(12)]
            refused = [a for a in answers if a.status_code == 429]
            assert len(refused) >= 5 and all(a.status_code == 200 for a in answers[:4])
            assert int(refused[0].headers["retry-after"]) >= 1
            assert refused[0].json()["error"]["code"] == "rate_limited"
            time.sleep(1.2)  # two tokens back
            assert http.get(HEALTH).status_code == 200
    finally:
        service.stop()


def test_default_rate_limit_never_slows_a_fast_aoi_station() -> None:
    """60 s of an AOI posting 4 requests per part at 30 parts/s, on a simulated clock: nothing refused."""
    settings = ApiSettings()
    now = [0.0]
    answered: list[int] = []

    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        answered.append(200)

    async def receive() -> Message:
        return {"type": "http.request", "body": b""}

    async def send(message: Message) -> None:
        if message["type"] == "http.response.start":
            answered.append(message["status"])

    limit = RateLimit(app, settings.rate_limit_per_s, settings.rate_limit_burst, StationMetrics(),
                      clock=lambda: now[0])
    scope: Scope = {"type": "http", "client": ("10.0.0.7", 5000), "headers": [], "method": "POST"}

    async def station() -> None:
        for _ in range(60 * 120):
            await limit(scope, receive, send)
            now[0] += 1 / 120

    asyncio.run(station())
    assert answered == [200] * (60 * 120)


def self_signed(folder: Path) -> tuple[Path, Path]:
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "localhost")])
    now = datetime.datetime.now(datetime.UTC)
    certificate = (x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(key.public_key())
                   .serial_number(x509.random_serial_number()).not_valid_before(now - datetime.timedelta(days=1))
                   .not_valid_after(now + datetime.timedelta(days=30))
                   .add_extension(x509.SubjectAlternativeName([x509.DNSName("localhost")]), critical=False)
                   .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
                   .sign(key, hashes.SHA256()))
    cert_path, key_path = folder / "station.crt", folder / "station.key"
    cert_path.write_bytes(certificate.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                           serialization.NoEncryption()))
    return cert_path, key_path


def test_tls_serves_https_only_when_configured(tmp_path: Path) -> None:
    cert, key = self_signed(tmp_path)
    config = write_station_config(tmp_path, api=api(tls_certificate=cert.name, tls_key=key.name))
    port = free_port()
    log = tmp_path / "tls.log"
    with log.open("wb") as out:
        process = subprocess.Popen([*EDGE_INSPECT, "run", "--config", str(config), "--port", str(port)],
                                   stdout=out, stderr=subprocess.STDOUT, cwd=PROJECT_ROOT)
    try:
        context = ssl.create_default_context(cafile=str(cert))
        deadline, answer = time.monotonic() + 30, None
        while time.monotonic() < deadline and answer is None:
            assert process.poll() is None, log.read_text()
            try:
                answer = httpx.get(f"https://localhost:{port}{HEALTH}", verify=context, timeout=2)
            except httpx.HTTPError:
                time.sleep(0.2)
        assert answer is not None and answer.status_code == 200, log.read_text()
        assert answer.json()["status"] == "ready"
        try:  # plain HTTP on the TLS port gets no API answer
            plain = httpx.get(f"http://127.0.0.1:{port}{HEALTH}", timeout=3).status_code
        except httpx.HTTPError:
            plain = None
        assert plain != 200
    finally:
        process.terminate()
        process.wait(15)


def test_unreadable_or_mismatched_tls_files_stop_startup_with_a_clear_message(tmp_path: Path) -> None:
    cert, _ = self_signed(tmp_path)
    cases = [("missing.key", "cannot read the TLS key"), (cert.name, "cannot be used together")]
    for key_name, message in cases:
        config = write_station_config(tmp_path, api=api(tls_certificate=cert.name, tls_key=key_name))
        done = subprocess.run([*EDGE_INSPECT, "run", "--config", str(config), "--port", str(free_port())],
                              capture_output=True, text=True, cwd=PROJECT_ROOT, timeout=60)
        assert done.returncode != 0
        assert message in done.stderr and key_name in done.stderr, done.stderr
        checked = subprocess.run([*EDGE_INSPECT, "config", "check", "--json", "--config", str(config)],
                                 capture_output=True, text=True, cwd=PROJECT_ROOT, timeout=60)
        report = json.loads(checked.stdout)
        assert checked.returncode == 2 and not report["ok"] and message in " ".join(report["problems"])
    config = write_station_config(tmp_path, api=api(tls_certificate=cert.name))
    done = subprocess.run([*EDGE_INSPECT, "config", "check", "--config", str(config)], capture_output=True,
                          text=True, cwd=PROJECT_ROOT, timeout=60)
    assert done.returncode != 0 and "tls_certificate and tls_key go together" in done.stderr + done.stdout


def test_uploaded_files_are_never_named_by_the_client(tmp_path: Path) -> None:
    config = write_station_config(tmp_path)
    raw = config.read_text().replace("save_images: ng", "save_images: all")
    config.write_text(raw)
    service = LiveService(config, free_port()).start()
    try:
        with httpx.Client(base_url=service.url, timeout=10) as http:
            for name in ("../../../evil.jpg", "/tmp/evil-abs.jpg", "evil\x00.png", "..\\evil-win.jpg"):
                answer = http.post(VISION, files={"image": (name, jpeg(), "image/jpeg")}, data={"serial": "S1"})
                assert answer.status_code == 200, answer.text
            refs = [item["image_ref"] for item in http.get("/api/v1/verdicts?limit=100").json()["items"]]
    finally:
        service.stop()
    assert len(refs) == 4
    assert all(re.fullmatch(r"images/\d{4}-\d{2}-\d{2}/[0-9a-f]{32}\.jpg", ref) for ref in refs), refs
    written = [p.name for p in tmp_path.rglob("*evil*")] + [p.name for p in Path("/tmp").glob("evil*")]
    assert written == []
