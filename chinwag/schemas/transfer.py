"""What `POST /sessions/import` accepts: chinwag's own export (`chinwag.session.v1`), or the OpenAI chat shape."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from chinwag.schemas.messages import MAX_SEQ, FinishReason, MessageStatus
from chinwag.schemas.sessions import Instructions, SafeText, Title, TokenUsage

EXPORT_FORMAT = "chinwag.session.v1"
MAX_IMPORT_MESSAGES = 10_000
MAX_IMPORT_MESSAGE_CHARS = 1_000_000
"""The longest message text an import takes (an answer may be longer than what a user may send)."""

ImportText = Annotated[SafeText, Field(max_length=MAX_IMPORT_MESSAGE_CHARS)]
Seq = Annotated[int, Field(ge=1, le=MAX_SEQ)]


class ImportedTool(BaseModel):
    """A tool call of a `tool` message."""

    call_id: Annotated[SafeText, Field(max_length=500)]
    name: Annotated[SafeText, Field(max_length=500)]
    arguments: ImportText
    output: ImportText | None = None
    ok: bool | None = None


class ImportedMessage(BaseModel):
    """A message of a chinwag export; fields an export carries besides these (ids, `sibling_seqs`) are ignored."""

    seq: Seq
    parent_seq: Seq | None = None
    role: Literal["user", "assistant", "tool"]
    content: ImportText
    status: MessageStatus = "complete"
    tool: ImportedTool | None = None
    usage: TokenUsage | None = None
    finish_reason: FinishReason | None = None
    reasoning: ImportText | None = None
    created_at: datetime | None = None


class ImportedSession(BaseModel):
    title: Title = ""
    model: Annotated[SafeText, Field(max_length=200)] | None = None
    instructions: Instructions = ""
    leaf_seq: Seq | None = None


class ChinwagExport(BaseModel):
    """`GET /sessions/{id}/export` as it answers."""

    format: Literal["chinwag.session.v1"]
    exported_at: datetime | None = None
    session: ImportedSession = Field(default_factory=ImportedSession)
    messages: Annotated[list[ImportedMessage], Field(max_length=MAX_IMPORT_MESSAGES)]
    files: Annotated[list[Any], Field(max_length=100_000)] = Field(default_factory=list)


class ChatMessage(BaseModel):
    """One message of the OpenAI chat shape, text only (other keys, such as `name`, are ignored)."""

    model_config = ConfigDict(extra="ignore")

    role: Literal["user", "assistant", "system"]
    content: ImportText


class ChatImport(BaseModel):
    """`{"title"?, "messages": [...]}` as OpenAI's chat API takes them: one branch; system messages become the
    session's instructions."""

    title: Title = ""
    messages: Annotated[list[ChatMessage], Field(max_length=MAX_IMPORT_MESSAGES)]
