"""Session wire models: what `/sessions` accepts and answers."""

from __future__ import annotations

from collections.abc import Callable, Iterable
from datetime import datetime
from typing import Annotated, Any, Literal

import asyncpg
from pydantic import AfterValidator, BaseModel, ConfigDict, Field, TypeAdapter, model_validator

TITLE_MAX_CHARS = 500
INSTRUCTIONS_MAX_CHARS = 50_000
MCP_SERVERS_MAX = 100
MAX_OUTPUT_TOKENS_SETTING = 1_000_000


def check_text(value: str) -> str:
    """Reject what PostgreSQL `text` cannot hold (NUL) or UTF-8 cannot encode (unpaired surrogates)."""
    if "\x00" in value:
        raise ValueError("must not contain NUL characters")
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        raise ValueError("must not contain unpaired surrogates") from None
    return value


SafeText = Annotated[str, AfterValidator(check_text)]
Title = Annotated[SafeText, Field(max_length=TITLE_MAX_CHARS)]
Instructions = Annotated[SafeText, Field(max_length=INSTRUCTIONS_MAX_CHARS)]
ModelId = Annotated[SafeText, Field(min_length=1, max_length=200)]
ServerName = Annotated[SafeText, Field(min_length=1, max_length=200)]
ServerNames = Annotated[list[ServerName], Field(max_length=MCP_SERVERS_MAX)]


class TokenUsage(BaseModel):
    """Tokens spent: by the model's input (prompt) and its output (completion)."""

    input_tokens: int = 0
    output_tokens: int = 0


class ContextSize(BaseModel):
    """How much of the model's window the next turn uses."""

    tokens: int
    limit: int


ReasoningEffort = Literal["minimal", "low", "medium", "high"]


class ModelSettings(BaseModel):
    """How the model answers in this session. Each is null by default: left out of the request, so the provider's
    own default applies. They apply from the next run on."""

    model_config = ConfigDict(extra="forbid")

    temperature: Annotated[float, Field(ge=0, le=2)] | None = None
    top_p: Annotated[float, Field(ge=0, le=1)] | None = None
    max_output_tokens: Annotated[int, Field(ge=1, le=MAX_OUTPUT_TOKENS_SETTING)] | None = Field(
        default=None, description="at most this many tokens per answer (never more than the server's own cap)"
    )
    reasoning_effort: ReasoningEffort | None = Field(
        default=None, description="for reasoning models; ignored by others"
    )

    def stored(self) -> dict[str, Any]:
        """The keys that are set (what the database keeps)."""
        return self.model_dump(exclude_none=True)

    def sent(self) -> dict[str, Any]:
        """The keys the client sent, null included (a null drops that key from the stored settings)."""
        return {name: getattr(self, name) for name in self.model_fields_set}


class Session(BaseModel):
    """A chat session of one user."""

    model_config = ConfigDict(
        json_schema_extra={
            "examples": [
                {
                    "id": "5d1e2c3b-4a59-4e6f-8a7b-9c0d1e2f3a4b",
                    "title": "Trip to Lisbon",
                    "model": "gpt-4.1-mini",
                    "instructions": "Answer briefly.",
                    "mcp_servers": None,
                    "pinned": False,
                    "message_count": 4,
                    "usage": {"input_tokens": 812, "output_tokens": 254},
                    "context": {"tokens": 1066, "limit": 1047576},
                    "active_run_id": None,
                    "created_at": "2026-12-01T09:31:00Z",
                    "updated_at": "2026-12-01T09:35:12Z",
                }
            ]
        }
    )

    id: str
    title: str
    model: str
    instructions: str
    mcp_servers: list[str] | None = Field(description="MCP servers this session may use; null means every enabled one")
    settings: ModelSettings = Field(default_factory=ModelSettings)
    pinned: bool
    message_count: int
    usage: TokenUsage
    context: ContextSize
    active_run_id: str | None
    leaf_seq: int | None = Field(default=None, description="the last message of the active branch; null when empty")
    created_at: datetime
    updated_at: datetime

    @classmethod
    def from_record(cls, row: asyncpg.Record, *, context_limit: int) -> Session:
        """A row selected with `id::text` and `active_run_id::text` (the db layer's session queries all do)."""
        return cls.model_validate(_session_dict(row, context_limit))

    @classmethod
    def from_records(cls, rows: Iterable[asyncpg.Record], *, window: Callable[[str], int]) -> list[Session]:
        """Rows to sessions; `window` maps a model id to its context window."""
        # One validation call for the page: pydantic-core validates dicts faster than Python builds models.
        return _SESSION_LIST.validate_python([_session_dict(row, window(row["model"])) for row in rows])


def _session_dict(row: asyncpg.Record, context_limit: int) -> dict[str, Any]:
    values = dict(row)
    values["usage"] = {"input_tokens": values.pop("input_tokens"), "output_tokens": values.pop("output_tokens")}
    values["context"] = {"tokens": values.pop("context_tokens"), "limit": context_limit}
    return values


_SESSION_LIST = TypeAdapter(list[Session])


class SessionCreate(BaseModel):
    """The body of `POST /sessions`; every field is optional."""

    model_config = ConfigDict(
        extra="forbid",
        json_schema_extra={
            "examples": [{"title": "Trip to Lisbon", "model": "gpt-4.1-mini", "instructions": "Answer briefly."}]
        },
    )

    title: Title = ""
    model: ModelId | None = Field(default=None, description="one of the server's models; default: the server's default")
    instructions: Instructions = ""
    mcp_servers: ServerNames | None = None
    settings: ModelSettings | None = None


_NOT_NULL = ("title", "pinned", "model", "instructions", "settings")


class SessionUpdate(BaseModel):
    """The body of `PATCH /sessions/{id}`: only the fields present change. `mcp_servers: null` means every server."""

    model_config = ConfigDict(
        extra="forbid", json_schema_extra={"examples": [{"title": "Lisbon, 3 days", "pinned": True}]}
    )

    title: Title | None = None
    pinned: bool | None = None
    model: ModelId | None = None
    instructions: Instructions | None = None
    mcp_servers: ServerNames | None = None
    settings: ModelSettings | None = Field(
        default=None, description="merged key by key: the keys sent replace the stored ones; a null key is unset"
    )

    @model_validator(mode="after")
    def _no_null_values(self) -> SessionUpdate:
        for name in _NOT_NULL:
            if name in self.model_fields_set and getattr(self, name) is None:
                raise ValueError(f"{name} may not be null")
        return self

    def changes(self) -> dict[str, Any]:
        """The fields the client sent, with their new values (of `settings`, the keys it sent)."""
        changes = {name: getattr(self, name) for name in self.model_fields_set}
        if "settings" in changes:
            changes["settings"] = changes["settings"].sent()
        return changes


class SessionPage(BaseModel):
    """One page of the session list; pass `next_cursor` back as `cursor` for the next one (null: no more)."""

    items: list[Session]
    next_cursor: str | None
