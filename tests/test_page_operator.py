"""The station page in a real browser: Debian's Chromium driven by Playwright against a real
``edge-inspect run`` on loopback with a replayed camera. An operator logs in, starts a batch, watches
verdicts arrive, overrides one (and meets another operator's decision), acknowledges a real alarm, sees a
lost connection and an expired session explained, switches to Chinese and finds no English left, and after
a service restart the page reconnects and catches up without missing a verdict. Screenshots of each view
go to ``test-artifacts/page/``. The same actions without the role fail at the API."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import cv2
import httpx
import numpy as np
import pytest
from modelkit import dark_part
from support import CHROMIUM, EDGE_INSPECT, PROJECT_ROOT, LiveService, free_port, jpeg, write_station_config

ARTIFACTS = PROJECT_ROOT / "test-artifacts" / "page"
CATALOGUES = PROJECT_ROOT / "edge" / "page" / "i18n"
PIN = "4821-7395"

sync_api = pytest.importorskip("playwright.sync_api", reason="playwright is not installed (dev extra)")
pytestmark = [pytest.mark.skipif(not CHROMIUM.exists(), reason="Debian's chromium is not installed "
                                 "(scripts/install-system-deps.sh)"), pytest.mark.timeout(300)]


def add_user(config: Path, name: str, role: str) -> None:
    subprocess.run([*EDGE_INSPECT, "users", "add", name, "--role", role, "--pin-stdin", "--config", str(config)],
                   input=PIN + "\n", check=True, capture_output=True, text=True, cwd=PROJECT_ROOT, timeout=60)


def session_headers(url: str, user: str) -> tuple[httpx.Client, dict[str, str]]:
    """A second person's browser session (cookie and CSRF header), through the session API."""
    client = httpx.Client(base_url=url, timeout=10)
    info = client.post("/api/v1/session", json={"user": user, "pin": PIN}).json()
    return client, {"X-CSRF-Token": info["csrf_token"]}


@pytest.fixture
def station(tmp_path: Path) -> Iterator[tuple[LiveService, Path, Path]]:
    frames, spare = tmp_path / "frames", tmp_path / "spare-camera"
    frames.mkdir()
    spare.mkdir()
    for i in range(6):  # OK, NG, OK, NG, OK and an under-exposed frame (INVALID)
        pixels = np.zeros((240, 320), np.uint8) if i == 5 else dark_part(spot=i % 2 == 1, seed=i)
        cv2.imwrite(str(frames / f"part_{i}.png"), pixels)
    cv2.imwrite(str(spare / "part_0.png"), dark_part(seed=9))
    config = write_station_config(
        tmp_path, storage={"data_dir": str(tmp_path / "data"), "save_images": "all", "min_free_mb": 10},
        sources=[{"type": "replay", "name": "cam1", "folder": str(frames), "interval_s": 0.25, "loop": True},
                 {"type": "replay", "name": "cam2", "folder": str(spare), "interval_s": 2.0, "loop": True}])
    add_user(config, "ann", "operator")
    add_user(config, "bob", "operator")
    service = LiveService(config, free_port()).start()
    try:
        yield service, config, spare
    finally:
        service.stop()


def shot(page: Any, name: str) -> None:
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(ARTIFACTS / f"{name}.png"))


def login(page: Any, user: str) -> None:
    page.fill("#login-form input[name=user]", user)
    page.fill("#login-form input[name=pin]", PIN)
    page.click("#login-form button[type=submit]")
    page.wait_for_selector("#login-dialog", state="hidden")


def visible_texts(page: Any) -> list[str]:
    return page.evaluate("""() => {
        const out = [];
        const walk = document.createTreeWalker(document.body, NodeFilter.SHOW_TEXT);
        while (walk.nextNode()) {
            const node = walk.currentNode;
            const box = node.parentElement;
            if (!box || box.closest("script, [hidden], dialog:not([open])") || !node.textContent.trim()) continue;
            if (box.offsetParent === null && getComputedStyle(box).position !== "fixed") continue;
            out.push(node.textContent.trim());
        }
        for (const el of document.querySelectorAll("[title], [aria-label], [alt]")) {
            for (const name of ["title", "aria-label"]) if (el.getAttribute(name)) out.push(el.getAttribute(name));
        }
        return out;
    }""")


def untranslated(texts: list[str]) -> list[str]:
    """Texts that only the English catalogue has (or that look like catalogue keys)."""
    en = json.loads((CATALOGUES / "en.json").read_text(encoding="utf-8"))
    zh = json.loads((CATALOGUES / "zh.json").read_text(encoding="utf-8"))
    english = {text for key, text in en.items() if text != zh[key] and re.search(r"[A-Za-z]{3}", text)}
    fragments = {frag for text in english for frag in re.split(r"\{\w+\}", text) if len(frag.strip()) > 3}
    keys = re.compile(r"^(" + "|".join(sorted({k.split(".")[0] for k in en})) + r")\.[a-z_A-Z.]+$")
    return [t for t in texts if t in english or keys.match(t) or any(f.strip() in t for f in fragments)]


def wait_for(condition: Any, timeout_s: float = 15.0, what: str = "condition") -> Any:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        value = condition()
        if value:
            return value
        time.sleep(0.1)
    raise AssertionError(f"timed out waiting for {what}")


def test_operator_works_the_page_live_in_two_languages_and_across_a_restart(
        station: tuple[LiveService, Path, Path], browser: Any) -> None:
    service, _, spare = station
    context = browser.new_context(viewport={"width": 1280, "height": 800}, locale="en-US")
    page = context.new_page()
    errors: list[str] = []
    page.on("pageerror", lambda exc: errors.append(str(exc)))
    api = httpx.Client(base_url=service.url, timeout=10)

    try:
        operator_session(page, context, service, spare, api)
    except Exception:
        shot(page, "failure")
        raise
    finally:
        context.close()
    assert not errors, errors


def operator_session(page: Any, context: Any, service: LiveService, spare: Path, api: httpx.Client) -> None:
    # Readable without logging in; verdicts arrive live with image, heat map and verdict.
    earlier = wait_for(lambda: api.get("/api/v1/verdicts?limit=1000").json()["items"][2:], what="some parts")
    page.goto(service.url + "/")
    page.evaluate("""() => {  // each state the verdict panel takes, with what it said
        window.shown = {};
        const panel = document.getElementById("verdict");
        new MutationObserver(() => { window.shown[panel.dataset.decision] = panel.innerText; })
            .observe(panel, { attributes: true, childList: true, subtree: true, characterData: true });
    }""")
    page.wait_for_selector("body[data-connection=live]", timeout=15_000)
    page.wait_for_selector("body[data-received]", timeout=15_000)
    # the stream starts at what is stored next: the station's history is read as pages, not replayed
    assert int(page.get_attribute("body", "data-first-verdict")) > earlier[-1]["id"]
    page.wait_for_selector("#verdict[data-decision=NG]", timeout=15_000)
    assert page.is_visible("#part-image") and page.is_visible("#part-heatmap")
    page.wait_for_selector("#part-box rect.box", state="attached", timeout=15_000)
    page.wait_for_selector("#ng-strip .thumb", timeout=15_000)
    page.wait_for_function("() => window.shown.INVALID && window.shown.INVALID.includes('under-exposed')",
                           timeout=15_000)  # shown with its reason
    shot(page, "operator-live")

    # Every action asks for a login; then the batch starts under the operator's name.
    page.click("#batch-open-button")
    page.wait_for_selector("#login-dialog[open]")
    assert "Log in" in page.text_content("#login-why")
    login(page, "ann")
    page.wait_for_selector("#batch-dialog[open]")
    page.fill("#batch-form input[name=lot]", "LOT-P1")
    page.fill("#batch-form input[name=product]", "tile-A")
    shot(page, "batch-dialog")
    page.click("#batch-form button[type=submit]")
    page.wait_for_selector("#batch-close-button:not([hidden])", timeout=10_000)
    assert "LOT-P1" in page.text_content("#batch-lot")
    batch = api.get("/api/v1/summary/current").json()
    assert batch["status"] == "open" and batch["lot"] == "LOT-P1"
    assert api.get(f"/api/v1/batches/{batch['batch_id']}").json()["operator"] == "user:ann"
    wait_for(lambda: page.text_content("#count-parts") not in ("–", "0"), what="batch counters")
    page.wait_for_selector("#control circle", state="attached", timeout=15_000)
    page.wait_for_selector("#pareto rect.bar", state="attached", timeout=15_000)

    # Override the shown part (tapped open from the NG strip, so it stays put).
    page.click("#ng-strip .thumb >> nth=0")
    page.wait_for_selector("#follow-live:not([hidden])")
    verdict_id = int(page.get_attribute("#verdict", "data-id"))
    page.click("#override-button")
    page.check("#override-form input[value=OK]")
    page.fill("#override-form input[name=reason]", "dust, not a defect")
    page.click("#override-form button[type=submit]")
    page.wait_for_selector("#override-dialog", state="hidden")
    stored = api.get(f"/api/v1/verdicts/{verdict_id}").json()
    assert stored["override_decision"] == "OK" and stored["override_operator"] == "user:ann"
    wait_for(lambda: page.get_attribute("#verdict", "data-decision") == "OK", what="override shown")

    # Two operators on the same part: bob decides while ann's dialog is open; ann's is refused.
    page.click("#override-button")
    bob, bob_headers = session_headers(service.url, "bob")
    assert bob.post(f"/api/v1/verdicts/{verdict_id}/override", json={"decision": "NG", "reason": "real scratch"},
                    headers=bob_headers).status_code == 200
    page.check("#override-form input[value=INVALID]")
    page.fill("#override-form input[name=reason]", "unsure")
    page.click("#override-form button[type=submit]")
    page.wait_for_selector("#override-form .error:has-text('bob')", timeout=10_000)
    shot(page, "override-conflict")
    page.click("#override-form [data-close]")
    assert api.get(f"/api/v1/verdicts/{verdict_id}").json()["override_operator"] == "user:bob"

    # An override of a verdict that does not exist: the API's 404, said on the page.
    message = page.evaluate("""async () => {
        const { act } = await import("/static/page/js/api.js");
        try { await act("POST", "/api/v1/verdicts/999999/override", { decision: "OK" }); return "done"; }
        catch (problem) { return problem.message; }
    }""")
    assert message.startswith("Not found") and "999999" in message

    # A real alarm: the spare camera's folder vanishes, the source fails and the station raises it.
    shutil.rmtree(spare)
    page.wait_for_selector("#alarms button.ack", timeout=30_000)
    shot(page, "alarm")
    alarm_id = int(page.get_attribute("#alarms li.alarm", "data-id"))
    page.click("#alarms button.ack")
    wait_for(lambda: api.get("/api/v1/alarms").json()[0]["acknowledged_by"] == "user:ann", what="alarm ack")
    assert api.get("/api/v1/alarms").json()[0]["id"] == alarm_id
    page.click("#follow-live")

    # An ended session: the page's next request is refused, it asks for the login again, then works.
    cookie = {c["name"]: c["value"] for c in context.cookies()}["edge_session"]
    with httpx.Client(base_url=service.url, cookies={"edge_session": cookie}, timeout=10) as ended:
        csrf = ended.get("/api/v1/session").json()["csrf_token"]
        assert ended.delete("/api/v1/session", headers={"X-CSRF-Token": csrf}).status_code == 204
    page.wait_for_selector("#login-dialog[open]", timeout=15_000)  # the next read, or an action, asks
    assert "expired" in page.text_content("#login-why")
    shot(page, "session-expired")
    login(page, "ann")
    page.click("#confirm-button")
    page.wait_for_selector(".toast.ok", timeout=10_000)

    # Service restart: an action while it is down is explained; the page reconnects and catches up.
    first = int(page.get_attribute("body", "data-first-verdict"))
    started = time.monotonic()
    service.stop()
    assert time.monotonic() - started < 8, "open event streams must not hold up the shutdown"
    page.wait_for_selector("body[data-connection=reconnecting], body[data-connection=offline]", timeout=10_000)
    page.click("#confirm-button")  # its check of the verdict gets no answer: nothing was sent
    page.wait_for_selector(".toast.error:has-text('Not done')", timeout=10_000)
    message = page.evaluate("""async () => {  // a request that was sent and got no answer
        const { act } = await import("/static/page/js/api.js");
        try { await act("POST", "/api/v1/alarms/1/ack"); return "done"; } catch (problem) { return problem.message; }
    }""")
    assert "may or may not have been done" in message
    shot(page, "offline")
    spare.mkdir()  # the spare camera's share is back, or the station would refuse to start
    cv2.imwrite(str(spare / "part_0.png"), dark_part(seed=9))
    service.start()
    for i in range(5):  # stored while the page is still reconnecting
        assert api.post("/api/v1/verdicts/vision", content=jpeg(spot=True, seed=i),
                        headers={"content-type": "image/jpeg"}).status_code == 200
    page.wait_for_selector("body[data-connection=live]", timeout=20_000)
    latest = wait_for(lambda: api.get(f"/api/v1/verdicts?since={first}&limit=1000").json()["items"][-1]["id"],
                      what="stored verdicts")
    wait_for(lambda: int(page.get_attribute("body", "data-last-verdict")) >= latest, what="page caught up")
    last, received = page.evaluate("() => [Number(document.body.dataset.lastVerdict), "
                                   "Number(document.body.dataset.received)]")  # read together: parts keep coming
    stored_ids = [v["id"] for v in api.get(f"/api/v1/verdicts?since={first - 1}&limit=1000").json()["items"]
                  if v["id"] <= last]
    assert received == len(stored_ids), "the page missed a verdict"
    shot(page, "reconnected")

    # Chinese: chosen on the page, remembered, and no English string left on screen.
    page.click("button.lang[data-lang=zh]")
    page.wait_for_selector("html[lang=zh-CN]")
    page.wait_for_selector("body[data-connection=live]", timeout=15_000)
    page.wait_for_selector("body[data-received]", timeout=15_000)
    page.wait_for_selector("#alarms li", timeout=10_000)
    assert page.text_content("#verdict-word") in ("合格", "不合格", "无效")
    left = untranslated(visible_texts(page))
    assert not left, f"untranslated on the Chinese page: {left}"
    shot(page, "operator-zh")
    page.reload()
    page.wait_for_selector("html[lang=zh-CN]")


def test_the_same_actions_without_the_role_fail_at_the_api(station: tuple[LiveService, Path, Path]) -> None:
    service, config, _ = station
    with httpx.Client(base_url=service.url, timeout=10) as http:
        verdict = wait_for(lambda: http.get("/api/v1/verdicts?limit=1").json()["items"], what="a verdict")[0]
        actions = [("POST", "/api/v1/batches", {"lot": "LOT-X"}), ("POST", f"/api/v1/verdicts/{verdict['id']}/override",
                   {"decision": "OK"}), ("POST", "/api/v1/alarms/1/ack", None)]
        reader = subprocess.run([*EDGE_INSPECT, "tokens", "create", "--name", "viewer", "--scope", "qms:read",
                                 "--json", "--config", str(config)], check=True, capture_output=True, text=True,
                                cwd=PROJECT_ROOT).stdout
        headers = {"Authorization": f"Bearer {json.loads(reader)['token']}"}
        for method, path, body in actions:
            anonymous = http.request(method, path, json=body)  # what the page would send without a login
            assert anonymous.status_code == 401, (path, anonymous.text)
            refused = http.request(method, path, json=body, headers=headers)
            assert refused.status_code == 403 and "operator" in refused.json()["error"]["message"], refused.text
        assert http.get("/api/v1/summary/current").json()["status"] == "window", "no batch was opened"
        assert http.get(f"/api/v1/verdicts/{verdict['id']}").json()["override_decision"] is None


def test_operator_selects_the_recipe_and_stops_and_releases_the_line(tmp_path: Path, browser: Any) -> None:
    """On a line station (pypylon's emulated camera, Modbus server bridge): the stack light follows the
    line stop, the recipe and the stop are set from the page and audited under the operator."""
    pytest.importorskip("pypylon", reason="the camera extra (pypylon) is not installed")
    frames = tmp_path / "frames"
    frames.mkdir()
    for i in range(2):
        cv2.imwrite(str(frames / f"part_{i}.png"), dark_part(spot=i == 1, seed=i))
    line = {"camera": {"type": "pylon", "folder": str(frames), "grab_timeout_ms": 500},
            "bridge": {"type": "modbus-server", "port": free_port()}, "default_recipe": 1}
    recipes = [{"number": 1, "name": "standard", "deadline_ms": 5000},
               {"number": 2, "name": "strict", "threshold": 0.99, "deadline_ms": 5000}]
    config = write_station_config(tmp_path, line=line, recipes=recipes)
    add_user(config, "ann", "operator")
    service = LiveService(config, free_port()).start()
    context = browser.new_context(viewport={"width": 1280, "height": 800}, locale="en-US")
    page = context.new_page()
    try:
        page.goto(service.url + "/")
        page.wait_for_selector("#stack-light[data-light=green]", timeout=15_000)
        assert "standard" in page.text_content("#line-text")
        page.select_option("#recipe-select", "2")
        page.wait_for_selector("#login-dialog[open]")
        login(page, "ann")
        wait_for(lambda: httpx.get(service.url + "/api/v1/line").json()["recipe"]["number"] == 2, what="recipe")
        page.click("#line-stop-button")
        page.wait_for_selector("#stack-light[data-light=red]", timeout=15_000)
        assert httpx.get(service.url + "/api/v1/line").json()["line_stopped"] is True
        shot(page, "line-stopped")
        page.click("#line-resume-button")
        page.wait_for_selector("#stack-light[data-light=green]", timeout=15_000)
        trail = httpx.get(service.url + "/api/v1/audit?limit=50").json()
        entries = trail["items"] if isinstance(trail, dict) else trail
        line_actions = [(e["action"], e["actor"]) for e in entries if e.get("entity") == "line"]
        assert line_actions and all(actor == "user:ann" for _, actor in line_actions), line_actions
    except Exception:
        shot(page, "line-failure")
        raise
    finally:
        context.close()
        service.stop()
