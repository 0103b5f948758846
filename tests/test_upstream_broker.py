"""A real Mosquitto for the upstream tests and the fleet benchmark (started on a free loopback port with a
config file of its own, stopped by its pid), a broker that stalls, and the broker URL's own checks."""

from __future__ import annotations

import contextlib
import getpass
import os
import shutil
import signal
import socket
import subprocess
import tempfile
import threading
import time
from pathlib import Path

import pytest

from edge.config import redact_url
from edge.upstream.topics import BrokerUrl, BrokerUrlError, station_prefix

MOSQUITTO = shutil.which("mosquitto") or ("/usr/sbin/mosquitto" if Path("/usr/sbin/mosquitto").exists() else None)
needs_mosquitto = pytest.mark.skipif(MOSQUITTO is None, reason="mosquitto is not installed "
                                     "(scripts/install-system-deps.sh installs it)")


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class Mosquitto:
    """One broker process on 127.0.0.1:port; ``persistence`` keeps sessions and queues across restarts."""

    def __init__(self, folder: Path, port: int | None = None, persistence: bool = True) -> None:
        assert MOSQUITTO is not None
        self.folder = folder
        self.port = port or free_port()
        self.url = f"mqtt://127.0.0.1:{self.port}"
        folder.mkdir(parents=True, exist_ok=True)
        # started as root, mosquitto drops to the user "mosquitto", who cannot write a test's folder
        lines = [f"listener {self.port} 127.0.0.1", "allow_anonymous true", "max_queued_messages 0",
                 "max_inflight_messages 0", f"user {getpass.getuser()}"]
        if persistence:
            lines += ["persistence true", f"persistence_location {folder}/"]
        self.config = folder / "mosquitto.conf"
        self.config.write_text("\n".join(lines) + "\n", encoding="utf-8")
        self.process: subprocess.Popen[bytes] | None = None

    def start(self, timeout_s: float = 10.0) -> Mosquitto:
        log = (self.folder / "mosquitto.log").open("ab")
        self.process = subprocess.Popen([str(MOSQUITTO), "-c", str(self.config)], stdout=log, stderr=log)
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"mosquitto exited: {(self.folder / 'mosquitto.log').read_text()}")
            with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", self.port), 0.2):
                return self
            time.sleep(0.05)
        raise RuntimeError("mosquitto did not open its port")

    def stop(self, sig: int = signal.SIGTERM) -> None:
        """SIGTERM: mosquitto saves its persistence file and ends; SIGKILL: a crash."""
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(sig)
            try:
                self.process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(timeout=10)
        self.process = None


class StallingBroker:
    """A TCP server that accepts connections and then never answers (``connack=False``), or answers CONNECT
    with a CONNACK and then ignores everything (``connack=True``): a broker that hangs."""

    def __init__(self, connack: bool) -> None:
        self.connack = connack
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(16)
        self.port = int(self.sock.getsockname()[1])
        self.url = f"mqtt://127.0.0.1:{self.port}"
        self.connections = 0
        self._peers: list[socket.socket] = []
        self._stop = False
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while not self._stop:
            try:
                peer, _ = self.sock.accept()
            except OSError:
                return
            self.connections += 1
            self._peers.append(peer)
            threading.Thread(target=self._serve, args=(peer,), daemon=True).start()

    def _serve(self, peer: socket.socket) -> None:
        with contextlib.suppress(OSError):
            if self.connack and peer.recv(65536):
                peer.sendall(b"\x20\x02\x00\x00")  # CONNACK: session not present, accepted
            while peer.recv(65536):
                pass  # swallow PUBLISH, PINGREQ, ... and never answer

    def close(self) -> None:
        self._stop = True
        self.sock.close()
        for peer in self._peers:
            with contextlib.suppress(OSError):
                peer.close()


def test_broker_url_parsing_and_redaction() -> None:
    url = BrokerUrl.parse("mqtt://qms:s3cret@broker.plant:1884")
    assert (url.host, url.port, url.username, url.password, url.tls) == ("broker.plant", 1884, "qms", "s3cret", False)
    assert "s3cret" not in str(url)
    assert BrokerUrl.parse("mqtts://broker").port == 8883
    assert BrokerUrl.parse("mqtt://127.0.0.1").port == 1883
    for bad in ("http://x:1", "mqtt://:1883", "mqtt://h:99999", "mqtt://h:1/topic"):
        with pytest.raises(BrokerUrlError) as error:
            BrokerUrl.parse(bad.replace("h:", "u:pw@h:"))
        assert "pw" not in str(error.value)
    assert redact_url("mqtt://u:pw@h:1") == "mqtt://u:***@h:1"


def test_topic_prefix_default_and_site_line() -> None:
    assert station_prefix("st-1") == "edge-inspect/st-1"
    assert station_prefix("st-1", site="plant-a", line="l3") == "edge-inspect/plant-a/l3/st-1"


PG_BIN = next(iter(sorted(Path("/usr/lib/postgresql").glob("*/bin"))), None) if Path("/usr/lib/postgresql").exists() \
    else None


class Postgres:
    """A throw-away PostgreSQL cluster on a free loopback port (as the ``postgres`` user when run as root)."""

    def __init__(self) -> None:
        assert PG_BIN is not None
        # a folder of its own: the postgres user cannot enter pytest's (root's, mode 700)
        self.folder = Path(tempfile.mkdtemp(prefix="edge-inspect-pg-"))
        self.port = free_port()
        self.url = f"postgresql://postgres@127.0.0.1:{self.port}/postgres"
        self._as = ["runuser", "-u", "postgres", "--"] if os.geteuid() == 0 else []
        if self._as:
            shutil.chown(self.folder, "postgres")

    def _run(self, *args: str) -> None:
        subprocess.run([*self._as, *args], check=True, capture_output=True, timeout=60)

    def start(self) -> Postgres:
        self._run(str(PG_BIN / "initdb"), "-D", str(self.folder / "data"), "-A", "trust", "-U", "postgres")
        self._run(str(PG_BIN / "pg_ctl"), "-D", str(self.folder / "data"), "-w", "-l", str(self.folder / "log"),
                  "-o", f"-p {self.port} -k {self.folder} -c listen_addresses=127.0.0.1", "start")
        return self

    def stop(self) -> None:
        try:
            self._run(str(PG_BIN / "pg_ctl"), "-D", str(self.folder / "data"), "-m", "fast", "-w", "stop")
        finally:
            shutil.rmtree(self.folder, ignore_errors=True)
