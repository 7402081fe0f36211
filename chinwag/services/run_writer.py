"""Everything one run writes to PostgreSQL (Layer 2 and its run row), and what it does when the database is away.

Each write is retried briefly (`run_store.with_retries`). Once the database proved away in this run (`down`), each
write left is tried once: the run ends now rather than hold its sockets, and what was not written waits in
`PendingEnds` until the database takes it.
"""

from __future__ import annotations

import contextlib
import logging
import uuid
from collections.abc import Awaitable, Callable
from typing import TypeVar

from chinwag.db import messages as messages_db
from chinwag.db import runs as runs_db
from chinwag.errors import ServiceUnavailable
from chinwag.schemas.messages import MessageStatus, ToolCall
from chinwag.schemas.sessions import TokenUsage
from chinwag.services.agent_builder import RunDeps
from chinwag.services.run_store import UnrecordedEnd, is_transient, with_retries
from chinwag.services.session_service import SessionService
from chinwag.websocket.events import FinishReason

logger = logging.getLogger(__name__)

T = TypeVar("T")

STORE_FAILED = (
    "The database could not be reached: the run was stopped. Its answer so far is kept and saved once the database"
    " is back."
)

MESSAGE_STATUS: dict[FinishReason, MessageStatus] = {
    "stop": "complete",
    "length": "complete",
    "max_turns": "complete",
    "interrupted": "interrupted",
    "error": "error",
}
RUN_STATUS: dict[FinishReason, runs_db.RunStatus] = {
    "stop": "complete",
    "length": "complete",
    "max_turns": "max_turns",
    "interrupted": "interrupted",
    "error": "error",
}


class StoreUnavailable(ServiceUnavailable):
    """The database stayed away while a run streamed."""


class RunWriter:
    """The writes of one run, in the order a run makes them: checkpoints of the answer while it streams, a `tool`
    message per tool call, then at its end the answer, the session's usage and the run slot."""

    def __init__(self, deps: RunDeps, sessions: SessionService, *, run_id: str, session_id: str) -> None:
        self.deps = deps
        self.sessions = sessions
        self.run_id = run_id
        self.session_id = session_id
        self.down = False
        """The database failed past the retries in this run: the writes left are tried once each."""

    async def write(self, op: Callable[[], Awaitable[T]], *, what: str) -> T:
        try:
            return await with_retries(op, what=f"run {self.run_id}: {what}", delays=() if self.down else None)
        except Exception as exc:
            if is_transient(exc):
                self.down = True
            raise

    async def checkpoint(self, message_id: str, text: str, *, reasoning: str | None = None) -> None:
        """The answer so far, stored while it streams. A database that stays away past the brief retries ends the
        run (`StoreUnavailable`): it could not keep what it streams."""
        try:
            await self.write(
                lambda: self.sessions.update_message(
                    message_id=message_id, content=text, status="streaming", reasoning=reasoning
                ),
                what="checkpoint",
            )
        except Exception as exc:
            if is_transient(exc):
                raise StoreUnavailable(STORE_FAILED) from exc
            raise

    async def tool_message(self, tool: ToolCall, *, interrupted: bool = False) -> None:
        await self.write(
            lambda: self.sessions.append_message(
                session_id=self.session_id,
                role="tool",
                content=tool.output or "",
                status="interrupted" if interrupted else "complete",
                tool=tool,
                run_id=self.run_id,
            ),
            what="tool message",
        )

    async def answer(
        self, message_id: str, *, text: str, finish: FinishReason, usage: TokenUsage, reasoning: str | None = None
    ) -> bool:
        """The assistant message's text, status and usage; False when the database did not take them (then at
        least its status is ended, if the database takes that)."""
        try:
            await self.write(
                lambda: self.sessions.update_message(
                    message_id=message_id,
                    content=text,
                    status=MESSAGE_STATUS[finish],
                    usage=usage,
                    finish_reason=finish,
                    reasoning=reasoning,
                ),
                what="answer",
            )
            return True
        except Exception:
            logger.exception("run %s: could not store its answer", self.run_id)
        if not self.down:
            with contextlib.suppress(Exception):
                await messages_db.set_status(self.deps.pool, message_id=uuid.UUID(message_id), status="error")
        return False

    async def usage(self, usage: TokenUsage, *, context_tokens: int | None) -> None:
        try:
            await self.write(
                lambda: self.sessions.add_usage(
                    session_id=self.session_id,
                    input_tokens=usage.input_tokens,
                    output_tokens=usage.output_tokens,
                    context_tokens=context_tokens,
                ),
                what="usage",
            )
        except Exception:
            logger.exception("run %s: could not add its usage to the session", self.run_id)

    async def release_slot(self, finish: FinishReason, *, assistant_message_id: str | None) -> bool:
        """The run's row ended, which frees the session for its next run; False when the database did not take it."""
        try:
            await self.write(
                lambda: runs_db.finish(
                    self.deps.pool,
                    run_id=self.run_id,
                    session_id=self.session_id,
                    status=RUN_STATUS[finish],
                    finish_reason=finish,
                    assistant_message_id=assistant_message_id,
                ),
                what="run slot",
            )
            return True
        except Exception:
            logger.exception("run %s: could not free its run slot", self.run_id)
            return False

    def keep_for_later(
        self, *, assistant_message_id: str | None, text: str, finish: FinishReason, usage: TokenUsage
    ) -> None:
        """What the database did not take waits in `deps.pending` until it does (no row stays `streaming`)."""
        self.deps.pending.add(
            UnrecordedEnd(
                run_id=self.run_id,
                session_id=self.session_id,
                assistant_message_id=assistant_message_id,
                content=text,
                status=MESSAGE_STATUS[finish],
                usage=usage,
                run_status=RUN_STATUS[finish],
                finish_reason=finish,
            )
        )

    async def ended_elsewhere(self) -> bool:
        """Another process's sweep ended this run (its lease looked expired)."""
        with contextlib.suppress(Exception):
            return await runs_db.status(self.deps.pool, run_id=self.run_id) not in (None, "running")
        return False
