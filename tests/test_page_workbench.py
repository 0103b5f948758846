"""The maintenance workbench in a real browser: Debian's Chromium driven by Playwright against a real
``edge-inspect run``. A technician logs in, labels samples, starts a retraining job and watches its
progress to the end, compares the candidate with the running model, moves the threshold slider and
promotes; the station then judges with the new version. An operator is shown that the workbench needs the
maintenance role, and the same action fails at the API. Screenshots go to ``test-artifacts/page/``."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from support import CHROMIUM, LiveService, free_port, write_station_config
from test_page_operator import (
    PIN,
    add_user,
    login,
    session_headers,
    shot,
    untranslated,
    visible_texts,
    wait_for,
)
from test_workbench import part

sync_api = pytest.importorskip("playwright.sync_api", reason="playwright is not installed (dev extra)")
pytestmark = [pytest.mark.skipif(not CHROMIUM.exists(), reason="Debian's chromium is not installed "
                                 "(scripts/install-system-deps.sh)"), pytest.mark.timeout(600)]
MODEL = "bright-spot"


@pytest.fixture
def service(tmp_path: Path) -> Iterator[LiveService]:
    config = write_station_config(
        tmp_path, storage={"data_dir": str(tmp_path / "data"), "save_images": "all", "min_free_mb": 10},
        workbench={"sample_band": 0.2, "samples_per_hour": 2}, training={"priority": "low"})
    add_user(config, "mia", "maintenance")
    add_user(config, "ann", "operator")
    live = LiveService(config, free_port()).start()
    try:
        yield live
    finally:
        live.stop()


def collect(url: str) -> None:
    """Parts judged as the line would; a technician's session confirms 14 good and 4 spot defects
    (labelled samples), and two parts near the threshold are kept by the sampler, unlabelled."""
    client, csrf = session_headers(url, "mia")
    try:
        def judged(image: bytes) -> int:
            answer = httpx.post(f"{url}/api/v1/verdicts/vision", files={"image": ("p.png", image, "image/png")})
            assert answer.status_code == 200, answer.text
            return int(answer.json()["id"])

        for seed in range(14):
            assert client.post(f"/api/v1/verdicts/{judged(part(seed=seed))}/override", headers=csrf,
                               json={"decision": "OK"}).status_code == 200
        for seed in range(4):
            assert client.post(f"/api/v1/verdicts/{judged(part(240, seed=100 + seed))}/override", headers=csrf,
                               json={"decision": "NG", "label": "spot"}).status_code == 200
        judged(part(112, seed=50))
        judged(part(114, seed=51))
    finally:
        client.close()


def test_technician_labels_retrains_compares_and_promotes(service: LiveService, browser: Any) -> None:
    collect(service.url)
    context = browser.new_context(viewport={"width": 1280, "height": 800}, locale="en-US")
    page = context.new_page()
    errors: list[str] = []
    page.on("pageerror", lambda error: errors.append(str(error)))

    # An operator sees that the workbench needs the maintenance role; the API refuses them too.
    page.goto(service.url + "/workbench")
    page.wait_for_selector("#wb-gate:not([hidden])")
    page.click("#wb-login")
    login(page, "ann")
    page.wait_for_function("document.getElementById('wb-gate-text').textContent.includes('operator')")
    assert page.is_hidden("#workbench")
    shot(page, "workbench-operator-refused")
    operator, csrf = session_headers(service.url, "ann")
    refused = operator.post("/api/v1/training-jobs", json={"mode": "good-only"}, headers=csrf)
    operator.close()
    assert refused.status_code == 403 and "maintenance" in refused.json()["error"]["message"]
    page.click("#logout-button")

    # The technician labels the two parts the sampler kept: one good, one a spot defect.
    page.click("#login-button")
    login(page, "mia")
    page.wait_for_selector("#workbench:not([hidden])")
    page.select_option("#wb-state", "unlabelled")
    page.wait_for_function("document.querySelectorAll('#wb-grid .wb-card[data-state=unlabelled]').length === 2")
    first, second = page.eval_on_selector_all("#wb-grid .wb-card", "cards => cards.map(c => c.dataset.id)")
    page.click(f"#wb-grid .wb-card[data-id='{first}'] [data-action=good]")
    page.wait_for_selector(f"#wb-grid .wb-card[data-id='{first}'][data-state=labelled]")
    page.fill(f"#wb-grid .wb-card[data-id='{second}'] input", "spot")
    page.click(f"#wb-grid .wb-card[data-id='{second}'] [data-action=defect]")
    page.wait_for_selector(f"#wb-grid .wb-card[data-id='{second}'][data-state=labelled]")
    page.select_option("#wb-state", "")
    page.wait_for_function("document.getElementById('wb-counts').textContent.includes('good 15')")
    shot(page, "workbench-samples")
    trail = httpx.get(f"{service.url}/api/v1/audit?limit=1000").json()["items"]
    labelled = [e for e in trail if e["action"] == "sample_labelled"]
    assert [(e["actor"], e["after"]["label"]) for e in labelled] == [("user:mia", "good"), ("user:mia", "spot")]

    # Retraining with a progress bar and the time left, to the end.
    page.click("#wb-start")
    page.wait_for_selector("#wb-cancel:not([hidden])")
    fractions = set()

    def finished() -> bool:
        fractions.add(page.eval_on_selector("#wb-progress", "p => p.value"))
        return page.get_attribute("#wb-job", "data-state") in ("succeeded", "failed")

    wait_for(finished, timeout_s=480, what="the retraining job")
    assert page.get_attribute("#wb-job", "data-state") == "succeeded", page.text_content("#wb-job")
    assert any(0 < f < 1 for f in fractions), f"progress shown on the way: {sorted(fractions)}"
    shot(page, "workbench-trained")

    # Compare: both models on the held-back samples, histograms, the threshold slider's rates.
    page.wait_for_selector("#wb-compare:not([hidden])", timeout=120_000)
    assert page.locator("#wb-versions tr").count() == 2
    assert page.locator("#wb-hist-candidate rect").count() > 0
    before = page.text_content("#wb-threshold-rates")
    page.fill("#wb-threshold", "0")
    page.dispatch_event("#wb-threshold", "input")
    assert "false rejects 100%" in page.text_content("#wb-threshold-rates"), "the lowest threshold rejects all"
    page.fill("#wb-threshold", "1000")
    page.dispatch_event("#wb-threshold", "input")
    assert page.text_content("#wb-threshold-rates") != before or "false rejects 0%" in before
    shot(page, "workbench-compare")

    # Promote the candidate: the running station switches to it without a restart.
    page.click("#wb-promote")
    page.wait_for_function("document.getElementById('wb-models').textContent.includes('running v2')")
    models = httpx.get(f"{service.url}/api/v1/models").json()
    assert next(m for m in models if m["name"] == MODEL)["version"] == 2
    judged = httpx.post(f"{service.url}/api/v1/verdicts/vision", files={"image": ("p.png", part(seed=5), "image/png")})
    assert judged.json()["model"]["version"] == 2
    shot(page, "workbench-promoted")

    # In Chinese, nothing of the workbench is left in English.
    context.add_cookies([{"name": "edge_lang", "value": "zh", "url": service.url}])
    page.goto(service.url + "/workbench")
    page.wait_for_selector("#workbench:not([hidden])")
    page.wait_for_function("document.querySelectorAll('#wb-grid .wb-card').length > 0")
    left = [text for text in untranslated(visible_texts(page)) if text not in (PIN,)]
    assert not left, left
    shot(page, "workbench-zh")
    assert not errors, errors
