"""SQL for files. Rows become `StoredFile`s here and go no further; every query is bound to one session."""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime

import asyncpg

from chinwag.schemas.files import File

Conn = asyncpg.Connection | asyncpg.Pool

_COLUMNS = (
    "id, session_id, name, size, content_type, sha256, tokens, extract_error, storage_key, created_at, text_chars,"
    " text IS NOT NULL AS has_text"
)


@dataclass(frozen=True)
class StoredFile:
    """A files row without its text: what the API shows plus what only the server needs."""

    id: str
    session_id: str
    name: str
    size: int
    content_type: str
    sha256: str
    tokens: int
    extract_error: str | None
    storage_key: str
    created_at: datetime
    text_chars: int
    has_text: bool

    @property
    def public(self) -> File:
        return File(
            id=self.id,
            name=self.name,
            size=self.size,
            content_type=self.content_type,
            sha256=self.sha256,
            tokens=self.tokens,
            created_at=self.created_at,
        )


@dataclass(frozen=True)
class FileHit:
    """A file that matches a text search, with a short excerpt around the match."""

    file_id: str
    name: str
    snippet: str


def _stored(row: asyncpg.Record) -> StoredFile:
    return StoredFile(
        id=str(row["id"]),
        session_id=str(row["session_id"]),
        name=row["name"],
        size=row["size"],
        content_type=row["content_type"],
        sha256=row["sha256"],
        tokens=row["tokens"],
        extract_error=row["extract_error"],
        storage_key=row["storage_key"],
        created_at=row["created_at"],
        text_chars=row["text_chars"],
        has_text=row["has_text"],
    )


async def insert_file(
    conn: Conn,
    *,
    file_id: uuid.UUID,
    session_id: uuid.UUID,
    name: str,
    size: int,
    content_type: str,
    sha256: str,
    tokens: int,
    text: str | None,
    extract_error: str | None,
    storage_key: str,
) -> StoredFile | None:
    """The new row, or None when the session no longer exists (deleted while the upload ran)."""
    try:
        row = await conn.fetchrow(
            "INSERT INTO files (id, session_id, name, size, content_type, sha256, tokens, text, extract_error,"
            f" storage_key, text_chars) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11) RETURNING {_COLUMNS}",
            file_id,
            session_id,
            name,
            size,
            content_type,
            sha256,
            tokens,
            text,
            extract_error,
            storage_key,
            len(text) if text is not None else 0,
        )
    except asyncpg.ForeignKeyViolationError:
        return None
    assert row is not None
    return _stored(row)


async def user_storage_bytes(conn: Conn, *, user_id: uuid.UUID) -> int:
    """Bytes of every file in the user's sessions."""
    total: int = await conn.fetchval(
        "SELECT coalesce(sum(f.size), 0)::bigint FROM files f JOIN sessions s ON s.id = f.session_id"
        " WHERE s.user_id = $1",
        user_id,
    )
    return total


async def list_files(conn: Conn, *, session_id: uuid.UUID) -> list[StoredFile]:
    rows = await conn.fetch(
        f"SELECT {_COLUMNS} FROM files WHERE session_id = $1 ORDER BY created_at, id",
        session_id,
    )
    return [_stored(r) for r in rows]


async def get_file(conn: Conn, *, session_id: uuid.UUID, file_id: uuid.UUID) -> StoredFile | None:
    row = await conn.fetchrow(
        f"SELECT {_COLUMNS} FROM files WHERE session_id = $1 AND id = $2",
        session_id,
        file_id,
    )
    return _stored(row) if row is not None else None


async def delete_file(conn: Conn, *, session_id: uuid.UUID, file_id: uuid.UUID) -> StoredFile | None:
    """Delete the row; the deleted file, or None when there was none."""
    row = await conn.fetchrow(
        f"DELETE FROM files WHERE session_id = $1 AND id = $2 RETURNING {_COLUMNS}",
        session_id,
        file_id,
    )
    return _stored(row) if row is not None else None


async def existing_ids(conn: Conn, *, session_id: uuid.UUID, file_ids: Sequence[uuid.UUID]) -> set[str]:
    """Which of `file_ids` are files of this session."""
    rows = await conn.fetch(
        "SELECT id FROM files WHERE session_id = $1 AND id = ANY($2::uuid[])",
        session_id,
        list(file_ids),
    )
    return {str(r["id"]) for r in rows}


async def get_texts(conn: Conn, *, session_id: uuid.UUID, file_ids: Sequence[uuid.UUID]) -> dict[str, str]:
    """The whole extracted text of each of `file_ids` that has one."""
    rows = await conn.fetch(
        "SELECT id, text FROM files WHERE session_id = $1 AND id = ANY($2::uuid[]) AND text IS NOT NULL",
        session_id,
        list(file_ids),
    )
    return {str(r["id"]): r["text"] for r in rows}


async def read_text(conn: Conn, *, session_id: uuid.UUID, file_id: uuid.UUID, offset: int, length: int) -> str:
    """Characters `[offset, offset + length)` of a file's text ("" past its end or when it has none)."""
    text: str | None = await conn.fetchval(
        "SELECT substr(text, $3, $4) FROM files WHERE session_id = $1 AND id = $2",
        session_id,
        file_id,
        offset + 1,
        length,
    )
    return text or ""


async def search_text(conn: Conn, *, session_id: uuid.UUID, query: str, limit: int) -> list[FileHit]:
    """Files of the session whose text matches `query`: full-text first (web-search syntax, over the indexed start
    of each text), best first; when that finds nothing, a case-insensitive substring match over the whole texts
    (code identifiers, numbers, the far end of very large files)."""
    rows = await conn.fetch(
        "SELECT id, name,"
        " ts_headline('simple', left(text, 300000), q, 'MaxFragments=3, MinWords=8, MaxWords=30') AS snippet"
        " FROM (SELECT id, name, text, q, ts_rank(search, q) AS rank"
        "       FROM files, websearch_to_tsquery('simple', $2) AS q"
        "       WHERE session_id = $1 AND search @@ q ORDER BY rank DESC, created_at LIMIT $3) AS best"
        " ORDER BY rank DESC",
        session_id,
        query,
        limit,
    )
    if not rows:
        rows = await conn.fetch(
            "SELECT id, name, substr(text, greatest(pos - 100, 1), 240) AS snippet"
            " FROM (SELECT id, name, text, created_at, strpos(lower(text), lower($2)) AS pos"
            "       FROM files WHERE session_id = $1 AND text IS NOT NULL) AS f"
            " WHERE pos > 0 ORDER BY created_at LIMIT $3",
            session_id,
            query,
            limit,
        )
    return [FileHit(file_id=str(r["id"]), name=r["name"], snippet=r["snippet"]) for r in rows]
