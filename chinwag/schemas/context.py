"""`GET /sessions/{id}/context`: what the model sees next turn."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, Field


class SessionContext(BaseModel):
    """The history the model gets next turn, after trimming and summarizing (Layer 1)."""

    tokens: int = Field(description="size of `items` in tokens (exact where the provider reported usage)")
    limit: int = Field(description="the model's context window")
    items: list[dict[str, Any]] = Field(description="the items sent, oldest first: the summary (if any), then turns")
    summarized_through_seq: int | None = Field(description="the last message seq the summary covers")
    summary: str | None = Field(description="the summary of the earlier conversation, if one was made")
