"""`/ws/chat/{session_id}`: the chat socket (CONTRACT.md section 3).

Accept first, then authenticate: a bad or missing token closes with 4401, a session that is not the caller's with
4404, before any other frame. Then `ready`, and two loops side by side: frames from the client, and the socket's
send queue (fed by the session's room). Keep-alive: uvicorn sends protocol pings every `ws_ping_interval` (20 s,
set in `chinwag serve`; uvicorn's default too), which is what proxies see; frames over `ws_max_size` (1 MiB) are
closed with 1009 and text that is not UTF-8 with 1007, by `websocket/protocol.py` (uvicorn's protocol, made to
deliver those close frames).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging

from fastapi import APIRouter, WebSocket

from chinwag.dependencies import Auth, Chat, Connections, Sessions
from chinwag.errors import UNAVAILABLE_ERRORS, BadRequest, ChinwagError, InvalidToken, NotFound
from chinwag.middleware.auth import auth_unavailable_from_scope, bearer_token, user_from_scope
from chinwag.observability.context import session_id_var
from chinwag.schemas.users import User
from chinwag.services.auth_service import AuthService
from chinwag.services.branches import BranchStart
from chinwag.services.chat_service import ChatService
from chinwag.shutdown import Drain
from chinwag.websocket.events import (
    ActiveRun,
    EditFrame,
    ErrorCode,
    InterruptFrame,
    MessageFrame,
    PingFrame,
    Pong,
    Ready,
    RegenerateFrame,
    ResumeFrame,
    check_content,
    encode,
    error_frame,
    parse_client_frame,
)
from chinwag.websocket.manager import CLOSE_TOO_SLOW, Connection, ConnectionManager, ResumeUnavailable

logger = logging.getLogger(__name__)

router = APIRouter(prefix="/ws", tags=["chat"])

CLOSE_UNAUTHORIZED = 4401
CLOSE_NOT_FOUND = 4404
CLOSE_TRY_AGAIN_LATER = 1013
CLOSE_TOO_MANY_SOCKETS = 4429
_CODES: dict[str, ErrorCode] = {
    "bad_request": "bad_request",
    "busy": "busy",
    "not_found": "not_found",
    "rate_limited": "rate_limited",
    "unavailable": "unavailable",
}
_PONG = encode(Pong())


@router.websocket("/chat/{session_id}")
async def chat_socket(
    websocket: WebSocket, session_id: str, chat: Chat, sessions: Sessions, manager: Connections, auth: Auth
) -> None:
    """The chat socket of one session."""
    await websocket.accept()
    user = user_from_scope(websocket.scope)
    if user is None:
        if auth_unavailable_from_scope(websocket.scope):
            # Not a verdict on the token: 4401 would make the client throw away credentials that still work.
            await websocket.close(CLOSE_TRY_AGAIN_LATER, "the database is unavailable: reconnect shortly")
        else:
            await websocket.close(CLOSE_UNAUTHORIZED, "authentication required")
        return
    try:
        session = await sessions.get(user_id=user.id, session_id=session_id)
    except NotFound:
        await websocket.close(CLOSE_NOT_FOUND, "session not found")
        return
    except UNAVAILABLE_ERRORS:
        logger.warning("chat socket: the database is unavailable; closing with 1013")
        await websocket.close(CLOSE_TRY_AGAIN_LATER, "the database is unavailable: reconnect shortly")
        return
    limit = chat.settings.max_sockets_per_user
    if not manager.claim_user_slot(user.id, limit=limit):
        with contextlib.suppress(Exception):
            await websocket.send_text(
                error_frame("rate_limited", f"At most {limit} chat sockets per user: close one first.", retryable=True)
            )
            await websocket.close(CLOSE_TOO_MANY_SOCKETS, "too many sockets")
        return
    session_id_var.set(session.id)  # this socket's task (and the runs it starts) log the session
    try:
        await _open_socket(websocket, session.id, chat=chat, manager=manager, auth=auth, user=user)
    finally:
        manager.release_user_slot(user.id)


async def _open_socket(
    websocket: WebSocket,
    session_id: str,
    *,
    chat: ChatService,
    manager: ConnectionManager,
    auth: AuthService,
    user: User,
) -> None:
    """The socket's life once it is accepted, authenticated and counted: `ready`, then frames until it ends."""
    conn = Connection(websocket)
    credential: Credential | None = None
    # Join before looking up the active run: a run that starts from here on reaches this socket from seq 1.
    await manager.join(session_id, conn)
    try:
        try:
            active = await chat.active_run(session_id=session_id)
        except UNAVAILABLE_ERRORS:
            logger.warning("chat socket: the database is unavailable; closing with 1013")
            with contextlib.suppress(Exception):
                await websocket.close(CLOSE_TRY_AGAIN_LATER, "the database is unavailable: reconnect shortly")
            return
        ready = Ready(
            session_id=session_id,
            active_run=None if active is None else ActiveRun(run_id=active.run_id, last_seq=active.last_seq),
        )
        conn.send_first(encode(ready))
        if active is not None and not conn.follows(active.run_id):
            conn.await_resume(active.run_id, last_seq=active.last_seq)
        credential = Credential(auth, token=bearer_token(websocket.scope) or "", user_id=user.id)
        await _serve(websocket, conn, chat=chat, user=user, session_id=session_id, credential=credential)
    finally:
        await manager.leave(session_id, conn)
        conn.close()
    if credential is not None and credential.revoked:
        with contextlib.suppress(Exception):
            async with asyncio.timeout(1):
                await websocket.close(CLOSE_UNAUTHORIZED, "the credential was revoked or has expired")
        return
    if conn.too_slow:
        with contextlib.suppress(Exception):
            async with asyncio.timeout(1):
                await websocket.close(CLOSE_TOO_SLOW, "too slow: resume to catch up")


class Credential:
    """The token a socket signed in with, checked again when it starts a run and every `ws_auth_recheck_s`: a
    deleted API key or user, or an expired access token, ends the socket (4401) instead of serving on."""

    def __init__(self, auth: AuthService, *, token: str, user_id: str) -> None:
        self._auth = auth
        self._token = token
        self._user_id = user_id
        self.revoked = False

    async def still_valid(self) -> bool:
        try:
            user = await self._auth.authenticate(self._token)
        except InvalidToken:
            self.revoked = True
        except UNAVAILABLE_ERRORS:
            # Not a verdict on the credential: keep the socket, the next check decides.
            logger.warning("chat socket: cannot re-check a credential, the database is unavailable")
        else:
            self.revoked = user.id != self._user_id
        return not self.revoked


async def _serve(
    websocket: WebSocket, conn: Connection, *, chat: ChatService, user: User, session_id: str, credential: Credential
) -> None:
    """Run the send queue, the receive loop and the credential's re-checks side by side until the client leaves,
    cannot keep up, or its credential stops working."""
    drain: Drain = websocket.app.state.drain
    idle = False

    async def send_loop() -> None:
        try:
            await conn.run_sender()
        except Exception:
            conn.close()  # the peer is gone: stop receiving too
            if idle:
                receiver.cancel()

    async def receive_loop() -> None:
        nonlocal idle
        try:
            while not conn.closed:
                idle = True
                message = await websocket.receive()
                idle = False
                if message["type"] == "websocket.disconnect":
                    return
                text = message.get("text")
                if text is None:
                    conn.send(error_frame("bad_request", "binary frames are not accepted: send JSON text"))
                    continue
                await _handle(
                    text, conn, chat=chat, user=user, session_id=session_id, credential=credential, drain=drain
                )
                if credential.revoked:
                    return
        finally:
            conn.close()
            checker.cancel()

    recheck_now = asyncio.Event()

    async def check_loop() -> None:
        while not conn.closed:
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(chat.settings.ws_auth_recheck_s):
                    await recheck_now.wait()
            recheck_now.clear()
            if not await credential.still_valid():
                conn.close()
                sender.cancel()
                if idle:
                    receiver.cancel()
                return

    def kick() -> None:
        # A frame being handled (a run starting, say) is finished first; a receive in progress is abandoned.
        sender.cancel()
        if idle:
            receiver.cancel()

    async with asyncio.TaskGroup() as tg:
        sender = tg.create_task(send_loop())
        receiver = tg.create_task(receive_loop())
        checker = tg.create_task(check_loop())
        conn.on_kick(kick)
        conn.on_recheck(recheck_now.set)


async def _handle(
    text: str,
    conn: Connection,
    *,
    chat: ChatService,
    user: User,
    session_id: str,
    credential: Credential,
    drain: Drain,
) -> None:
    """One client frame; a domain error becomes an `error` frame to this socket only."""
    try:
        frame = parse_client_frame(text)
        if isinstance(frame, MessageFrame):
            check_content(frame.content, max_chars=chat.settings.max_message_chars)
            drain.check()  # restarting: no new run here (the client sends it again, elsewhere or later)
            await chat.start_run(
                user_id=user.id,
                session_id=session_id,
                content=frame.content,
                client_id=frame.client_id,
                file_ids=frame.file_ids,
                still_allowed=credential.still_valid,
            )
        elif isinstance(frame, EditFrame | RegenerateFrame):
            if isinstance(frame, EditFrame):
                check_content(frame.content, max_chars=chat.settings.max_message_chars)
            edit = isinstance(frame, EditFrame)
            await chat.start_run(
                user_id=user.id,
                session_id=session_id,
                content=frame.content if isinstance(frame, EditFrame) else "",
                client_id=frame.client_id,
                file_ids=frame.file_ids if isinstance(frame, EditFrame) else (),
                branch=BranchStart(kind="edit" if edit else "regenerate", seq=frame.seq),
                still_allowed=credential.still_valid,
            )
        elif isinstance(frame, InterruptFrame):
            await chat.interrupt(session_id=session_id)
        elif isinstance(frame, ResumeFrame):
            try:
                await conn.resume(chat.buffers, session_id=session_id, run_id=frame.run_id, after_seq=frame.after_seq)
            except ResumeUnavailable:
                conn.send(
                    error_frame(
                        "resume_unavailable",
                        "This run's events are no longer kept: read the history over REST.",
                        run_id=frame.run_id,
                    )
                )
        elif isinstance(frame, PingFrame):
            conn.send(_PONG)
    except ChinwagError as exc:
        conn.send(
            error_frame(
                _CODES.get(exc.code, "bad_request" if isinstance(exc, BadRequest) else "internal"),
                exc.detail,
                retryable=exc.retryable,
            )
        )
    except UNAVAILABLE_ERRORS:
        logger.warning("chat socket: the database is unavailable in session %s", session_id)
        conn.send(
            error_frame("unavailable", "The service is unavailable right now: try again shortly.", retryable=True)
        )
    except Exception:
        logger.exception("chat socket: frame handling failed in session %s", session_id)
        conn.send(error_frame("internal", "Internal server error", retryable=True))
