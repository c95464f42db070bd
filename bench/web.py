"""Web app: first load of a member's home on the demo community, in headless Chromium.

Starts `gridex serve --demo` (a fresh SQLite database in a scratch directory), signs Carol in
through the API and puts her session in the tab, as the sign-in page leaves it, then opens `/`
with an empty cache and counts what crosses the wire until the page is idle: bytes (encoded,
with headers), requests (page, scripts, styles, API calls; the WebSocket is not counted) and the
time from navigation start to the first chart drawn (the app marks `gridex:first-chart`). The
stack's floor in the same run: the time to load `/health/live` in the same browser.

    .venv/bin/python bench/web.py [--loads 5]

Prints one JSON line; the figures are medians over the loads.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
from pathlib import Path
from typing import Any

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from playwright.sync_api import Browser, Request, sync_playwright

from gridex.users.bootstrap import DEMO_PASSWORD
from tests.web.live_server import CHROMIUM, DemoServer


def _session(base: str) -> dict[str, Any]:
    pair = httpx.post(
        f"{base}/api/v1/auth/login", json={"username": "carol", "password": DEMO_PASSWORD}
    ).json()
    return {
        "access": pair["access_token"],
        "refresh": pair["refresh_token"],
        "expires": None,  # set in the page, from its own clock
        "expires_in": pair["expires_in"],
        "user": pair["user"],
    }


def _load(browser: Browser, base: str) -> dict[str, float]:
    session = _session(base)
    context = browser.new_context(viewport={"width": 1280, "height": 900})
    context.add_init_script(
        "(() => { const s = " + json.dumps(session) + ";"
        " s.expires = Date.now() + s.expires_in * 1000; delete s.expires_in;"
        " sessionStorage.setItem('gridex.session', JSON.stringify(s)); })()"
    )
    page = context.new_page()
    requests: list[Request] = []
    page.on("requestfinished", lambda request: requests.append(request))
    page.goto(f"{base}/#/home")
    page.wait_for_function(
        "() => performance.getEntriesByName('gridex:first-chart').length > 0", timeout=30_000
    )
    first_chart = page.evaluate(
        "() => performance.getEntriesByName('gridex:first-chart')[0].startTime"
    )
    page.wait_for_load_state("networkidle")
    transferred = 0
    for request in requests:
        sizes = request.sizes()
        transferred += sizes["responseBodySize"] + sizes["responseHeadersSize"]
    count = len(requests)

    page.goto(f"{base}/health/live")
    floor = page.evaluate(
        "() => { const n = performance.getEntriesByType('navigation')[0];"
        " return n.responseEnd - n.startTime; }"
    )
    context.close()
    return {"bytes": transferred, "requests": count, "first_chart_ms": first_chart, "floor": floor}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--loads", type=int, default=5)
    args = parser.parse_args()
    with DemoServer() as server, sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM)
        _load(browser, server.base)  # warm the server's caches, not the browser's
        loads = [_load(browser, server.base) for _ in range(args.loads)]
        browser.close()
    print(
        json.dumps(
            {
                "bench": "web",
                "bytes": int(statistics.median(x["bytes"] for x in loads)),
                "requests": int(statistics.median(x["requests"] for x in loads)),
                "first_chart_ms": round(statistics.median(x["first_chart_ms"] for x in loads), 1),
                "floor_ms": round(statistics.median(x["floor"] for x in loads), 1),
                "loads": args.loads,
            }
        )
    )


if __name__ == "__main__":
    main()
