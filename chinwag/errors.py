"""Domain errors and the one handler that turns them into `{"detail", "code"}` answers.

Services raise these; routes never build `HTTPException`s. A WebSocket route maps the same errors to `error` frames.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable
from typing import Any

import asyncpg
import orjson
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from pydantic import BaseModel
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.types import Send

logger = logging.getLogger(__name__)


class ChinwagError(Exception):
    """Base of every error a client may see. `code` is stable; `detail` is for humans."""

    status_code = 400
    code = "bad_request"
    retryable = False

    def __init__(self, detail: str | None = None, *, headers: dict[str, str] | None = None) -> None:
        self.detail = detail or self.__class__.__doc__ or self.code
        self.headers = headers
        super().__init__(self.detail)


class BadRequest(ChinwagError):
    """The request is not valid."""

    status_code = 400
    code = "bad_request"


class Unauthorized(ChinwagError):
    """Authentication is required."""

    status_code = 401
    code = "unauthorized"


class InvalidCredentials(Unauthorized):
    """Wrong email or password."""

    code = "invalid_credentials"


class InvalidToken(Unauthorized):
    """The token is invalid or expired."""

    code = "invalid_token"


class AccountDisabled(InvalidToken):
    """This account is disabled: ask an administrator."""

    code = "account_disabled"


class Forbidden(ChinwagError):
    """Not allowed."""

    status_code = 403
    code = "forbidden"


class RegistrationClosed(Forbidden):
    """Registration is closed on this server."""

    code = "registration_closed"


class NotFound(ChinwagError):
    """Not found."""

    status_code = 404
    code = "not_found"


class Conflict(ChinwagError):
    """The resource already exists."""

    status_code = 409
    code = "conflict"


class Busy(ChinwagError):
    """A run is active in this session: interrupt it first."""

    status_code = 409
    code = "busy"
    retryable = True


class PayloadTooLarge(ChinwagError):
    """The upload is too large."""

    status_code = 413
    code = "too_large"


class QuotaExceeded(PayloadTooLarge):
    """The user's storage quota is used up: delete files to make room."""

    code = "quota_exceeded"


class UnsupportedMediaType(ChinwagError):
    """This file type is not allowed."""

    status_code = 415
    code = "unsupported_type"


class RateLimited(ChinwagError):
    """Too many requests: try again later."""

    status_code = 429
    code = "rate_limited"
    retryable = True

    def __init__(self, detail: str | None = None, *, retry_after: int = 60) -> None:
        self.retry_after = max(1, retry_after)
        super().__init__(detail, headers={"Retry-After": str(self.retry_after)})


class InsufficientStorage(ChinwagError):
    """The server's disk is full: nothing was stored."""

    status_code = 507
    code = "insufficient_storage"
    retryable = True


class ServiceUnavailable(ChinwagError):
    """A backing service is unavailable."""

    status_code = 503
    code = "unavailable"
    retryable = True


# What a database (or other backing service) that is down, restarting, full or too slow to lend a connection
# raises: the request was fine, it may be retried. `TimeoutError` is also what a pool acquire that waited too long
# raises.
UNAVAILABLE_ERRORS: tuple[type[Exception], ...] = (
    OSError,
    asyncpg.PostgresConnectionError,
    asyncpg.InterfaceError,
    asyncpg.TooManyConnectionsError,
    asyncpg.exceptions.OperatorInterventionError,
)
RETRY_AFTER_S = 5


class ErrorBody(BaseModel):
    """Every error answer (422 adds FastAPI's list of problems in `detail`)."""

    detail: str
    code: str


_DESCRIPTIONS = {
    400: "Bad request",
    401: "No valid credential (`unauthorized`, `invalid_token`, `invalid_credentials`, `account_disabled`)",
    403: "Not allowed (`forbidden`, `registration_closed`)",
    404: "Not found, or another user's",
    409: "Conflict (`conflict`, `busy`)",
    413: "Too large (`too_large`, `quota_exceeded`)",
    415: "Type not allowed",
    429: "Rate limited: see Retry-After",
    503: "A backing service is unavailable: see Retry-After",
}
# What any route may answer: a body past the cap, a limit, a database that is down.
COMMON_ERRORS = (400, 413, 429, 503)


def error_responses(*statuses: int) -> dict[int | str, dict[str, Any]]:
    """OpenAPI `responses=` for a router or route: these statuses and the common ones, each with `ErrorBody`."""
    return {
        status: {"model": ErrorBody, "description": _DESCRIPTIONS[status]}
        for status in sorted({*COMMON_ERRORS, *statuses})
    }


def error_body(detail: str, code: str) -> dict[str, str]:
    return {"detail": detail, "code": code}


async def send_error(
    send: Send,
    status: int,
    detail: str,
    code: str,
    *,
    headers: Iterable[tuple[str, str]] = (),
    close: bool = False,
) -> None:
    """Answer `{"detail", "code"}` straight from ASGI middleware (before the app's own handlers)."""
    body = orjson.dumps(error_body(detail, code))
    raw = [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]
    raw += [(k.lower().encode("latin-1"), v.encode("latin-1")) for k, v in headers]
    if close:  # the rest of the body is never read: the connection cannot carry another request
        raw.append((b"connection", b"close"))
    await send({"type": "http.response.start", "status": status, "headers": raw})
    await send({"type": "http.response.body", "body": body})


_HTTP_CODES = {
    400: "bad_request",
    401: "unauthorized",
    403: "forbidden",
    404: "not_found",
    405: "method_not_allowed",
    409: "conflict",
    413: "too_large",
    422: "validation_error",
    503: "unavailable",
    415: "unsupported_type",
    429: "rate_limited",
}


def install_error_handlers(app: FastAPI) -> None:
    """One place that shapes every error answer; no stack trace ever reaches a client."""

    @app.exception_handler(ChinwagError)
    async def _domain(request: Request, exc: ChinwagError) -> JSONResponse:
        return JSONResponse(error_body(exc.detail, exc.code), status_code=exc.status_code, headers=exc.headers)

    @app.exception_handler(StarletteHTTPException)
    async def _http(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        code = _HTTP_CODES.get(exc.status_code, "error")
        return JSONResponse(
            error_body(str(exc.detail), code),
            status_code=exc.status_code,
            headers=getattr(exc, "headers", None),
        )

    @app.exception_handler(RequestValidationError)
    async def _validation(request: Request, exc: RequestValidationError) -> JSONResponse:
        # FastAPI's 422 shape, made JSON-safe (errors may carry bytes or exceptions in `ctx`/`input`).
        errors = []
        for err in exc.errors():
            clean = {k: v for k, v in err.items() if k in ("type", "loc", "msg")}
            errors.append(clean)
        return JSONResponse({"detail": errors, "code": "validation_error"}, status_code=422)

    async def _unavailable(request: Request, exc: Exception) -> JSONResponse:
        logger.warning("%s %s: a backing service is unavailable: %r", request.method, request.url.path, exc)
        return JSONResponse(
            error_body("The service is unavailable right now: try again shortly.", "unavailable"),
            status_code=503,
            headers={"Retry-After": str(RETRY_AFTER_S)},
        )

    for error in UNAVAILABLE_ERRORS:
        app.add_exception_handler(error, _unavailable)

    @app.exception_handler(Exception)
    async def _unexpected(request: Request, exc: Exception) -> JSONResponse:
        logger.exception("unhandled error on %s %s", request.method, request.url.path)
        return JSONResponse(error_body("Internal server error", "internal"), status_code=500)
