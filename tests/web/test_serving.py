"""The web app as the server delivers it: its page and files, their security headers, and the
promise that it speaks only the public API (every path it calls is in the OpenAPI document)."""

from __future__ import annotations

import re
from pathlib import Path

import httpx

from gridex.web.routes import STATIC_DIR

JS_FILES = sorted((STATIC_DIR / "js").rglob("*.js"))
# Path prefixes of API modules the app may call before they exist in this build (a 404 of the
# route hides the section); every module it shows is here now, so none.
OPTIONAL_MODULES: tuple[str, ...] = ()


async def test_root_serves_the_app_with_a_policy_that_runs_only_its_own_scripts(
    client: httpx.AsyncClient,
) -> None:
    response = await client.get("/")
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/html")
    assert '<script src="/static/js/main.js" type="module">' in response.text
    csp = response.headers.get_list("content-security-policy")
    assert len(csp) == 1, csp  # one policy, not the API's stacked on top of it
    directives = dict(d.strip().split(" ", 1) for d in csp[0].split(";"))
    assert directives["script-src"] == "'self'"
    assert directives["style-src"] == "'self'"
    assert directives["connect-src"] == "'self'"
    assert directives["frame-ancestors"] == "'none'"
    assert directives["default-src"] == "'none'"
    for header in ("x-content-type-options", "x-frame-options", "referrer-policy", "x-request-id"):
        assert header in response.headers
    assert "set-cookie" not in response.headers


async def test_api_keeps_its_own_strict_policy(client: httpx.AsyncClient) -> None:
    response = await client.get("/api/v1/market/orderbook")
    assert response.headers.get_list("content-security-policy") == [
        "default-src 'none'; frame-ancestors 'none'"
    ]


async def test_static_files_are_served_compressed_with_their_types(
    client: httpx.AsyncClient,
) -> None:
    js = await client.get("/static/js/main.js", headers={"accept-encoding": "gzip"})
    assert js.status_code == 200
    assert js.headers["content-type"].startswith(("text/javascript", "application/javascript"))
    assert js.headers["content-encoding"] == "gzip"
    chart = await client.get("/static/vendor/uplot/uPlot.iife.min.js")
    assert chart.status_code == 200
    assert chart.text.startswith("/*! https://github.com/leeoniya/uPlot")
    license_ = await client.get("/static/vendor/uplot/LICENSE")
    assert "MIT" in license_.text
    assert (await client.get("/static/nothing-here.js")).status_code == 404
    assert (await client.get("/static/../routes.py")).status_code == 404


def test_the_page_loads_nothing_from_another_origin() -> None:
    page = (STATIC_DIR / "index.html").read_text()
    for url in re.findall(r'(?:src|href)="([^"]+)"', page):
        assert url.startswith(("/static/", "#", "/docs", "data:")), url
    for path in [*JS_FILES, STATIC_DIR / "app.css"]:
        text = path.read_text()
        assert not re.search(r"https?://(?!github\.com/leeoniya)", text), path
        assert not re.search(r"\.(innerHTML|outerHTML)\s*=|insertAdjacentHTML", text), path


def _called_paths() -> set[str]:
    """The API paths the modules call, with `${...}` parts as `{}`."""
    calls: set[str] = set()
    for path in JS_FILES:
        for _, target in re.findall(r"\b(?:api|list)\(\s*([\"`])(.+?)\1", path.read_text()):
            calls.add(re.sub(r"\$\{[^}]+\}", "{}", target))
    return calls


async def test_the_app_calls_only_paths_of_the_public_api(client: httpx.AsyncClient) -> None:
    paths = list((await client.get("/openapi.json")).json()["paths"])
    calls = _called_paths()
    assert {"auth/login", "market/orders", "market/orderbook", "wallet"} <= calls
    missing = []
    for call in calls:
        # A `{}` of the app stands for any one segment: an id, or a verb such as clear/settle.
        pattern = re.compile("^/api/v1/" + re.escape(call).replace(r"\{\}", "[^/]+") + "$")
        if any(pattern.match(re.sub(r"\{[^}]+\}", "x", p)) or pattern.match(p) for p in paths):
            continue
        if call.startswith(OPTIONAL_MODULES):
            continue  # shown only where the deployment answers it
        missing.append(call)
    assert missing == []


def test_no_domain_imports_the_web_app() -> None:
    root = Path(__file__).resolve().parents[2] / "gridex"
    for path in root.rglob("*.py"):
        if path.parent.name == "web" or path.name == "app.py":
            continue
        assert "gridex.web" not in path.read_text(), path
