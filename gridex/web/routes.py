"""Serve the web app: `/` is its page, `/static/` its scripts, styles and vendored chart library.

The app is plain ES modules that talk to the same public API as any third party (``/api/v1`` and
``/ws``); this module adds no endpoint of its own beyond the files. It imports no domain, and no
domain imports it.
"""

from __future__ import annotations

import gzip
import hashlib
import mimetypes
from dataclasses import dataclass
from pathlib import Path

from fastapi import FastAPI, Request
from starlette.responses import Response

STATIC_DIR = Path(__file__).parent / "static"
STATIC_URL = "/static"

# The page runs only its own scripts and styles, talks only to its own origin (HTTP and the
# WebSocket), and may not be framed: a token in the page's memory is reachable by nothing else.
CONTENT_SECURITY_POLICY = (
    "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
    "connect-src 'self'; font-src 'self'; manifest-src 'self'; base-uri 'none'; "
    "form-action 'self'; frame-ancestors 'none'"
)
_TEXT_TYPES = ("text/", "application/javascript", "application/json", "image/svg+xml")


@dataclass(frozen=True)
class Asset:
    body: bytes
    gzipped: bytes | None
    media_type: str
    etag: str


def load_assets(root: Path = STATIC_DIR) -> dict[str, Asset]:
    """Every file under ``root`` by its path below it, read and compressed once.

    Compressing at start instead of per response (Starlette's GZipMiddleware) took the first load
    of a member's home from ~770 ms to ~230 ms until the last script arrived on a busy two-core
    machine, for the same ~70 KB on the wire (bench/web.py).
    """
    assets: dict[str, Asset] = {}
    for path in sorted(root.rglob("*")):
        if not path.is_file():
            continue
        body = path.read_bytes()
        media_type = mimetypes.guess_type(path.name)[0] or "text/plain"
        if media_type.startswith(_TEXT_TYPES):
            media_type += "; charset=utf-8"
        packed = gzip.compress(body, compresslevel=9, mtime=0)
        assets[path.relative_to(root).as_posix()] = Asset(
            body=body,
            gzipped=packed if len(packed) < len(body) * 0.9 else None,
            media_type=media_type,
            etag='"' + hashlib.sha256(body).hexdigest()[:32] + '"',
        )
    return assets


def _serve(asset: Asset | None, request: Request) -> Response:
    if asset is None:
        return Response(status_code=404, media_type="text/plain", content="Not found")
    # Revalidated on every load (a deploy is seen at once), answered 304 while unchanged.
    headers = {
        "etag": asset.etag,
        "cache-control": "no-cache",
        "vary": "accept-encoding",
        "content-security-policy": CONTENT_SECURITY_POLICY,
    }
    if request.headers.get("if-none-match") == asset.etag:
        return Response(status_code=304, headers=headers)
    body = asset.body
    if asset.gzipped is not None and "gzip" in request.headers.get("accept-encoding", ""):
        body = asset.gzipped
        headers["content-encoding"] = "gzip"
    return Response(body, media_type=asset.media_type, headers=headers)


def install_web(app: FastAPI) -> None:
    """Serve the app at ``/`` and its files under ``/static``."""
    assets = load_assets()

    async def web_app(request: Request) -> Response:
        """The app's single page; its own router reads the fragment (``#/market``)."""
        return _serve(assets["index.html"], request)

    async def web_static(path: str, request: Request) -> Response:
        return _serve(assets.get(path), request)

    app.add_api_route("/", web_app, methods=["GET", "HEAD"], include_in_schema=False)
    app.add_api_route(
        STATIC_URL + "/{path:path}", web_static, methods=["GET", "HEAD"], include_in_schema=False
    )
