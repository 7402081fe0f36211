"""Who and what a log line is about, carried in contextvars.

Set where each becomes known (the request id by its middleware, the user by the auth middleware, the session by
the chat socket, the run by the run task); asyncio tasks copy the context they are created in, so a run's lines
carry the user and session of the socket that started it without anyone passing them along.
"""

from __future__ import annotations

import contextvars
import logging

user_id_var: contextvars.ContextVar[str | None] = contextvars.ContextVar("user_id", default=None)
session_id_var: contextvars.ContextVar[str | None] = contextvars.ContextVar("session_id", default=None)
run_id_var: contextvars.ContextVar[str | None] = contextvars.ContextVar("run_id", default=None)


class LogContextFilter(logging.Filter):
    """Adds `user_id`, `session_id` and `run_id` (None when unknown) to every record."""

    def filter(self, record: logging.LogRecord) -> bool:
        record.user_id = user_id_var.get()
        record.session_id = session_id_var.get()
        record.run_id = run_id_var.get()
        return True
