"""Bearer tokens and API keys to a `User`, for HTTP and WebSocket alike.

The middleware never refuses a request itself: it records who the caller is (`scope["state"]["user"]`, a `User` or
None) and, for a token that did not check out, why (`scope["state"]["auth_error"]`). Routes that need a user say so
with the `CurrentUser` dependency; the chat WebSocket calls `user_from_scope` and closes with 4401 itself.
"""

from __future__ import annotations

import logging
import re
from typing import TYPE_CHECKING, Any
from urllib.parse import parse_qsl

import asyncpg
from starlette.types import ASGIApp, Receive, Scope, Send

from chinwag.errors import InvalidToken, send_error
from chinwag.observability.context import user_id_var
from chinwag.schemas.users import User

if TYPE_CHECKING:
    from chinwag.services.auth_service import AuthService

logger = logging.getLogger(__name__)

MAX_TOKEN_LENGTH = 4096
# RFC 6750's b64token: what JWTs and chinwag's keys are made of.
_TOKEN = re.compile(r"[A-Za-z0-9\-._~+/]+=*")


def bearer_token(scope: Scope) -> str | None:
    """The token of `Authorization: Bearer ...`, or for a WebSocket also of `?token=`; None when absent, "" when
    malformed. A credential is the exact string sent or nothing: surrounding or inner whitespace, other characters
    than a token's, or two `token` parameters make it malformed, never trimmed into a valid one."""
    for name, value in scope.get("headers", ()):
        if name == b"authorization":
            scheme, _, token = value.decode("latin-1").partition(" ")
            return token if scheme.lower() == "bearer" and _TOKEN.fullmatch(token) else ""
    if scope["type"] == "websocket":
        tokens = [v for k, v in parse_qsl(scope.get("query_string", b"").decode("latin-1")) if k == "token"]
        if tokens:
            return tokens[0] if len(tokens) == 1 and _TOKEN.fullmatch(tokens[0]) else ""
    return None


def user_from_scope(scope: Scope) -> User | None:
    """The authenticated user of a request or WebSocket, or None (then `auth_error_from_scope` may say why)."""
    user: User | None = scope.get("state", {}).get("user")
    return user


def auth_unavailable_from_scope(scope: Scope) -> bool:
    """True when the caller could not be checked because the database was unreachable (not a bad credential)."""
    return bool(scope.get("state", {}).get("auth_unavailable"))


def auth_error_from_scope(scope: Scope) -> str | None:
    error: str | None = scope.get("state", {}).get("auth_error")
    return error


class AuthMiddleware:
    """Resolves the caller once per request or WebSocket, through `app.state.auth` (an `AuthService`)."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] not in ("http", "websocket"):
            await self.app(scope, receive, send)
            return
        state: dict[str, Any] = scope.setdefault("state", {})
        state["user"] = None
        state["auth_error"] = None
        token = bearer_token(scope)
        if token is not None:
            if not token or len(token) > MAX_TOKEN_LENGTH:
                state["auth_error"] = "The bearer token is missing or malformed."
            else:
                auth: AuthService = scope["app"].state.auth
                try:
                    state["user"] = await auth.authenticate(token)
                except InvalidToken as exc:
                    state["auth_error"] = exc.detail
                    state["auth_error_code"] = exc.code
                except (OSError, asyncpg.PostgresError, asyncpg.InterfaceError, TimeoutError):
                    logger.warning("cannot check a bearer token: the database is unavailable", exc_info=True)
                    if scope["type"] == "http":
                        await _unavailable(send)
                        return
                    state["auth_error"] = "Authentication is unavailable right now."
                    state["auth_unavailable"] = True
        user = state["user"]
        if user is None:
            await self.app(scope, receive, send)
            return
        # Every log line of this request (and of any run it starts) names the user.
        token_var = user_id_var.set(user.id)
        try:
            await self.app(scope, receive, send)
        finally:
            user_id_var.reset(token_var)


async def _unavailable(send: Send) -> None:
    await send_error(
        send, 503, "The database is unavailable: try again shortly.", "unavailable", headers=[("Retry-After", "5")]
    )
