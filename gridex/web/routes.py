"""Serve the web app: `/` is its page, `/static/` its scripts, styles and vendored chart library.

The app is plain ES modules that talk to the same public API as any third party (``/api/v1`` and
``/ws``); this module adds no endpoint of its own beyond the files. It imports no domain, and no
domain imports it.
"""

from __future__ import annotations

from pathlib import Path

from fastapi import FastAPI
from starlette.middleware.gzip import GZipMiddleware
from starlette.responses import FileResponse, Response
from starlette.staticfiles import StaticFiles

STATIC_DIR = Path(__file__).parent / "static"
STATIC_URL = "/static"

# The page runs only its own scripts and styles, talks only to its own origin (HTTP and the
# WebSocket), and may not be framed: a token in the page's memory is reachable by nothing else.
CONTENT_SECURITY_POLICY = (
    "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
    "connect-src 'self'; font-src 'self'; manifest-src 'self'; base-uri 'none'; "
    "form-action 'self'; frame-ancestors 'none'"
)


class _StaticFiles(StaticFiles):
    """Static files with the app's policy; revalidated by ETag, so a deploy is seen at once."""

    def file_response(self, *args: object, **kwargs: object) -> Response:
        response = super().file_response(*args, **kwargs)  # type: ignore[arg-type]
        response.headers["content-security-policy"] = CONTENT_SECURITY_POLICY
        response.headers["cache-control"] = "no-cache"
        return response


async def index() -> FileResponse:
    """The app's single page; its own router reads the fragment (``#/market``)."""
    return FileResponse(
        STATIC_DIR / "index.html",
        media_type="text/html; charset=utf-8",
        headers={"content-security-policy": CONTENT_SECURITY_POLICY, "cache-control": "no-cache"},
    )


def install_web(app: FastAPI) -> None:
    """Serve the app at ``/`` and its files under ``/static`` (compressed: about a third of the
    bytes on first load)."""
    app.add_api_route("/", index, methods=["GET"], include_in_schema=False, name="web_app")
    app.mount(
        STATIC_URL,
        GZipMiddleware(_StaticFiles(directory=STATIC_DIR), minimum_size=1024),
        name="web_static",
    )
