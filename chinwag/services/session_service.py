"""Sessions of a user, their Layer 2 history, and search over it.

`SessionService.get` is the ownership check other services use: another user's session is `NotFound`, exactly like
one that does not exist. The Layer 2 append API (`append_message`, `update_message`, `add_usage`) is what the chat
service calls while a run streams; it takes ids it has already checked.
"""

from __future__ import annotations

import builtins
import logging
import uuid
from typing import Protocol

import asyncpg

from chinwag.config import Settings
from chinwag.db import messages as messages_db
from chinwag.db import sessions as sessions_db
from chinwag.db.pool import statement_timeout
from chinwag.db.sessions import ContextWindow, Executor
from chinwag.errors import BadRequest, NotFound, ServiceUnavailable
from chinwag.llm.catalog import ModelCatalog
from chinwag.schemas.messages import FinishReason, Message, MessageStatus, Role, SearchResults, ToolCall
from chinwag.schemas.sessions import ModelSettings, Session, SessionPage, SessionUpdate, TokenUsage
from chinwag.services.message_utils import SessionCursor, parse_id
from chinwag.services.rate_limit import ConcurrencySlots

logger = logging.getLogger(__name__)


class SessionFilesRemover(Protocol):
    """Removes the bytes of a deleted session's files (the rows are gone already, by cascade)."""

    async def remove_session_files(self, *, session_id: str, storage_keys: list[str]) -> None: ...


class SessionService:
    """Sessions, their messages and search, for one user at a time (every read method takes `user_id`)."""

    def __init__(
        self,
        db: Executor,
        settings: Settings,
        *,
        files: SessionFilesRemover | None = None,
        window: ContextWindow | None = None,
        search_slots: ConcurrencySlots | None = None,
    ) -> None:
        self._db = db
        self._settings = settings
        self._files = files
        self._search_slots = search_slots or ConcurrencySlots()
        # The app passes its one catalog's lookup; building a catalog here is for callers outside a request.
        self._window = window or ModelCatalog(settings).context_window

    def _check_model(self, model: str) -> str:
        if model not in self._settings.model_ids:
            raise BadRequest(f"unknown model {model!r}: choose one of {', '.join(self._settings.model_ids)}")
        return model

    async def create(
        self,
        *,
        user_id: str,
        title: str = "",
        model: str | None = None,
        instructions: str = "",
        mcp_servers: builtins.list[str] | None = None,
        settings: ModelSettings | None = None,
    ) -> Session:
        return await sessions_db.insert_session(
            self._db,
            user_id=parse_id(user_id, what="user"),
            title=title,
            model=self._check_model(model) if model is not None else self._settings.resolved_default_model,
            instructions=instructions,
            mcp_servers=mcp_servers,
            settings=settings.stored() if settings is not None else {},
            window=self._window,
        )

    async def list(self, *, user_id: str, limit: int = 50, cursor: str | None = None) -> SessionPage:
        """A page of the user's sessions: pinned first, then most recently active."""
        after = None
        if cursor is not None:
            key = SessionCursor.decode(cursor)
            after = (key.pinned, key.updated_at, key.id)
        items, more = await sessions_db.list_sessions(
            self._db, user_id=parse_id(user_id, what="user"), limit=limit, after=after, window=self._window
        )
        next_cursor = None
        if more and items:
            last = items[-1]
            next_cursor = SessionCursor(pinned=last.pinned, updated_at=last.updated_at, id=uuid.UUID(last.id)).encode()
        return SessionPage(items=items, next_cursor=next_cursor)

    async def get(self, *, user_id: str, session_id: str) -> Session:
        """The session, if it is the user's; otherwise `NotFound`."""
        session = await sessions_db.get_session(
            self._db, user_id=parse_id(user_id, what="user"), session_id=parse_id(session_id), window=self._window
        )
        if session is None:
            raise NotFound("session not found")
        return session

    async def check_owner(self, *, user_id: str, session_id: str) -> uuid.UUID:
        """`NotFound` unless the session is the user's; returns its id."""
        sid = parse_id(session_id)
        if not await sessions_db.session_owned(self._db, user_id=parse_id(user_id, what="user"), session_id=sid):
            raise NotFound("session not found")
        return sid

    async def update(self, *, user_id: str, session_id: str, update: SessionUpdate) -> Session:
        changes = update.changes()
        if "model" in changes:
            self._check_model(changes["model"])
        if not changes:
            return await self.get(user_id=user_id, session_id=session_id)
        session = await sessions_db.update_session(
            self._db,
            user_id=parse_id(user_id, what="user"),
            session_id=parse_id(session_id),
            changes=changes,
            window=self._window,
        )
        if session is None:
            raise NotFound("session not found")
        return session

    async def delete(self, *, user_id: str, session_id: str) -> None:
        """Delete the session with its messages, context, runs and files."""
        storage_keys = await sessions_db.delete_session(
            self._db, user_id=parse_id(user_id, what="user"), session_id=parse_id(session_id)
        )
        if storage_keys is None:
            raise NotFound("session not found")
        if self._files is not None:
            await self._files.remove_session_files(session_id=session_id, storage_keys=storage_keys)

    async def messages_json(
        self, *, user_id: str, session_id: str, limit: int = 50, before: int | None = None, after: int | None = None
    ) -> bytes:
        """A page of the session's history, oldest first, encoded as `MessagePage` JSON (the history route's hot path;
        see `db.messages.page_messages_json`)."""
        if before is not None and after is not None:
            raise BadRequest("pass either before or after, not both")
        page = await messages_db.page_messages_json(
            self._db,
            user_id=parse_id(user_id, what="user"),
            session_id=parse_id(session_id),
            limit=limit,
            before=before,
            after=after,
        )
        if page is None:
            raise NotFound("session not found")
        return page

    async def search(self, *, user_id: str, query: str, limit: int = 20) -> SearchResults:
        """Full-text search over the user's own messages. Its cost depends on what was typed, so it is bounded:
        `search_concurrency_per_user` at once per user (429 past it) and `search_timeout_s` each (then 503)."""
        settings = self._settings
        busy = f"At most {settings.search_concurrency_per_user} searches at once: wait for one to finish."
        async with self._search_slots.hold(user_id, limit=settings.search_concurrency_per_user, detail=busy):
            try:
                async with statement_timeout(self._db, settings.search_timeout_s) as conn:
                    hits = await messages_db.search_messages(
                        conn, user_id=parse_id(user_id, what="user"), query=query, limit=limit
                    )
            except asyncpg.QueryCanceledError:
                raise ServiceUnavailable(
                    "The search took too long: try more specific words.", headers={"Retry-After": "5"}
                ) from None
        return SearchResults(items=hits)

    # Layer 2 append API, for the chat service.

    async def append_message(
        self,
        *,
        session_id: str,
        role: Role,
        content: str,
        status: MessageStatus = "complete",
        tool: ToolCall | None = None,
        run_id: str | None = None,
        client_id: str | None = None,
        usage: TokenUsage | None = None,
    ) -> Message:
        """Persist a message with the next gap-free `seq`; `NotFound` if the session is gone."""
        try:
            return await messages_db.append_message(
                self._db,
                session_id=parse_id(session_id),
                role=role,
                content=content,
                status=status,
                tool=tool,
                run_id=run_id,
                client_id=client_id,
                usage=usage,
            )
        except LookupError:
            raise NotFound("session not found") from None

    async def update_message(
        self,
        *,
        message_id: str,
        content: str,
        status: MessageStatus,
        usage: TokenUsage | None = None,
        tool: ToolCall | None = None,
        finish_reason: FinishReason | None = None,
        reasoning: str | None = None,
    ) -> Message:
        """Rewrite a message's content and status (checkpoint or end of a run); `NotFound` if it is gone."""
        message = await messages_db.update_message(
            self._db,
            message_id=parse_id(message_id, what="message"),
            content=content,
            status=status,
            usage=usage,
            tool=tool,
            finish_reason=finish_reason,
            reasoning=reasoning,
        )
        if message is None:
            raise NotFound("message not found")
        return message

    async def add_usage(
        self, *, session_id: str, input_tokens: int, output_tokens: int, context_tokens: int | None = None
    ) -> None:
        """Add a run's usage to the session's totals and set its context size."""
        await messages_db.add_usage(
            self._db,
            session_id=parse_id(session_id),
            input_tokens=input_tokens,
            output_tokens=output_tokens,
            context_tokens=context_tokens,
        )
