"""File wire models: what `/sessions/{id}/files` answers."""

from __future__ import annotations

from datetime import datetime

from pydantic import BaseModel, Field


class File(BaseModel):
    """A file uploaded to a session. `name` is for display only; `tokens` counts its extracted text."""

    id: str
    name: str
    size: int = Field(description="bytes")
    content_type: str = Field(description="detected from the content, not taken from the client")
    sha256: str = Field(description="hex digest of the bytes")
    tokens: int = Field(description="tokens of the extracted text; 0 when it has none")
    created_at: datetime


class FileList(BaseModel):
    """The files of a session, oldest first."""

    items: list[File]
