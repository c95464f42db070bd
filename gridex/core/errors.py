"""One error hierarchy, rendered in the API's error shape by one set of handlers."""

from __future__ import annotations

from typing import Any, ClassVar

import structlog
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from sqlalchemy.exc import DBAPIError, DisconnectionError, OperationalError
from sqlalchemy.exc import TimeoutError as PoolTimeout
from starlette.exceptions import HTTPException as StarletteHTTPException

from gridex.core.context import request_id_var
from gridex.core.responses import OrjsonResponse

log = structlog.get_logger(__name__)


class GridexError(Exception):
    """Base of every error a service raises on purpose; never an ``HTTPException``."""

    code: ClassVar[str] = "INTERNAL_ERROR"
    status: ClassVar[int] = 500
    default_message: ClassVar[str] = "Internal error"

    def __init__(
        self,
        message: str | None = None,
        *,
        details: dict[str, Any] | None = None,
        headers: dict[str, str] | None = None,
        persist: bool = False,
    ) -> None:
        self.message = message or self.default_message
        self.details = details or {}
        self.headers = headers
        # The unit of work commits instead of rolling back: for failures that must leave a trace,
        # such as a failed sign-in counting towards lockout or a reused refresh token revoking a
        # session.
        self.persist = persist
        super().__init__(self.message)


class ValidationFailed(GridexError):
    code, status, default_message = "VALIDATION_ERROR", 422, "The request is not valid"


class AuthenticationRequired(GridexError):
    code, status, default_message = "AUTHENTICATION_REQUIRED", 401, "Authentication required"


class InvalidToken(GridexError):
    code, status, default_message = "INVALID_TOKEN", 401, "The token is invalid or expired"


class InvalidCredentials(GridexError):
    code, status, default_message = "INVALID_CREDENTIALS", 401, "Invalid credentials"


class AccountLocked(GridexError):
    code, status, default_message = "ACCOUNT_LOCKED", 423, "The account is locked"


class AccountSuspended(GridexError):
    code, status, default_message = "ACCOUNT_SUSPENDED", 403, "The account is suspended"


class EmailNotVerified(GridexError):
    code, status, default_message = "EMAIL_NOT_VERIFIED", 403, "The email is not verified"


class Forbidden(GridexError):
    code, status, default_message = "FORBIDDEN", 403, "Not allowed"


class NotFound(GridexError):
    code, status, default_message = "NOT_FOUND", 404, "Not found"


class Conflict(GridexError):
    code, status, default_message = "CONFLICT", 409, "Conflict"


class InvalidSignature(GridexError):
    code, status, default_message = "INVALID_SIGNATURE", 401, "The signature is invalid"


class RateLimitExceeded(GridexError):
    code, status, default_message = "RATE_LIMIT_EXCEEDED", 429, "Too many requests"


class PayloadTooLarge(GridexError):
    code, status, default_message = "PAYLOAD_TOO_LARGE", 413, "The request body is too large"


class ServiceUnavailable(GridexError):
    code, status, default_message = "SERVICE_UNAVAILABLE", 503, "A dependency is unavailable"


# Seconds a client is asked to wait when a dependency is down.
RETRY_AFTER_SECONDS = 5


def is_unavailable(exc: BaseException) -> bool:
    """Whether ``exc`` says the database could not be reached or used right now (refused or
    dropped connection, pool exhausted, SQLite locked), as opposed to a bug."""
    if isinstance(exc, DBAPIError):
        return exc.connection_invalidated or isinstance(exc, OperationalError)
    return isinstance(exc, PoolTimeout | DisconnectionError | ConnectionError | TimeoutError)


# SQLSTATE 22021 (character_not_in_repertoire): PostgreSQL cannot store a NUL in text. Inputs
# are checked for it at the edge; this catches a path or parameter that slipped past.
_NUL_IN_TEXT = "22021"


def _is_nul_in_text(exc: BaseException) -> bool:
    return isinstance(exc, DBAPIError) and getattr(exc.orig, "sqlstate", None) == _NUL_IN_TEXT


def unhandled_response(exc: BaseException) -> OrjsonResponse:
    """The answer to an exception no handler claimed: 503 with ``Retry-After`` when a
    dependency is down, 422 for text the database cannot store, else a 500 (a bug, logged with
    its traceback)."""
    if _is_nul_in_text(exc):
        return error_response(
            "VALIDATION_ERROR", 422, "Text must not contain NUL (\\u0000) characters"
        )
    if is_unavailable(exc):
        log.warning("dependency_unavailable", error_type=type(exc).__name__, error=str(exc)[:200])
        return error_response(
            "SERVICE_UNAVAILABLE",
            503,
            "The database is unavailable; try again shortly",
            {"retry_after": RETRY_AFTER_SECONDS},
            headers={"Retry-After": str(RETRY_AFTER_SECONDS)},
        )
    log.error("unhandled_error", error_type=type(exc).__name__, exc_info=exc)
    return error_response("INTERNAL_ERROR", 500, "Internal error")


def error_body(code: str, message: str, details: dict[str, Any] | None = None) -> dict[str, Any]:
    return {
        "error": {"code": code, "message": message, "details": details or {}},
        "request_id": request_id_var.get(),
    }


def error_response(
    code: str,
    status: int,
    message: str,
    details: dict[str, Any] | None = None,
    headers: dict[str, str] | None = None,
) -> OrjsonResponse:
    return OrjsonResponse(error_body(code, message, details), status_code=status, headers=headers)


_HTTP_CODES = {
    401: "AUTHENTICATION_REQUIRED",
    403: "FORBIDDEN",
    404: "NOT_FOUND",
    405: "METHOD_NOT_ALLOWED",
    409: "CONFLICT",
    413: "PAYLOAD_TOO_LARGE",
    429: "RATE_LIMIT_EXCEEDED",
    503: "SERVICE_UNAVAILABLE",
}


def _validation_details(exc: RequestValidationError) -> dict[str, Any]:
    fields = []
    for err in exc.errors():
        fields.append(
            {
                "loc": [str(part) for part in err.get("loc", ())],
                "message": str(err.get("msg", "")),
                "type": str(err.get("type", "")),
            }
        )
    return {"fields": fields}


def install_error_handlers(app: FastAPI) -> None:
    @app.exception_handler(GridexError)
    async def _gridex(_: Request, exc: GridexError) -> OrjsonResponse:
        return error_response(exc.code, exc.status, exc.message, exc.details, exc.headers)

    @app.exception_handler(RequestValidationError)
    async def _validation(_: Request, exc: RequestValidationError) -> OrjsonResponse:
        details = _validation_details(exc)
        if any(f["type"] == "json_invalid" for f in details["fields"]):
            message = "The request body is not valid JSON"
        else:
            message = "The request is not valid"
        return error_response("VALIDATION_ERROR", 422, message, details)

    @app.exception_handler(StarletteHTTPException)
    async def _http(_: Request, exc: StarletteHTTPException) -> OrjsonResponse:
        if exc.status_code == 400:
            # The framework's "error parsing the body" (bytes that are not UTF-8 JSON, a broken
            # multipart): the API answers every unreadable body as a validation error.
            return error_response("VALIDATION_ERROR", 422, "The request body could not be read")
        code = _HTTP_CODES.get(exc.status_code, "INTERNAL_ERROR")
        if exc.status_code == 404:
            message = "No such resource"
        elif exc.status_code == 405:
            message = "No such route for this method"
        else:
            message = str(exc.detail)
        return error_response(code, exc.status_code, message, headers=getattr(exc, "headers", None))

    # Exceptions no handler claims are answered by ``core.middleware.UnhandledErrorMiddleware``,
    # inside the request context, so they keep the request id and every header.
