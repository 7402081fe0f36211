"""A cap on every request body, enforced as it streams in, and no body read for a caller who will be refused.

`CHINWAG_MAX_BODY_BYTES` bounds every body except the routes that stream their own (uploads, with their own cap).
A `Content-Length` past the cap is answered 413 before a byte of the body is read; a chunked body is counted as it
arrives and refused once it passes the cap. A request without a valid credential to a route that needs one gets an
empty body in place of its own, so the route's 401 comes without the server ever reading what was sent.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Any

from fastapi.dependencies.models import Dependant
from fastapi.routing import APIRoute, iter_route_contexts
from starlette.exceptions import HTTPException
from starlette.routing import compile_path
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from chinwag.errors import send_error


def _needs_user(dependant: Dependant, current_user: Any) -> bool:
    pending = [dependant]
    while pending:
        dependant = pending.pop()
        if dependant.call is current_user:
            return True
        pending.extend(dependant.dependencies)
    return False


async def _empty_body() -> Message:
    return {"type": "http.request", "body": b"", "more_body": False}


class BodyLimitMiddleware:
    """Caps request bodies at `max_bytes`; routes named in `own_cap` (their endpoint functions) stream and cap
    their bodies themselves. A route needs a user when `current_user` (the dependency) is among its dependencies.
    Sits inside `AuthMiddleware`: it reads who the caller is from the scope."""

    def __init__(
        self, app: ASGIApp, *, max_bytes: int, current_user: Callable[..., Any], own_cap: tuple[Any, ...] = ()
    ) -> None:
        self.app = app
        self.max_bytes = max_bytes
        self.current_user = current_user
        self.own_cap = own_cap
        self._table: list[tuple[re.Pattern[str], set[str], tuple[bool, bool]]] | None = None

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        needs_user, own_cap = self._route_of(scope)
        state = scope.get("state", {})
        if needs_user and state.get("user") is None:
            await self.app(scope, _empty_body, send)
            return
        if own_cap:
            await self.app(scope, receive, send)
            return
        length = _content_length(scope)
        if length is not None and length > self.max_bytes:
            await send_error(send, 413, self._too_large(), "too_large", close=True)
            return
        await self.app(scope, self._counting(receive), send)

    def _too_large(self) -> str:
        return f"The request body is larger than {self.max_bytes} bytes."

    def _counting(self, receive: Receive) -> Receive:
        seen = 0

        async def counted() -> Message:
            nonlocal seen
            message = await receive()
            if message["type"] == "http.request":
                seen += len(message.get("body", b""))
                if seen > self.max_bytes:
                    # FastAPI re-raises an HTTPException met while reading the body: the error handler answers it.
                    raise HTTPException(413, self._too_large(), headers={"Connection": "close"})
            return message

        return counted

    def _route_of(self, scope: Scope) -> tuple[bool, bool]:
        if self._table is None:
            self._table = self._build_table(scope["app"])
        path, method, root = scope["path"], scope["method"], scope.get("root_path", "")
        if root and path.startswith(root):
            path = path[len(root) :]
        for pattern, methods, flags in self._table:
            if method in methods and pattern.fullmatch(path):
                return flags
        return False, False

    def _build_table(self, app: Any) -> list[tuple[re.Pattern[str], set[str], tuple[bool, bool]]]:
        """The app's HTTP routes, each with whether it needs a user and whether it caps its own body (built at the
        first request, once every router is included)."""
        table = []
        for route in iter_route_contexts(app.routes):
            if not isinstance(route.original_route, APIRoute) or route.path is None:
                continue
            pattern, _, _ = compile_path(route.path)
            flags = (_needs_user(route.dependant, self.current_user), route.endpoint in self.own_cap)
            table.append((pattern, set(route.methods or ()), flags))
        return table


def _content_length(scope: Scope) -> int | None:
    for name, value in scope.get("headers", ()):
        if name == b"content-length":
            text = value.decode("latin-1").strip()
            return int(text) if text.isdigit() else None
    return None
