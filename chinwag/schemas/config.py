"""What `GET /config` tells clients about this server."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, Field


class ModelInfo(BaseModel):
    """A model users may pick for a session."""

    id: str
    context_window: int
    default: bool
    vision: bool = Field(description="accepts images (image files named in a message's file_ids reach it)")


class Limits(BaseModel):
    """What the server accepts: upload size, message length, file types (MIME types)."""

    max_upload_bytes: int
    max_message_chars: int
    file_types: list[str]


class McpServerInfo(BaseModel):
    """An MCP server and its state."""

    name: str
    status: str
    tools: list[str]


class ModelProviderInfo(BaseModel):
    """Whether the server can reach a model: `not_configured` (with `detail` saying what the operator must set)
    means every chat answers `llm_error` until it is."""

    status: Literal["ok", "not_configured"]
    detail: str | None


class ServerConfig(BaseModel):
    """The server's public configuration."""

    version: str
    models: list[ModelInfo]
    limits: Limits
    mcp_servers: list[McpServerInfo]
    registration: Literal["open", "first_user", "closed"]
    model_provider: ModelProviderInfo
