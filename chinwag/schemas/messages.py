"""Message wire models (Layer 2 history) and search results."""

from __future__ import annotations

from collections.abc import Iterable
from datetime import datetime
from typing import Literal

import asyncpg
import orjson
from pydantic import BaseModel, TypeAdapter

from chinwag.schemas.sessions import TokenUsage

Role = Literal["user", "assistant", "tool"]
MessageStatus = Literal["complete", "streaming", "interrupted", "error"]
FinishReason = Literal["stop", "length", "interrupted", "error", "max_turns"]


class ToolCall(BaseModel):
    """A tool call shown in the history: `arguments` is JSON text; `output` and `ok` are null until it is done."""

    call_id: str
    name: str
    arguments: str
    output: str | None = None
    ok: bool | None = None


class Message(BaseModel):
    """One message the user saw. `seq` grows by one per message inside a session, from 1, with no gaps."""

    id: str
    seq: int
    role: Role
    content: str
    status: MessageStatus
    tool: ToolCall | None
    run_id: str | None
    client_id: str | None
    usage: TokenUsage | None
    finish_reason: FinishReason | None = None
    """Of an assistant message: how its run ended (as in `assistant_end`); null while streaming and on others."""
    reasoning: str | None = None
    """Of an assistant message: the reasoning the model streamed (`reasoning_delta`), shown to the user and never
    sent back to the model as text; null when it streamed none."""
    created_at: datetime

    @classmethod
    def from_record(cls, row: asyncpg.Record) -> Message:
        """A row selected with `id::text` and `run_id::text` (the db layer's message queries all do)."""
        return cls.model_validate(dict(row))

    @classmethod
    def from_records(cls, rows: Iterable[asyncpg.Record]) -> list[Message]:
        # One validation call for the page: pydantic-core validates dicts faster than Python builds models.
        return _MESSAGE_LIST.validate_python([dict(row) for row in rows])


_MESSAGE_LIST = TypeAdapter(list[Message])


MAX_SEQ = 2_147_483_647  # the `integer` column's range: larger values are a 422, not a database error


class MessagePage(BaseModel):
    """A page of history, oldest first; `has_more` says whether more exist in the direction asked."""

    items: list[Message]
    has_more: bool

    @staticmethod
    def encode_records(rows: Iterable[asyncpg.Record], *, has_more: bool) -> bytes:
        """The JSON of `MessagePage(items=Message.from_records(rows), has_more=has_more)`, encoded straight from the
        rows with orjson: about three times cheaper than validating and dumping 50 models, on the busiest REST
        route. The rows' columns are exactly `Message`'s fields, in order, with JSON columns written through
        `ToolCall`/`TokenUsage`; tests/db/test_messages.py checks that both encodings agree."""
        return orjson.dumps({"items": [dict(row) for row in rows], "has_more": has_more}, option=orjson.OPT_UTC_Z)


class SearchHit(BaseModel):
    """A message matching a search; `snippet` is a plain-text excerpt around the match (no markup)."""

    session_id: str
    message_id: str
    seq: int
    snippet: str


class SearchResults(BaseModel):
    """Search hits, best match first."""

    items: list[SearchHit]
