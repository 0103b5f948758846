"""The pull API (issue 20): every filter against a brute-force selection of randomised records, exactly-once
paging while verdicts are written, 422s that name bad parameters, huge numbers that are never a 500,
and exports (JSON, NDJSON, CSV) equal to the paged API, overrides included."""

from __future__ import annotations

import csv
import io
import json
import random
import threading
from collections.abc import Callable, Iterator
from datetime import datetime, timedelta, timezone
from typing import Any

import httpx
import pytest
from fastapi.testclient import TestClient
from support import LiveService, jpeg

from edge.api.pull import COLUMNS
from edge.station import Station
from edge.store import NewVerdict, PartContext, Verdict, VerdictStore
from edge.store.queries import VerdictFilter, query_plan

STATIONS = ["test-station", "line-2"]
LABELS = {"OK": ["good"], "NG": ["crack", "blowhole", "anomaly"], "INVALID": ["invalid"]}
HUGE = [2**63, 2**64, 10**30]


def new_verdict(rng: random.Random, modality: str = "vision") -> NewVerdict:
    decision = rng.choices(["OK", "NG", "INVALID"], [6, 3, 1])[0]
    return NewVerdict(modality, decision, rng.choice(LABELS[decision]), rng.random(), 0.5,  # type: ignore[arg-type]
                      rng.choice(["tile-anomaly", "tile-classes"]), rng.choice([1, 2, 3]), 5.0,
                      details={"n": rng.randrange(10)} if rng.random() < 0.5 else {})


def record(store: VerdictStore, rng: random.Random, station: str, serial: str | None, lot: str | None) -> None:
    modalities = rng.choice([["vision"], ["acoustic"], ["vision", "acoustic"]])
    part = PartContext(station, "test", serial=serial, lot=lot)
    store.record(part, [new_verdict(rng, m) for m in modalities]).result()


def fill(store: VerdictStore, seed: int = 7, parts: int = 240) -> None:
    """Parts in batches (lots of two stations), with a lot of their own, with none; re-inspections; overrides."""
    rng = random.Random(seed)
    serials = [f"SN-{i:04d}" for i in range(parts // 2)]
    open_batches: dict[str, int] = {}
    for i in range(parts):
        station = rng.choice(STATIONS)
        if rng.random() < 0.05:  # switch this station's batch
            if station in open_batches:
                store.close_batch(open_batches.pop(station), "user:ann").result()
            else:
                batch_lot = f"LOT-{rng.randrange(6)}"
                open_batches[station] = store.open_batch(batch_lot, station, "user:ann").result().id
        lot = rng.choice([None, None, f"LOT-{rng.randrange(6)}"])
        serial = rng.choice(serials) if rng.random() < 0.8 else None  # a repeat serial is a re-inspection
        record(store, rng, station, serial, lot)
        if i % 9 == 0:
            last = store.verdicts_since(0, 10**6)[-1]
            store.override(last.id, rng.choice(["OK", "NG"]), "user:bob", "checked",
                           rng.choice([None, "crack"])).result()


def everything(store: VerdictStore) -> list[Verdict]:
    return store.verdicts_since(0, 10**6)


def pull(client: TestClient, params: dict[str, Any], limit: int = 7, since: int = 0) -> tuple[list[dict[str, Any]],
                                                                                             int]:
    """Every page after ``since`` until has_more is false; returns the items and the last cursor."""
    items: list[dict[str, Any]] = []
    while True:
        response = client.get("/api/v1/verdicts", params={**params, "since": since, "limit": limit})
        assert response.status_code == 200, response.text
        page = response.json()
        assert page["next_cursor"] >= since and len(page["items"]) <= limit
        items += page["items"]
        since = page["next_cursor"]
        if not page["has_more"]:
            return items, since


Wanted = Callable[[Verdict], bool]


def in_batch(batch_id: int) -> Wanted:
    return lambda r: r.batch_id == batch_id


def both(first: Wanted, second: Wanted) -> Wanted:
    return lambda r: first(r) and second(r)


@pytest.fixture
def filled(station: Station) -> Iterator[Station]:
    assert station.store is not None
    fill(station.store)
    yield station


def test_every_filter_selects_what_a_brute_force_selection_does(client: TestClient, filled: Station) -> None:
    assert filled.store is not None
    rows = everything(filled.store)
    assert len(rows) > 250 and any(r.batch_id for r in rows) and any(r.override_decision for r in rows)
    times = sorted(r.created_at for r in rows)
    start, end = times[len(times) // 4], times[3 * len(times) // 4]
    batch_ids = sorted({r.batch_id for r in rows if r.batch_id is not None})
    cases: list[tuple[dict[str, Any], Wanted]] = [
        ({}, lambda r: True),
        ({"lot": "LOT-2"}, lambda r: r.lot == "LOT-2"),
        ({"lot": "LOT-9"}, lambda r: False),
        ({"serial": "SN-0003"}, lambda r: r.serial == "SN-0003"),
        ({"station": "line-2"}, lambda r: r.station == "line-2"),
        ({"modality": "acoustic"}, lambda r: r.modality == "acoustic"),
        ({"decision": "NG"}, lambda r: r.decision == "NG"),
        ({"effective_decision": "OK"}, lambda r: r.effective_decision == "OK"),
        ({"label": "crack"}, lambda r: r.label == "crack"),
        ({"model": "tile-classes"}, lambda r: r.model_name == "tile-classes"),
        ({"model_version": 2}, lambda r: r.model_version == 2),
        ({"model": "tile-anomaly", "model_version": 3},
         lambda r: (r.model_name, r.model_version) == ("tile-anomaly", 3)),
        ({"overridden": "true"}, lambda r: r.override_decision is not None),
        ({"overridden": "false"}, lambda r: r.override_decision is None),
        ({"from": start}, lambda r: r.created_at >= start),
        ({"to": end}, lambda r: r.created_at < end),
        ({"from": start, "to": end, "decision": "OK"}, lambda r: start <= r.created_at < end and r.decision == "OK"),
        ({"lot": "LOT-1", "station": "test-station", "decision": "NG"},
         lambda r: r.lot == "LOT-1" and r.station == "test-station" and r.decision == "NG"),
    ]
    for batch_id in batch_ids:
        cases.append(({"batch": batch_id}, in_batch(batch_id)))
    rng = random.Random(3)
    for _ in range(12):  # random pairs of filters
        (p1, f1), (p2, f2) = rng.sample(cases[1:], 2)
        if set(p1) & set(p2):
            continue
        cases.append(({**p1, **p2}, both(f1, f2)))
    for params, wanted in cases:
        expected = [r.id for r in rows if wanted(r)]
        items, _ = pull(client, params, limit=rng.choice([1, 5, 50, 1000]))
        assert [item["id"] for item in items] == expected, params
    by_id = {r.id: r for r in rows}
    for item in pull(client, {}, limit=1000)[0]:  # the page holds the stored record, override included
        assert item == json.loads(json.dumps(by_id[item["id"]].__dict__))


def test_times_with_offsets_and_without_are_utc(client: TestClient, filled: Station) -> None:
    assert filled.store is not None
    rows = everything(filled.store)
    middle = rows[len(rows) // 2].created_at  # e.g. 2026-12-05T08:01:24.916422+00:00
    later = [r.id for r in rows if r.created_at >= middle]
    naive = middle.replace("+00:00", "")
    shifted = datetime.fromisoformat(middle).astimezone(timezone(timedelta(hours=2))).isoformat()
    for value in (middle, naive, middle.replace("+00:00", "Z"), shifted):
        assert [i["id"] for i in pull(client, {"from": value}, limit=1000)[0]] == later, value
    assert pull(client, {"from": "0001-01-01T00:00:00+05:00"}, limit=1000)[0] != []
    assert pull(client, {"to": "9999-12-31T23:59:59-05:00"}, limit=1000)[0] != []


def test_exactly_once_while_verdicts_are_being_written(client: TestClient, station: Station) -> None:
    """A client pulling with the cursor while the store commits (in groups) sees each verdict exactly once;
    the same holds for a filtered pull."""
    assert station.store is not None
    store = station.store
    stop = threading.Event()

    def write() -> None:
        rng = random.Random(11)
        i = 0
        while not stop.is_set():
            futures = [store.record(PartContext("test-station", "test", serial=f"C-{i + k}", lot=f"L{(i + k) % 3}"),
                                    [new_verdict(rng)]) for k in range(rng.randrange(1, 20))]
            i += len(futures)
            for future in futures:
                future.result()

    writer = threading.Thread(target=write)
    writer.start()
    seen: list[int] = []
    seen_lot: list[int] = []
    cursor = cursor_lot = 0
    try:
        for _ in range(120):  # one page at a time while the writer commits
            page = client.get("/api/v1/verdicts", params={"since": cursor, "limit": 9}).json()
            seen += [i["id"] for i in page["items"]]
            cursor = page["next_cursor"]
            page = client.get("/api/v1/verdicts", params={"lot": "L1", "since": cursor_lot, "limit": 4}).json()
            seen_lot += [i["id"] for i in page["items"]]
            cursor_lot = page["next_cursor"]
    finally:
        stop.set()
        writer.join()
    items, cursor = pull(client, {}, limit=9, since=cursor)
    seen += [i["id"] for i in items]
    items, cursor_lot = pull(client, {"lot": "L1"}, limit=4, since=cursor_lot)
    seen_lot += [i["id"] for i in items]
    stored = everything(store)
    assert len(stored) > 50
    assert seen == [r.id for r in stored], "every verdict once, in commit order"
    assert seen_lot == [r.id for r in stored if r.lot == "L1"]
    assert client.get("/api/v1/verdicts", params={"since": cursor}).json() == \
        {"items": [], "next_cursor": cursor, "has_more": False}


@pytest.mark.parametrize("path", ["/api/v1/verdicts", "/api/v1/verdicts/export", "/api/v1/batches",
                                  "/api/v1/overrides"])
def test_unknown_repeated_and_malformed_parameters_get_a_422_naming_them(client: TestClient, path: str) -> None:
    def refused(query: str, *names: str) -> None:
        response = client.get(f"{path}?{query}")
        assert response.status_code == 422, (query, response.text)
        error = response.json()["error"]
        assert error["code"] == "invalid_request"
        for name in names:
            assert name in error["message"] and any(name in d["where"] for d in error["details"]), (query, error)

    refused("bogus=1", "bogus")
    refused("lot=A&Lot=B", "Lot")
    refused("lot=A&lot=B", "lot")
    refused("since=-1", "since")
    refused("since=abc", "since")
    refused("from=yesterday", "from")
    refused("to=2026-13-01", "to")
    refused("from=2026-12-05T10:00:00Z&to=2026-12-05T09:00:00Z", "from")
    refused("lot=" + "x" * 200, "lot")
    if path == "/api/v1/overrides":
        refused("verdict=-1", "verdict")
        refused("limit=10001", "limit")
        refused("decision=NG", "decision")
        return
    if path == "/api/v1/batches":
        refused("state=ajar", "state")
        refused("limit=0", "limit")
        refused("open_only=true&state=closed", "open_only")
        return
    refused("decision=MAYBE", "decision")
    refused("batch=-3", "batch")
    refused("batch=one", "batch")
    refused("model_version=1.5", "model_version")
    refused("overridden=perhaps", "overridden")
    refused("modality=smell", "modality")
    if path.endswith("export"):
        refused("format=xml", "format")
        refused("limit=10", "limit")  # an export takes no page size
    else:
        refused("limit=0", "limit")
        refused("limit=10001", "limit")
        refused("format=csv", "format")


def test_huge_cursors_ids_and_limits_are_an_empty_page_or_a_4xx_never_a_500(client: TestClient,
                                                                          filled: Station) -> None:
    for value in HUGE:
        page = client.get("/api/v1/verdicts", params={"since": value})
        assert page.status_code == 200 and page.json() == {"items": [], "next_cursor": value, "has_more": False}
        for name in ("batch", "model_version"):
            response = client.get("/api/v1/verdicts", params={name: value})
            assert response.status_code == 200 and response.json()["items"] == [], (name, value)
        assert client.get("/api/v1/verdicts/export", params={"since": value}).text == "[]"
        assert client.get("/api/v1/verdicts/export", params={"batch": value, "format": "ndjson"}).text == ""
        batches = client.get("/api/v1/batches", params={"since": value})
        assert batches.status_code == 200 and batches.json() == [] and batches.headers["x-next-cursor"] == str(value)
        assert client.get(f"/api/v1/batches/{value}/verdicts.csv").status_code == 404
    for limit in (10**9, 2**64):
        assert client.get("/api/v1/verdicts", params={"limit": limit}).status_code == 422
        assert client.get("/api/v1/batches", params={"limit": limit}).status_code == 422
    assert client.get("/api/v1/batches/1/verdicts.xml").status_code == 422


def parse_csv(text: str) -> list[dict[str, str]]:
    rows = list(csv.reader(io.StringIO(text)))
    assert rows[0] == COLUMNS
    return [dict(zip(rows[0], row, strict=True)) for row in rows[1:]]


def as_cell(value: object) -> str:
    if value is None:
        return ""
    if isinstance(value, bool):
        return str(value).lower()
    if isinstance(value, dict):
        return json.dumps(value, sort_keys=True, separators=(",", ":"))
    return str(value)


@pytest.mark.parametrize("params", [{}, {"lot": "LOT-3"}, {"decision": "NG", "station": "line-2"},
                                    {"overridden": "true"}, {"lot": "LOT-9"}])
def test_exports_equal_the_paged_api_and_include_overrides(client: TestClient, filled: Station,
                                                           params: dict[str, Any]) -> None:
    items, _ = pull(client, params, limit=33)
    exported = client.get("/api/v1/verdicts/export", params={**params, "format": "json"})
    assert exported.status_code == 200 and exported.headers["content-type"].startswith("application/json")
    disposition = exported.headers["content-disposition"]
    assert disposition.startswith('attachment; filename="verdicts-test-station-') and disposition.endswith('.json"')
    assert exported.json() == items
    ndjson = client.get("/api/v1/verdicts/export", params={**params, "format": "ndjson"})
    assert ndjson.headers["content-type"].startswith("application/x-ndjson")
    assert [json.loads(line) for line in ndjson.text.splitlines()] == items
    table = client.get("/api/v1/verdicts/export", params={**params, "format": "csv"})
    assert table.headers["content-type"].startswith("text/csv") and '.csv"' in table.headers["content-disposition"]
    assert parse_csv(table.text) == [{k: as_cell(item[k]) for k in COLUMNS} for item in items]
    if params.get("overridden") == "true":
        assert items and all(item["override_operator"] == "user:bob" for item in items)
        assert all(row["override_decision"] in ("OK", "NG") and row["override_reason"] == "checked"
                   for row in parse_csv(table.text))
    since = items[len(items) // 2]["id"] if items else 0
    assert client.get("/api/v1/verdicts/export", params={**params, "since": since}).json() == \
        [item for item in items if item["id"] > since]


def test_an_export_longer_than_a_page_streams_every_record(client: TestClient, station: Station) -> None:
    assert station.store is not None
    rng = random.Random(5)
    futures = [station.store.record(PartContext("test-station", "test", serial=f"E-{i}"), [new_verdict(rng)])
               for i in range(2500)]
    for future in futures:
        future.result()
    station.store.override(1234, "NG", "user:bob", "scratch").result()
    items, _ = pull(client, {}, limit=10_000)
    lines = client.get("/api/v1/verdicts/export?format=ndjson").text.splitlines()
    assert [json.loads(line) for line in lines] == items and len(items) == 2500
    rows = parse_csv(client.get("/api/v1/verdicts/export?format=csv").text)
    assert len(rows) == 2500 and rows[1233]["override_decision"] == "NG" and rows[1233]["override_reason"] == "scratch"


def test_a_batch_export_and_the_batch_list_with_filters_and_a_cursor(client: TestClient, filled: Station) -> None:
    assert filled.store is not None
    batches = client.get("/api/v1/batches", params={"limit": 1000}).json()
    assert batches and [b["id"] for b in batches] == sorted((b["id"] for b in batches), reverse=True)
    for batch in batches:
        items = pull(client, {"batch": batch["id"]})[0]
        table = client.get(f"/api/v1/batches/{batch['id']}/verdicts.csv")
        assert table.status_code == 200
        assert f'filename="batch-{batch["id"]}-{batch["lot"]}-verdicts.csv"' in table.headers["content-disposition"]
        assert [int(row["id"]) for row in parse_csv(table.text)] == [i["id"] for i in items]
        assert client.get(f"/api/v1/batches/{batch['id']}/verdicts.ndjson").text.count("\n") == len(items)
    oldest_first = sorted(batches, key=lambda b: b["id"])
    for params, wanted in [({}, lambda b: True), ({"lot": "LOT-2"}, lambda b: b["lot"] == "LOT-2"),
                           ({"state": "open"}, lambda b: b["closed_at"] is None),
                           ({"open_only": "true"}, lambda b: b["closed_at"] is None),
                           ({"state": "closed"}, lambda b: b["closed_at"] is not None),
                           ({"station": "line-2"}, lambda b: b["station"] == "line-2")]:
        seen: list[dict[str, Any]] = []
        cursor = 0
        while True:
            response = client.get("/api/v1/batches", params={**params, "since": cursor, "limit": 2})
            seen += response.json()
            cursor = int(response.headers["x-next-cursor"])
            if response.headers["x-has-more"] == "false":
                assert "link" not in response.headers
                break
            assert f"since={cursor}" in response.headers["link"]
        assert seen == [b for b in oldest_first if wanted(b)], params
    # from/to: the batches open at some time in [from, to)
    first = oldest_first[0]
    if first["closed_at"] is not None:
        during = client.get("/api/v1/batches", params={"from": first["opened_at"], "to": first["closed_at"]}).json()
        assert first in during and all(b["opened_at"] < first["closed_at"] for b in during)
        just_after = datetime.fromisoformat(first["closed_at"]) + timedelta(microseconds=1)
        after = client.get("/api/v1/batches", params={"from": just_after.isoformat()})
        assert first not in after.json()


def test_the_openapi_documents_every_parameter_and_field_with_an_example(client: TestClient) -> None:
    spec = client.get("/openapi.json").json()
    for path in ("/api/v1/verdicts", "/api/v1/verdicts/export", "/api/v1/batches", "/api/v1/overrides"):
        for parameter in spec["paths"][path]["get"]["parameters"]:
            schema = parameter["schema"]
            assert parameter.get("description") or schema.get("description"), (path, parameter["name"])
            assert parameter.get("examples") or schema.get("examples"), (path, parameter["name"])
    export = spec["paths"]["/api/v1/verdicts/export"]["get"]["responses"]["200"]["content"]
    assert set(export) == {"application/json", "application/x-ndjson", "text/csv"}
    for name in ("VerdictRecord", "VerdictPage", "BatchRecord", "OverridePage"):
        for field, schema in spec["components"]["schemas"][name]["properties"].items():
            documented = "examples" in schema or "$ref" in schema.get("items", {})  # a list of documented records
            assert schema.get("description") and documented, (name, field)


def test_filters_use_indexes_not_a_scan_of_every_verdict(station: Station) -> None:
    assert station.store is not None
    conn = station.store.reader()
    for flt in (VerdictFilter(lot="L"), VerdictFilter(serial="S"), VerdictFilter(batch_id=1),
                VerdictFilter(decision="NG"), VerdictFilter(label="crack"), VerdictFilter(lot="L", decision="NG"),
                VerdictFilter(serial="S", effective_decision="OK")):
        plan = query_plan(conn, flt)
        assert "SCAN" not in plan and "USING" in plan and "INDEX" in plan, (flt, plan)
        if flt.lot or flt.serial:  # the part leads, not the decision index
            assert "idx_verdicts_decision" not in plan and plan.index("SEARCH p ") < plan.index("SEARCH v "), plan
    for flt in (VerdictFilter(created_from="2026-12-05T08:00:00.000000+00:00"),
                VerdictFilter(created_from="2026-12-05T08:00:00.000000+00:00", created_to="2026-12-06"),
                VerdictFilter(created_to="2026-12-06", station="line-2")):
        plan = query_plan(conn, flt)  # a time span is an id range: pages walk ids, never sort the span
        assert "SEARCH v USING INTEGER PRIMARY KEY" in plan and "TEMP B-TREE" not in plan, (flt, plan)


def test_an_export_reads_in_pages_up_to_the_last_verdict_when_it_started(station: Station) -> None:
    """verdict_pages (the exports' reader) holds one page at a time and ends at the last verdict stored when it
    started, so verdicts committed meanwhile wait for the next export (a fixed, repeatable document)."""
    from edge.store.queries import verdict_pages

    assert station.store is not None
    store = station.store
    rng = random.Random(9)
    for i in range(25):
        record(store, rng, "test-station", f"P-{i}", None)
    last = everything(store)[-1].id
    pages = verdict_pages(store.reader, VerdictFilter(), 0, page_size=10)
    first = next(pages)
    for i in range(5):  # written while the export is under way
        record(store, rng, "test-station", f"Q-{i}", None)
    rest = list(pages)
    assert [len(page) for page in [first, *rest]][:-1] == [10] * len(rest) and len(first) == 10
    assert [v.id for page in [first, *rest] for v in page] == list(range(1, last + 1))
    assert [v.id for page in verdict_pages(store.reader, VerdictFilter(), last) for v in page] == \
        list(range(last + 1, everything(store)[-1].id + 1))


def test_the_real_service_pulls_filters_and_streams_an_export(live_service: LiveService) -> None:
    """`edge-inspect run` on loopback: judged parts come back filtered and paged, an export streams in chunks."""
    with httpx.Client(base_url=live_service.url, timeout=10) as http:
        for i in range(6):
            judged = http.post(f"/api/v1/verdicts/vision?serial=LIVE-{i}&batch=LOT-{i % 2}",
                               content=jpeg(spot=i % 3 == 0, seed=i), headers={"content-type": "image/jpeg"})
            assert judged.status_code == 200, judged.text
        page = http.get("/api/v1/verdicts", params={"lot": "LOT-1", "limit": 2}).json()
        assert [item["serial"] for item in page["items"]] == ["LIVE-1", "LIVE-3"] and page["has_more"]
        rest = http.get("/api/v1/verdicts", params={"lot": "LOT-1", "since": page["next_cursor"]}).json()
        assert [item["serial"] for item in rest["items"]] == ["LIVE-5"] and not rest["has_more"]
        ng = http.get("/api/v1/verdicts", params={"decision": "NG"}).json()["items"]
        assert [item["serial"] for item in ng] == ["LIVE-0", "LIVE-3"]
        refused = http.get("/api/v1/verdicts", params={"lots": "LOT-1"})
        assert refused.status_code == 422 and "query.lots" in refused.json()["error"]["message"]
        with http.stream("GET", "/api/v1/verdicts/export", params={"format": "csv", "lot": "LOT-0"}) as export:
            assert export.headers["content-disposition"].endswith('.csv"') and "content-length" not in export.headers
            text = b"".join(export.iter_bytes()).decode()
        assert [row["serial"] for row in parse_csv(text)] == ["LIVE-0", "LIVE-2", "LIVE-4"]


def test_the_override_feed_pages_every_override_once_with_filters(client: TestClient, filled: Station) -> None:
    assert filled.store is not None
    rows = [dict(row) for row in filled.store.reader().execute("SELECT * FROM overrides ORDER BY id")]
    assert len(rows) > 10
    middle = rows[len(rows) // 2]
    for params, wanted in [({}, lambda o: True), ({"verdict": middle["verdict_id"]},
                                                  lambda o: o["verdict_id"] == middle["verdict_id"]),
                           ({"operator": "user:bob"}, lambda o: True), ({"operator": "user:eve"}, lambda o: False),
                           ({"from": middle["created_at"]}, lambda o: o["created_at"] >= middle["created_at"]),
                           ({"to": middle["created_at"]}, lambda o: o["created_at"] < middle["created_at"])]:
        seen: list[dict[str, Any]] = []
        cursor = 0
        while True:
            page = client.get("/api/v1/overrides", params={**params, "since": cursor, "limit": 3}).json()
            seen += page["items"]
            cursor = page["next_cursor"]
            if not page["has_more"]:
                break
        expected = [{**o, "audit_id": None} for o in rows if wanted(o)]
        assert seen == expected, params
    for value in HUGE:
        assert client.get("/api/v1/overrides", params={"since": value}).json()["items"] == []
        assert client.get("/api/v1/overrides", params={"verdict": value}).json()["items"] == []
    refused = client.get("/api/v1/overrides", params={"operater": "x"})
    assert refused.status_code == 422 and "operater" in refused.json()["error"]["message"]
    assert client.get("/api/v1/overrides", params={"limit": 0}).status_code == 422
