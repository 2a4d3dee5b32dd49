"""The ops page at ``/`` in headless Chromium (Debian's ``chromium``, driven by Playwright)
against a real worker on the embedded broker: it loads without console errors, shows the
live fleet, throughput and anomalies, and the device drill-down renders its chart. The
screenshot is kept in ``test-artifacts/ops-page.png``."""

from __future__ import annotations

import json
import shutil
import time
from collections import defaultdict
from typing import Any

import pytest

from aurora_streams.domain.timeutil import parse_timestamp
from aurora_streams.simulator import SimConfig, generate
from tests.integration.harness import REPO, Deployment, Worker
from tests.integration.test_api import READ, get, tokens

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
ARTIFACTS = REPO / "test-artifacts"


def fleet(seed: int, start_ms: int) -> list[Any]:
    cfg = SimConfig(
        devices=20, seed=seed, start_ms=start_ms, jump_rate=0.01, reset_rate=0.01, encoding="json"
    )
    return list(generate(cfg, limit=2500))


def wait_for_fleet(w: Worker, devices: int) -> None:
    w.wait_ready()
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        status, body = get(w, "/v1/fleet")
        if status == 200 and body["devices"] == devices:
            return
        time.sleep(0.5)
    raise TimeoutError(f"the fleet did not reach {devices} devices")


def test_readings_endpoint_agrees_with_the_aggregates(deployment: Deployment) -> None:
    tokens(deployment)
    deployment.produce(fleet(5, 1_735_653_600_000))
    w = deployment.start_worker("r")
    wait_for_fleet(w, 20)
    device = get(w, "/v1/devices?limit=1")[1]["items"][0]["device_id"]
    status, readings = get(w, f"/v1/devices/{device}/readings")
    assert status == 200 and readings["items"], readings
    ends = [parse_timestamp(r["ts_end"]) for r in readings["items"]]
    assert ends == sorted(set(ends))
    sums: dict[int, list[float]] = defaultdict(lambda: [0.0, 0.0])
    for at, r in zip(ends, readings["items"], strict=True):
        if r["delta"] is not None:
            sums[(at - 1) // 900_000 * 900_000][0 if r["validated"] else 1] += r["delta"]
    _, aggregates = get(w, f"/v1/devices/{device}/aggregates?from={readings['from']}&to={readings['to']}")
    got = {parse_timestamp(b["start"]): (b["sum"], b["excluded_sum"]) for b in aggregates["items"]}
    assert got.keys() == sums.keys()
    assert all(got[k] == (pytest.approx(v[0]), pytest.approx(v[1])) for k, v in sums.items())
    assert get(w, f"/v1/devices/{device}/readings", token=None)[0] == 401


@pytest.mark.skipif(CHROMIUM is None, reason="chromium is not installed (.ci/run installs Debian's package)")
def test_ops_page_in_headless_chromium(deployment: Deployment) -> None:
    from playwright.sync_api import sync_playwright

    tokens(deployment)
    deployment.extra_env["AURORA_FORECAST_WINDOW_MIN"] = "30"
    deployment.produce(fleet(7, 1_735_653_600_000))
    w = deployment.start_worker("ops")
    wait_for_fleet(w, 20)
    ARTIFACTS.mkdir(exist_ok=True)
    errors: list[str] = []
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, headless=True, args=["--no-sandbox"])
        try:
            page = browser.new_page(viewport={"width": 1400, "height": 1300})
            page.on("console", lambda m: errors.append(m.text) if m.type == "error" else None)
            page.on("pageerror", lambda e: errors.append(str(e)))
            page.on("response", lambda r: errors.append(f"{r.status} {r.url}") if r.status >= 400 else None)
            page.goto(f"http://127.0.0.1:{w.port}/")
            page.wait_for_function("document.body.dataset.state === 'live'", timeout=30_000)
            assert "enter an API token" in page.text_content("#error")  # nothing secret without one
            page.fill("#token", READ)
            page.click("#token-form button")
            page.wait_for_function("document.body.dataset.chart === 'rendered'", timeout=30_000)
            assert page.text_content("#devices") == "20"
            assert page.text_content("#health") == "ready"
            assert page.locator("#anomalies tr").count() >= 1
            traces: list[dict[str, Any]] = page.evaluate(
                "document.getElementById('device-chart').data.map(t => ({name: t.name, n: t.x.length}))"
            )
            names = {t["name"] for t in traces}
            assert {"15-minute energy", "readings (delta)"} <= names
            assert all(t["n"] > 0 for t in traces)
            # Live: more readings arrive while the page is open and the throughput shows them.
            deployment.produce(fleet(7, 1_735_653_600_000 + 40 * 86_400_000))  # same meters, later
            page.wait_for_function(
                "Number(document.getElementById('throughput').textContent.replace(/,/g, '')) > 0",
                timeout=30_000,
            )
            page.screenshot(path=str(ARTIFACTS / "ops-page.png"), full_page=True)
        finally:
            browser.close()
    assert errors == [], json.dumps(errors)
