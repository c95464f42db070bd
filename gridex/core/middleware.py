"""Pure ASGI middleware: request ids, logs and metrics, security headers, body limit, rate limits.

Pure ASGI (not ``BaseHTTPMiddleware``) keeps the cost per request to a few microseconds and lets the
body limit act while the body streams in, before it is read in full.
"""

from __future__ import annotations

import re
import time
import uuid
from typing import Any

import structlog
from starlette.exceptions import HTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from gridex.core.config import API_PREFIX
from gridex.core.context import client_ip_var, request_id_var
from gridex.core.errors import error_body, unhandled_response
from gridex.core.metrics import HTTP_LATENCY, HTTP_REQUESTS, RATE_LIMITED
from gridex.core.responses import OrjsonResponse
from gridex.core.runtime import Runtime
from gridex.core.security import TokenError, decode_access_token

log = structlog.get_logger("gridex.access")

_REQUEST_ID = re.compile(r"^[A-Za-z0-9._:-]{1,128}$")
_UNLOGGED = frozenset({"/health/live", "/health/ready", "/metrics"})
# Where the API explorer's scripts and styles are served from (by the app, from its package).
DOCS_ASSETS = "/docs-assets"
_DOCS = ("/docs", "/redoc", "/openapi.json", DOCS_ASSETS)
# The explorer pages run the bundled scripts and one inline initialiser, and load nothing from
# another origin; everything else the API serves is data and may run nothing at all.
_DOCS_CSP = (
    b"default-src 'self'; script-src 'self' 'unsafe-inline'; style-src 'self' 'unsafe-inline'; "
    b"img-src 'self' data:; worker-src 'self' blob:; frame-ancestors 'none'"
)
_API_CSP = b"default-src 'none'; frame-ancestors 'none'"
# Sign-in, registration, OTP and password endpoints get the stricter auth limit per IP.
_AUTH_PATHS = re.compile(
    r"^/api/v1/auth/(login|register|verify-email|resend-otp|set-password|refresh|"
    r"password/(forgot|reset|change)|wallet/(challenge|verify))$"
)
_STAFF_ROLES = frozenset({"admin", "operator"})
# Request state key of the (token, claims) pair the rate limiter verified.
DECODED_TOKEN_STATE = "decoded_access_token"


def _header(scope: Scope, name: bytes) -> str | None:
    for key, value in scope["headers"]:
        if key == name:
            return str(value.decode("latin-1"))
    return None


def route_template(scope: Scope) -> str:
    """The matched route's path template, e.g. ``/api/v1/users/{user_id}`` (bounded cardinality).

    A route knows its router's prefix but not the ``/api/v1`` under which the app includes every
    router, so that one prefix is put back here.
    """
    path = getattr(scope.get("route"), "path", None)
    if path is None:
        return "unmatched"
    template = str(path)
    if scope["path"].startswith(API_PREFIX + "/") and not template.startswith(API_PREFIX):
        return API_PREFIX + template
    return template


class RequestContextMiddleware:
    """Request id in and out, access log, Prometheus metrics and security headers."""

    def __init__(self, app: ASGIApp, *, production: bool) -> None:
        self.app = app
        self.production = production

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        incoming = _header(scope, b"x-request-id")
        request_id = incoming if incoming and _REQUEST_ID.match(incoming) else uuid.uuid4().hex
        client = scope.get("client")
        rid_token = request_id_var.set(request_id)
        ip_token = client_ip_var.set(client[0] if client else None)
        structlog.contextvars.bind_contextvars(request_id=request_id)
        path: str = scope["path"]
        start = time.perf_counter()
        status_code = 500
        extra = self._headers(path, request_id)

        async def send_wrapper(message: Message) -> None:
            nonlocal status_code
            if message["type"] == "http.response.start":
                status_code = message["status"]
                headers = message.get("headers", [])
                # A response that brings its own policy (the web app's pages) keeps it.
                own_csp = any(key.lower() == b"content-security-policy" for key, _ in headers)
                message["headers"] = [
                    *headers,
                    *(h for h in extra if not (own_csp and h[0] == b"content-security-policy")),
                ]
            await send(message)

        try:
            await self.app(scope, receive, send_wrapper)
        finally:
            elapsed = time.perf_counter() - start
            template = route_template(scope)
            method = scope["method"]
            HTTP_REQUESTS.labels(method, template, str(status_code)).inc()
            HTTP_LATENCY.labels(method, template).observe(elapsed)
            if path not in _UNLOGGED:
                log.info(
                    "request",
                    method=method,
                    path=path,
                    route=template,
                    status=status_code,
                    duration_ms=round(elapsed * 1000, 2),
                    ip=client[0] if client else None,
                )
            structlog.contextvars.unbind_contextvars("request_id")
            request_id_var.reset(rid_token)
            client_ip_var.reset(ip_token)

    def _headers(self, path: str, request_id: str) -> list[tuple[bytes, bytes]]:
        headers = [
            (b"x-request-id", request_id.encode()),
            (b"x-content-type-options", b"nosniff"),
            (b"x-frame-options", b"DENY"),
            (b"referrer-policy", b"no-referrer"),
            (b"cross-origin-opener-policy", b"same-origin"),
        ]
        csp = _DOCS_CSP if path.startswith(_DOCS) else _API_CSP
        headers.append((b"content-security-policy", csp))
        if path.startswith("/api/"):
            headers.append((b"cache-control", b"no-store"))
        if self.production:
            headers.append((b"strict-transport-security", b"max-age=63072000; includeSubDomains"))
        return headers


class UnhandledErrorMiddleware:
    """Answers an exception that no handler claimed, inside the other middleware.

    Starlette's own last-resort handler sits outside every middleware: its 500 had no request id,
    no security or rate-limit headers, and it re-raised, so the server closed the keep-alive
    connection. Here the answer is rendered in the error shape (503 with ``Retry-After`` when the
    database is down), passes back through the middleware that adds those headers, and the
    exception stops here, so the connection stays usable.
    """

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = False

        async def tracking_send(message: Message) -> None:
            nonlocal started
            if message["type"] == "http.response.start":
                started = True
            await send(message)

        try:
            await self.app(scope, receive, tracking_send)
        except Exception as exc:
            if started:  # too late for another answer: let the server end the connection
                raise
            await unhandled_response(exc)(scope, receive, send)


class _BodyTooLarge(HTTPException):
    """Raised from ``receive``; an HTTPException so that FastAPI's body parsing lets it through to
    the error handler instead of turning it into a generic 400."""

    def __init__(self, max_bytes: int) -> None:
        super().__init__(413, f"The request body is larger than {max_bytes} bytes")


class BodyLimitMiddleware:
    """413 ``PAYLOAD_TOO_LARGE`` from the declared length, or as soon as the stream passes it."""

    def __init__(self, app: ASGIApp, *, max_bytes: int) -> None:
        self.app = app
        self.max_bytes = max_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        declared = _header(scope, b"content-length")
        if declared is not None and declared.isdigit() and int(declared) > self.max_bytes:
            await self._reject(scope, receive, send)
            return
        received = 0
        started = False

        async def limited_receive() -> Message:
            nonlocal received
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > self.max_bytes:
                    raise _BodyTooLarge(self.max_bytes)
            return message

        async def tracking_send(message: Message) -> None:
            nonlocal started
            if message["type"] == "http.response.start":
                started = True
            await send(message)

        try:
            await self.app(scope, limited_receive, tracking_send)
        except _BodyTooLarge:
            if started:
                raise
            await self._reject(scope, receive, send)

    async def _reject(self, scope: Scope, receive: Receive, send: Send) -> None:
        body = error_body(
            "PAYLOAD_TOO_LARGE",
            f"The request body is larger than {self.max_bytes} bytes",
            {"max_bytes": self.max_bytes},
        )
        response = OrjsonResponse(body, status_code=413, headers={"connection": "close"})
        await response(scope, receive, send)


class RateLimitMiddleware:
    """Limits per principal (IP, user by role, or API key) plus the auth limit on sign-in paths."""

    def __init__(self, app: ASGIApp, *, runtime: Runtime) -> None:
        self.app = app
        self.rt = runtime

    def _classify(self, scope: Scope) -> tuple[str, Any, str]:
        limiter = self.rt.limiter
        authorization = _header(scope, b"authorization")
        if authorization and authorization[:7].lower() == "bearer ":
            try:
                token = authorization[7:].strip()
                claims = decode_access_token(
                    token, self.rt.settings.secret_key, now=self.rt.clock.now()
                )
            except TokenError:
                pass
            else:
                # The auth dependency reuses these instead of verifying the token again.
                scope.setdefault("state", {})[DECODED_TOKEN_STATE] = (token, claims)
                if claims.role in _STAFF_ROLES:
                    return "admin", limiter.admin, f"user:{claims.user_id}"
                return "default", limiter.default, f"user:{claims.user_id}"
        api_key = _header(scope, b"x-api-key")
        if api_key:
            parts = api_key.split("_")
            if len(parts) == 3 and limiter.knows_api_key(parts[1]):
                return "ingest", limiter.ingest, f"key:{parts[1]}"
        client = scope.get("client")
        return "anonymous", limiter.anonymous, f"ip:{client[0] if client else 'unknown'}"

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        path: str = scope.get("path", "")
        if scope["type"] != "http" or not self.rt.limiter.enabled or not path.startswith("/api/"):
            await self.app(scope, receive, send)
            return
        limiter = self.rt.limiter
        kind, item, key = self._classify(scope)
        state = await limiter.hit(item, kind, key)
        if state.allowed and _AUTH_PATHS.match(path):
            client = scope.get("client")
            auth_state = await limiter.hit(
                limiter.auth, "auth", f"ip:{client[0] if client else 'unknown'}"
            )
            if not auth_state.allowed or auth_state.remaining < state.remaining:
                kind, state = "auth", auth_state
        headers = [
            (b"ratelimit-limit", str(state.limit).encode()),
            (b"ratelimit-remaining", str(state.remaining).encode()),
        ]
        if not state.allowed:
            RATE_LIMITED.labels(kind).inc()
            response = OrjsonResponse(
                error_body(
                    "RATE_LIMIT_EXCEEDED",
                    "Too many requests; slow down",
                    {"limit": state.limit, "retry_after": state.reset_after, "scope": kind},
                ),
                status_code=429,
                headers={
                    "Retry-After": str(state.reset_after),
                    "RateLimit-Limit": str(state.limit),
                    "RateLimit-Remaining": "0",
                },
            )
            await response(scope, receive, send)
            return

        async def send_wrapper(message: Message) -> None:
            if message["type"] == "http.response.start":
                message["headers"] = [*message.get("headers", []), *headers]
            await send(message)

        await self.app(scope, receive, send_wrapper)
