"""Crash safety under fault injection: the real service (`edge-inspect run`) killed with SIGKILL at random
points under load, and power cuts simulated on copies of its database files taken mid-write.

Every random choice comes from one seed, printed at the start of each test (and named in every failure);
rerun a failure with ``EDGE_FAULT_SEED=<seed>``.

The power-cut model. The store runs SQLite in WAL mode with ``synchronous=FULL``: a commit appends its
pages to the WAL and fsyncs it before the commit returns, and a verdict is answered only after that
(edge.store.writer). The database file itself is written only by checkpoints, which copy pages already
synced in the WAL, and the WAL restarts from its beginning (new salts) only after the database file is
synced. So after a power cut the disk holds: the WAL up to at least the last acknowledged commit, then
possibly a torn tail (frames written but not synced: cut short, or sectors of garbage), and a database
file that may hold some pages of an unfinished checkpoint (pages whose images are still in the WAL).
The -shm file is never synced; SQLite rebuilds it when the first connection opens the database.

The copies are taken as a power cut takes them: without the writer's cooperation, at random instants.
The service is frozen (SIGSTOP) for the instant of the copy, as the disk is frozen by the cut; an unfrozen
copy of the WAL and then the database file can mix a checkpoint's later pages with an earlier WAL, a
state no power cut produces (the files on disk are ordered by the fsyncs), so it would test nothing
SQLite promises. From each copy the test also derives the other states a cut may leave: the WAL torn at
a random byte after the frames the acknowledged verdicts need and the frames a checkpoint has used (cut
short, or the rest overwritten with garbage), and an unfinished checkpoint (a random subset of pages
copied from the kept WAL into the file).
Each must open, pass ``PRAGMA integrity_check`` and ``audit verify``, and hold every verdict acknowledged
before the copy began, with its decision. That the WAL was synced before an answer, which copies cannot show,
is watched on the running service with strace. Whether the disk honours an fsync is beyond these tests.
"""

from __future__ import annotations

import json
import os
import random
import shutil
import signal
import sqlite3
import struct
import subprocess
import threading
import time
from collections.abc import Callable
from pathlib import Path

import cv2
import httpx
import numpy as np
import pytest
from support import EDGE_INSPECT, PROJECT_ROOT, LiveService, cli_token, free_port, jpeg, write_station_config

from edge.config import load_config
from edge.store import signing
from edge.store.signing import StationKey

VISION = "/api/v1/verdicts/vision"
WAL_HEADER = 32
FRAME_HEADER = 24


def seeded(name: str) -> tuple[random.Random, int]:
    seed = int(os.environ.get("EDGE_FAULT_SEED") or random.SystemRandom().randrange(2**32))
    print(f"{name}: EDGE_FAULT_SEED={seed}")
    return random.Random(seed), seed


class Load:
    """AOI clients posting images over HTTP; every verdict the service acknowledged, with its decision."""

    def __init__(self, headers: dict[str, str], clients: int = 3) -> None:
        self.headers = headers
        self.clients = clients
        self.acknowledged: dict[int, str] = {}
        self.lock = threading.Lock()
        self.images = [jpeg(spot=i % 3 == 0, seed=i) for i in range(6)]
        self._rounds = 0

    def run(self, url: str) -> Callable[[], None]:
        """Start the clients against ``url``; the returned function stops them and waits for them."""
        stop = threading.Event()
        self._rounds += 1
        threads = [threading.Thread(target=self._client, args=(url, stop, f"R{self._rounds}C{c}"))
                   for c in range(self.clients)]
        for thread in threads:
            thread.start()

        def finish() -> None:
            stop.set()
            for thread in threads:
                thread.join(15)

        return finish

    def snapshot(self) -> dict[int, str]:
        with self.lock:
            return dict(self.acknowledged)

    def _client(self, url: str, stop: threading.Event, name: str) -> None:
        with httpx.Client(base_url=url, timeout=10, headers=self.headers) as http:
            n = 0
            while not stop.is_set():
                try:
                    response = http.post(VISION, content=self.images[n % 6], params={"serial": f"{name}-{n}"},
                                         headers={"content-type": "image/jpeg"})
                except httpx.HTTPError:
                    return  # the service died mid-request: that verdict was never acknowledged
                if response.status_code == 200:
                    body = response.json()
                    with self.lock:
                        self.acknowledged[body["id"]] = body["decision"]
                n += 1


def missing(db: Path, acknowledged: dict[int, str]) -> dict[int, tuple[str, str | None]]:
    """Acknowledged verdicts absent from ``db`` or stored with another decision."""
    conn = sqlite3.connect(db)
    try:
        stored = dict(conn.execute("SELECT id, decision FROM verdicts").fetchall())
    finally:
        conn.close()
    return {i: (d, stored.get(i)) for i, d in acknowledged.items() if stored.get(i) != d}


def broken_images(config: Path, acknowledged: dict[int, str]) -> tuple[int, list[str]]:
    """(how many acknowledged verdicts kept an image, those images missing or not decoding): an answer waits
    for its image to be written. An OK part's image is only held in memory (save_images: ng): a kill loses it."""
    settings = load_config(config)
    conn = sqlite3.connect(settings.database_path)
    try:
        rows = conn.execute("SELECT id, image_ref FROM verdicts WHERE image_ref IS NOT NULL AND decision != 'OK'"
                            ).fetchall()
    finally:
        conn.close()
    refs = [ref for verdict_id, ref in rows if verdict_id in acknowledged]
    broken = []
    for ref in refs:
        path = settings.data_dir / ref
        if not path.is_file() or cv2.imdecode(np.frombuffer(path.read_bytes(), np.uint8), cv2.IMREAD_UNCHANGED) is None:
            broken.append(ref)
    return len(refs), broken


def integrity(db: Path) -> str:
    conn = sqlite3.connect(db)
    try:
        return str(conn.execute("PRAGMA integrity_check").fetchone()[0])
    finally:
        conn.close()


def audit_verify(config: Path) -> tuple[int, dict[str, object]]:
    done = subprocess.run([*EDGE_INSPECT, "audit", "verify", "--json", "--config", str(config)],
                          capture_output=True, text=True, cwd=PROJECT_ROOT, timeout=120)
    return done.returncode, json.loads(done.stdout) if done.stdout.strip() else {"stderr": done.stderr}


@pytest.mark.slow
def test_acknowledged_verdicts_survive_random_sigkills_under_load(tmp_path: Path) -> None:
    """Five rounds: start, load from three AOI clients, SIGKILL at a random instant (some just after the
    start), restart. Every start must succeed, and at the end every acknowledged verdict is present with
    its decision and its kept image whole, the database passes its integrity check and both chains verify."""
    rng, seed = seeded("sigkill")
    config = write_station_config(tmp_path)
    load = Load(cli_token(config, "aoi-1", "aoi:verdict"))
    for round_ in range(5):
        service = LiveService(config, free_port()).start(timeout_s=60)
        finish = load.run(service.url)
        time.sleep(rng.uniform(0.0, 0.3) if round_ == 1 else rng.uniform(0.5, 2.5))
        service.kill()  # SIGKILL: no shutdown hook runs
        finish()
    acknowledged = load.snapshot()
    assert len(acknowledged) > 20, f"seed {seed}: the load should have produced verdicts"
    db = load_config(config).database_path
    assert integrity(db) == "ok", f"seed {seed}"
    assert not missing(db, acknowledged), f"seed {seed}: acknowledged verdicts lost or changed"
    kept, broken = broken_images(config, acknowledged)
    assert kept > 0 and not broken, f"seed {seed}: {len(broken)} of {kept} kept images of acknowledged verdicts broken"
    code, report = audit_verify(config)
    assert code == 0 and report["intact"] is True, f"seed {seed}: {report}"
    # ... and the station still starts on it and goes on recording.
    service = LiveService(config, free_port()).start(timeout_s=60)
    try:
        answer = httpx.post(f"{service.url}{VISION}", content=load.images[0], headers={
            **load.headers, "content-type": "image/jpeg"}, timeout=10)
        assert answer.status_code == 200, answer.text
    finally:
        service.stop()
    assert audit_verify(config)[0] == 0


# -- power cuts --------------------------------------------------------------------------------------------

def wal_frames(wal: bytes) -> tuple[int, list[tuple[int, int, bool]]]:
    """(page size, [(offset, page number, is commit)]) of the WAL's frames of its current generation, in
    order, up to the first whose salts differ from the header's (an earlier generation, or not a frame)."""
    if len(wal) < WAL_HEADER:
        return 0, []
    page_size = struct.unpack(">I", wal[8:12])[0]
    salts = wal[16:24]
    frames = []
    offset = WAL_HEADER
    while offset + FRAME_HEADER + page_size <= len(wal):
        page, db_size = struct.unpack(">II", wal[offset:offset + 8])
        if wal[offset + 8:offset + 16] != salts:
            break
        frames.append((offset, page, db_size != 0))
        offset += FRAME_HEADER + page_size
    return page_size, frames


def max_verdict_id(folder: Path, db: bytes, wal: bytes) -> int:
    """The largest verdict id SQLite sees in these file contents (opened as after a cut, in ``folder``)."""
    folder.mkdir(parents=True)
    (folder / "probe.db").write_bytes(db)
    (folder / "probe.db-wal").write_bytes(wal)
    conn = sqlite3.connect(folder / "probe.db")
    try:
        return int(conn.execute("SELECT COALESCE(MAX(id), 0) FROM verdicts").fetchone()[0])
    finally:
        conn.close()


def backfilled_end(shm: bytes, page_size: int) -> int:
    """Where the WAL frames end that a checkpoint has copied (or begun to copy) into the database file, from the
    wal-index (-shm): nBackfill and nBackfillAttempted of its checkpoint information, native byte order. Those
    frames were synced before the checkpoint began, so a cut cannot tear them."""
    if len(shm) < 132:
        return WAL_HEADER
    backfill, attempted = struct.unpack("=I", shm[96:100])[0], struct.unpack("=I", shm[128:132])[0]
    return WAL_HEADER + max(backfill, attempted) * (FRAME_HEADER + page_size)


def power_cut_states(rng: random.Random, db: bytes, wal: bytes, shm: bytes, needed_id: int,
                     scratch: Path) -> dict[str, tuple[bytes, bytes]]:
    """The (database, WAL) contents a power cut may leave, given a frozen copy whose acknowledged verdicts go
    up to ``needed_id``: the copy itself, its WAL torn after the frames those verdicts need and the frames a
    checkpoint has used (cut short, or overwritten with garbage), and an unfinished checkpoint of the kept
    part into the database file."""
    page_size, frames = wal_frames(wal)
    ends = [offset + FRAME_HEADER + page_size for offset, _, commit in frames if commit]
    states = {"as copied": (db, wal)}
    if not ends:
        return states
    floor = backfilled_end(shm, page_size)
    # Where the WAL may end after a cut: a commit's end at or after the checkpointed frames (or its header, the
    # database file alone, when nothing was checkpointed) ...
    options = ([WAL_HEADER] if floor <= WAL_HEADER else []) + [end for end in ends if end >= floor]
    # ... and at or after the first that holds every acknowledged verdict: at least that much was synced.
    low, high = 0, len(options) - 1
    while low < high:
        middle = (low + high) // 2
        if max_verdict_id(scratch / f"probe-{middle}", db, wal[:options[middle]]) >= needed_id:
            high = middle
        else:
            low = middle + 1
    cut = rng.randrange(options[low], len(wal) + 1)
    states["WAL torn short"] = (db, wal[:cut])
    states["WAL tail garbage"] = (db, wal[:cut] + rng.randbytes(len(wal) - cut))
    # An unfinished checkpoint: some pages, each at its latest image up to a commit the cut kept, in the file.
    kept = [end for end in ends if end <= cut]
    if kept:
        last = rng.choice(kept)
        latest: dict[int, int] = {}
        for offset, page, _ in frames:
            if offset < last:
                latest[page] = offset
        chosen = rng.sample(sorted(latest), k=rng.randint(1, len(latest)))
        image = bytearray(db)
        for page in chosen:
            start = (page - 1) * page_size
            if len(image) < start + page_size:
                image.extend(bytes(start + page_size - len(image)))
            frame = latest[page] + FRAME_HEADER
            image[start:start + page_size] = wal[frame:frame + page_size]
        states["checkpoint cut short"] = (bytes(image), wal[:cut])
    return states


def freeze_and_copy(service: LiveService, db: Path, into: Path) -> None:
    """Copy the database files at one instant, as a power cut leaves them: the service is frozen for the copy
    (SIGSTOP, so no write lands half in one copy and half in another), WAL first, then database, then -shm."""
    assert service.process is not None
    into.mkdir(parents=True)
    service.process.send_signal(signal.SIGSTOP)
    try:
        wait_stopped(service.process.pid)
        for suffix in ("-wal", "", "-shm"):
            source = db.with_name(db.name + suffix)
            if source.exists():
                shutil.copyfile(source, into / (db.name + suffix))
    finally:
        service.process.send_signal(signal.SIGCONT)


def wait_stopped(pid: int, timeout_s: float = 5.0) -> None:
    """Until every thread of ``pid`` has stopped (a signal is delivered when a thread next leaves the kernel)."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        states = []
        for task in Path(f"/proc/{pid}/task").iterdir():
            try:
                states.append((task / "stat").read_text().rsplit(")", 1)[1].split()[0])
            except (FileNotFoundError, IndexError):
                continue  # a thread that just ended
        if all(state in ("T", "t") for state in states):
            return
        time.sleep(0.001)
    raise AssertionError(f"process {pid} did not stop")


def station_with(tmp_path: Path, name: str, db: bytes, wal: bytes) -> Path:
    """A station file whose data folder holds this database and WAL (no -shm: it does not outlive a cut)."""
    folder = tmp_path / name
    folder.mkdir()
    config = write_station_config(folder)
    path = load_config(config).database_path
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(db)
    if wal:
        path.with_name(path.name + "-wal").write_bytes(wal)
    return config


@pytest.mark.slow
def test_a_power_cut_copy_opens_whole_with_every_acknowledged_verdict(tmp_path: Path) -> None:
    rng, seed = seeded("power cut")
    config = write_station_config(tmp_path / "live")
    db = load_config(config).database_path
    load = Load(cli_token(config, "aoi-1", "aoi:verdict"))
    service = LiveService(config, free_port()).start(timeout_s=60)
    copies: list[tuple[Path, dict[int, str]]] = []
    finish = load.run(service.url)
    try:
        for n in range(4):
            time.sleep(rng.uniform(0.3, 1.5))
            acknowledged = load.snapshot()  # before the freeze: each of these had committed by then
            freeze_and_copy(service, db, tmp_path / f"copy-{n}")
            copies.append((tmp_path / f"copy-{n}", acknowledged))
    finally:
        finish()
        service.kill()
    assert len(copies[-1][1]) > 10, f"seed {seed}: the load should have produced verdicts"
    restarted = False
    for n, (copy, acknowledged) in enumerate(copies):
        db_bytes = (copy / db.name).read_bytes()
        wal, shm = copy / (db.name + "-wal"), copy / (db.name + "-shm")
        wal_bytes = wal.read_bytes() if wal.exists() else b""
        shm_bytes = shm.read_bytes() if shm.exists() else b""
        needed = max(acknowledged, default=0)
        states = power_cut_states(rng, db_bytes, wal_bytes, shm_bytes, needed, tmp_path / f"scratch-{n}")
        for label, (db_state, wal_state) in states.items():
            where = f"seed {seed}, copy {n}, {label}"
            station = station_with(tmp_path, f"cut-{n}-{label.replace(' ', '-')}", db_state, wal_state)
            path = load_config(station).database_path
            assert integrity(path) == "ok", where
            assert not missing(path, acknowledged), f"{where}: acknowledged verdicts lost or changed"
            code, report = audit_verify(station)
            assert code == 0 and report["intact"] is True, f"{where}: {report}"
            if label != "as copied" and not restarted:
                # The station starts on what the cut left and goes on with an intact chain.
                headers = {**cli_token(station, "aoi-2", "aoi:verdict"), "content-type": "image/jpeg"}
                service = LiveService(station, free_port()).start(timeout_s=60)
                try:
                    answer = httpx.post(f"{service.url}{VISION}", content=load.images[1], headers=headers, timeout=10)
                    assert answer.status_code == 200, f"{where}: {answer.text}"
                finally:
                    service.stop()
                assert audit_verify(station)[0] == 0, where
                restarted = True


# -- the fsync before the answer -----------------------------------------------------------------------------

def wal_synced_before_answer(trace: list[str]) -> bool:
    """In an strace -f -y log of one verdict request: did a sync of the WAL complete between reading the request
    and sending the answer?"""
    asked = next((i for i, line in enumerate(trace) if "POST /api/v1/ver" in line), None)
    answered = next((i for i, line in enumerate(trace) if "HTTP/1.1 200" in line), None)
    assert asked is not None and answered is not None, "the trace should show the request and its answer"
    pending: set[str] = set()  # threads inside a sync of the WAL
    for line in trace[asked:answered]:
        pid, _, call = line.partition(" ")
        syncing = call.lstrip().startswith(("fsync(", "fdatasync(")) and "-wal>" in call
        if syncing and "<unfinished" in call:
            pending.add(pid)
        elif (syncing and call.rstrip().endswith("= 0")) or (
                pid in pending and "sync resumed>" in call and call.rstrip().endswith("= 0")):
            return True
    return False


@pytest.mark.skipif(shutil.which("strace") is None, reason="needs strace (apt: strace) to watch the service")
def test_a_verdict_is_answered_only_after_its_commit_reached_the_disk(tmp_path: Path) -> None:
    """What a power cut keeps is what was synced. The running service, watched with strace: between reading a
    verdict request and sending its answer, SQLite synced the WAL that holds the commit (synchronous=FULL;
    with "normal" it would not, and a cut could lose an answered verdict)."""
    config = write_station_config(tmp_path)
    headers = {**cli_token(config, "aoi-1", "aoi:verdict"), "content-type": "image/jpeg"}
    service = LiveService(config, free_port()).start(timeout_s=60)
    assert service.process is not None
    log = tmp_path / "strace.log"
    tracer: subprocess.Popen[bytes] | None = None
    try:
        with httpx.Client(base_url=service.url, timeout=30, headers=headers) as http:
            assert http.post(VISION, content=jpeg(seed=1)).status_code == 200  # the first call's lazy work
            tracer = subprocess.Popen(["strace", "-f", "-y", "-s", "16", "-o", str(log), "-p", str(service.process.pid),
                                       "-e", "trace=fsync,fdatasync,recvfrom,read,sendto,write,writev"],
                                      stderr=subprocess.PIPE)
            assert tracer.stderr is not None
            tracer.stderr.readline()  # "Process N attached": from here on its calls are seen
            time.sleep(0.5)  # every thread attached
            assert http.post(VISION, content=jpeg(spot=True, seed=2)).status_code == 200
            time.sleep(0.5)
    finally:
        if tracer is not None:
            tracer.send_signal(signal.SIGINT)  # detaches; the service runs on
            tracer.wait(15)
        service.stop()
    assert wal_synced_before_answer(log.read_text().splitlines()), log.read_text()[-3000:]


# -- the station key -----------------------------------------------------------------------------------------

class _FailingWrite:
    """A file whose write fails as on a full disk (or a process cut short after creating it)."""

    def __init__(self, descriptor: int, mode: str) -> None:
        self.descriptor = descriptor

    def __enter__(self) -> _FailingWrite:
        return self

    def __exit__(self, *exc: object) -> None:
        os.close(self.descriptor)

    def write(self, data: bytes) -> int:
        raise OSError(28, "No space left on device")


def test_a_station_key_write_cut_short_never_blocks_a_later_start(tmp_path: Path,
                                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    """The key is made on the first start. A write of it that fails (a full disk) or is cut short (a kill, a
    power cut) must not leave an empty or partial key under its name, which every later start would refuse:
    once the disk has room the station starts with a key of its own, the same at each start."""
    monkeypatch.setattr(signing.os, "fdopen", _FailingWrite)
    with pytest.raises(OSError, match="No space"):
        StationKey.load_or_create(tmp_path)
    monkeypatch.undo()
    assert not (tmp_path / signing.KEY_FILE).exists()
    key = StationKey.load_or_create(tmp_path)
    assert StationKey.load_or_create(tmp_path).public_hex == key.public_hex
    assert [p.name for p in tmp_path.iterdir()] == [signing.KEY_FILE], "no temporary file left behind"
