"""GET /api/v1/events on the real service: verdicts, overrides, batches and alarms arrive as server-sent
events in commit order, a reconnect with Last-Event-ID replays every verdict missed, a slow client
is reset rather than slowing anyone, and open streams do not hold up a SIGTERM shutdown."""

from __future__ import annotations

import asyncio
import json
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from support import LiveService, cli_token, free_port, jpeg, write_station_config

from edge.page.hub import QUEUE_SIZE, RESET, Client, EventHub, LiveEvent
from edge.store import NewVerdict, PartContext, VerdictStore

VISION = "/api/v1/verdicts/vision"


def read_events(response: httpx.Response, until: int, timeout_s: float = 15.0) -> list[tuple[str, str | None, dict]]:
    """(event, id, data) of the stream until ``until`` events (comments and retry lines skipped)."""
    events: list[tuple[str, str | None, dict]] = []
    name, ident, data = "message", None, ""
    deadline = time.monotonic() + timeout_s
    for line in response.iter_lines():
        if time.monotonic() > deadline:
            break
        if line.startswith("event: "):
            name = line[7:]
        elif line.startswith("id: "):
            ident = line[4:]
        elif line.startswith("data: "):
            data = line[6:]
        elif line == "" and data:
            events.append((name, ident, json.loads(data)))
            name, ident, data = "message", None, ""
            if len(events) >= until:
                break
    return events


@pytest.fixture
def service(tmp_path: Path) -> Iterator[LiveService]:
    live = LiveService(write_station_config(tmp_path), free_port()).start()
    yield live
    live.stop()


def post(url: str, spot: bool = False, seed: int = 0) -> dict:
    response = httpx.post(url + VISION, content=jpeg(spot=spot, seed=seed), headers={"content-type": "image/jpeg"})
    assert response.status_code == 200, response.text
    return dict(response.json())


def test_stream_delivers_changes_and_replays_missed_verdicts(service: LiveService) -> None:
    before = [post(service.url, seed=i)["id"] for i in range(3)]
    received: list[tuple[str, str | None, dict]] = []
    stored_at: dict[int, float] = {}

    def listen() -> None:
        with httpx.stream("GET", service.url + "/api/v1/events", timeout=20) as response:
            assert response.status_code == 200 and response.headers["content-type"].startswith("text/event-stream")
            received.extend(read_events(response, until=1 + 4 + 1))  # ready, 4 verdicts, the override

    listener = threading.Thread(target=listen)
    listener.start()
    time.sleep(1.0)  # the stream is open (ready sent) before the new verdicts
    for i in range(4):
        created = post(service.url, spot=i == 0, seed=10 + i)
        stored_at[created["id"]] = time.monotonic()
    token = cli_token(service.config, "events-operator", "operator")
    assert httpx.post(f"{service.url}/api/v1/verdicts/{created['id']}/override", json={"decision": "NG"},
                      headers=token).status_code == 200
    listener.join(20)
    names = [name for name, _, _ in received]
    assert names[0] == "ready" and names[1:5] == ["verdict"] * 4 and names[5] == "record", names
    ids = [int(ident) for name, ident, _ in received if name == "verdict" and ident]
    assert ids == sorted(stored_at) and min(ids) > max(before), "only what was stored after the stream opened"
    assert received[5][2]["kind"] == "override" and received[5][2]["verdict"]["override_decision"] == "NG"
    assert received[1][2]["decision"] == "NG" and received[1][2]["serial"]

    # Reconnect from the first verdict: every later one is replayed from the store, then "ready".
    with httpx.stream("GET", service.url + "/api/v1/events", headers={"Last-Event-ID": str(before[0])},
                      timeout=20) as response:
        replay = read_events(response, until=len(before) - 1 + 4 + 1)
    assert [int(i) for n, i, _ in replay if n == "verdict" and i] == [*before[1:], *ids]
    assert replay[-1][0] == "ready" and replay[-1][2]["cursor"] == ids[-1]


def test_open_streams_do_not_hold_up_shutdown(service: LiveService) -> None:
    opened = threading.Event()

    def hold() -> None:
        try:
            with httpx.stream("GET", service.url + "/api/v1/events", timeout=30) as response:
                for line in response.iter_lines():
                    if line.startswith("event: ready"):
                        opened.set()
        except httpx.HTTPError:
            pass

    streams = [threading.Thread(target=hold, daemon=True) for _ in range(3)]
    for stream in streams:
        stream.start()
    assert opened.wait(15)
    started = time.monotonic()
    service.stop()
    assert time.monotonic() - started < 5.0, "SIGTERM waited for the open event streams"
    assert service.process is not None and service.process.returncode in (0, -15), service.log.read_text()
    for stream in streams:
        stream.join(5)
        assert not stream.is_alive(), "the stream ended with the server"


def test_a_slow_client_is_reset_not_waited_for() -> None:
    async def scenario() -> tuple[bool, list[LiveEvent]]:
        client = Client()
        accepted = all(client.offer(LiveEvent("verdict", {"id": i}, i)) for i in range(QUEUE_SIZE))
        overflow = client.offer(LiveEvent("verdict", {"id": QUEUE_SIZE}, QUEUE_SIZE))
        left = [client.queue.get_nowait() for _ in range(client.queue.qsize())]
        return accepted and not overflow, left

    dropped, left = asyncio.run(scenario())
    assert dropped and left == [RESET], "a full client is emptied and told to reconnect, nothing blocks"


def test_events_need_the_read_scope_where_reading_is_not_open(tmp_path: Path) -> None:
    config = write_station_config(tmp_path, access={"anonymous_scopes": []})
    live = LiveService(config, free_port()).start()
    try:
        refused = httpx.get(live.url + "/api/v1/events", timeout=10)
        assert refused.status_code == 401 and refused.json()["error"]["code"] == "not_authenticated"
        headers = cli_token(config, "reader", "qms:read")
        with httpx.stream("GET", live.url + "/api/v1/events", headers=headers, timeout=10) as response:
            assert response.status_code == 200
            assert read_events(response, until=1)[0][0] == "ready"
    finally:
        live.stop()


def test_hub_fans_committed_verdicts_out_in_order_with_one_pump(tmp_path: Path) -> None:
    """In process: two clients connecting at once share one pump and both get every verdict, in id order,
    once it is committed; a record written before any client connected is not sent as news."""
    store = VerdictStore(tmp_path / "verdicts.db")
    hub = EventHub()
    hub.attach(store)
    store.start()
    verdict = NewVerdict("vision", "OK", "good", 0.1, 0.5, "m", 1, 5.0)
    part = PartContext("s", "api")
    try:
        before = store.record(part, [verdict]).result().verdict_id

        async def scenario() -> tuple[list[int], list[list[int]], int]:
            clients = await asyncio.gather(hub.connect(), hub.connect())
            pumps = sum(1 for task in asyncio.all_tasks() if task.get_name() == "page-events")
            futures = [store.record(part, [verdict]) for _ in range(20)]
            ids = [(await asyncio.wrap_future(f)).verdict_id for f in futures]
            got = [[(await asyncio.wait_for(c.queue.get(), 5)).id or 0 for _ in ids] for c in clients]
            return ids, got, pumps

        ids, got, pumps = asyncio.run(scenario())
    finally:
        store.close()
    assert pumps == 1 and hub.cursor == ids[-1] and min(ids) > before
    assert got == [ids, ids]
