"""SQL for users, refresh_tokens and api_keys. Rows become schema models here and go no further."""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import datetime
from typing import Literal

import asyncpg
from asyncpg.pool import PoolConnectionProxy

from chinwag.schemas.sessions import TokenUsage
from chinwag.schemas.users import AdminUser, ApiKey, User

Conn = asyncpg.Connection | PoolConnectionProxy | asyncpg.Pool
OneConn = asyncpg.Connection | PoolConnectionProxy

# Serializes registrations that depend on whether any user exists yet (first_user mode).
_FIRST_USER_LOCK = 0x63_77_5F_75_73_65_72


def _user(row: asyncpg.Record) -> User:
    return User(
        id=str(row["id"]),
        email=row["email"],
        display_name=row["display_name"],
        role=row["role"],
        created_at=row["created_at"],
    )


def _api_key(row: asyncpg.Record) -> ApiKey:
    return ApiKey(
        id=str(row["id"]),
        name=row["name"],
        created_at=row["created_at"],
        last_used_at=row["last_used_at"],
    )


@dataclass(frozen=True)
class Account:
    """A user and whether their account is disabled (which clients see only through the admin routes)."""

    user: User
    disabled: bool


def _account(row: asyncpg.Record) -> Account:
    return Account(user=_user(row), disabled=row["disabled"])


_USER_COLUMNS = "id, email, display_name, role, created_at"
_ACCOUNT_COLUMNS = _USER_COLUMNS + ", disabled"


class EmailTaken(Exception):
    """A user with this email (compared case-insensitively) exists."""


async def insert_user(
    conn: OneConn,
    *,
    email: str,
    password_hash: str,
    display_name: str,
    role: Literal["admin", "user"],
) -> User:
    try:
        row = await conn.fetchrow(
            "INSERT INTO users (email, password_hash, display_name, role) VALUES ($1, $2, $3, $4)"
            " RETURNING id, email, display_name, role, created_at",
            email,
            password_hash,
            display_name,
            role,
        )
    except asyncpg.UniqueViolationError:
        raise EmailTaken(email) from None
    assert row is not None
    return _user(row)


async def lock_first_user(conn: OneConn) -> bool:
    """Inside a transaction: take the registration lock and say whether any user exists."""
    await conn.execute("SELECT pg_advisory_xact_lock($1)", _FIRST_USER_LOCK)
    exists: bool = await conn.fetchval("SELECT EXISTS (SELECT 1 FROM users)")
    return exists


async def any_user(conn: Conn) -> bool:
    exists: bool = await conn.fetchval("SELECT EXISTS (SELECT 1 FROM users)")
    return exists


async def get_user(conn: Conn, user_id: uuid.UUID) -> User | None:
    row = await conn.fetchrow(f"SELECT {_USER_COLUMNS} FROM users WHERE id = $1", user_id)
    return _user(row) if row else None


async def get_account(conn: Conn, user_id: uuid.UUID) -> Account | None:
    row = await conn.fetchrow(f"SELECT {_ACCOUNT_COLUMNS} FROM users WHERE id = $1", user_id)
    return _account(row) if row else None


async def get_login(conn: Conn, email: str) -> tuple[Account, str] | None:
    """The account with this email and its password hash."""
    row = await conn.fetchrow(
        f"SELECT {_ACCOUNT_COLUMNS}, password_hash FROM users WHERE lower(email) = lower($1)",
        email,
    )
    return (_account(row), row["password_hash"]) if row else None


async def get_password_hash(conn: Conn, user_id: uuid.UUID) -> str | None:
    value: str | None = await conn.fetchval("SELECT password_hash FROM users WHERE id = $1", user_id)
    return value


async def set_last_login(conn: Conn, user_id: uuid.UUID) -> None:
    await conn.execute("UPDATE users SET last_login_at = now() WHERE id = $1", user_id)


async def set_display_name(conn: Conn, user_id: uuid.UUID, display_name: str) -> User | None:
    row = await conn.fetchrow(
        f"UPDATE users SET display_name = $2 WHERE id = $1 RETURNING {_USER_COLUMNS}", user_id, display_name
    )
    return _user(row) if row else None


async def set_password_hash(conn: Conn, user_id: uuid.UUID, password_hash: str) -> None:
    await conn.execute("UPDATE users SET password_hash = $2 WHERE id = $1", user_id, password_hash)


# --- refresh tokens ---


async def insert_refresh_token(
    conn: Conn, *, user_id: uuid.UUID, family_id: uuid.UUID, token_hash: bytes, expires_at: datetime
) -> None:
    await conn.execute(
        "INSERT INTO refresh_tokens (user_id, family_id, token_hash, expires_at) VALUES ($1, $2, $3, $4)",
        user_id,
        family_id,
        token_hash,
        expires_at,
    )


@dataclass(frozen=True)
class RefreshToken:
    user_id: uuid.UUID
    family_id: uuid.UUID
    used: bool
    revoked: bool
    expired: bool


async def find_refresh_token(conn: Conn, token_hash: bytes) -> RefreshToken | None:
    row = await conn.fetchrow(
        "SELECT user_id, family_id, used_at IS NOT NULL AS used, revoked_at IS NOT NULL AS revoked,"
        " expires_at <= now() AS expired FROM refresh_tokens WHERE token_hash = $1",
        token_hash,
    )
    if row is None:
        return None
    return RefreshToken(
        user_id=row["user_id"],
        family_id=row["family_id"],
        used=row["used"],
        revoked=row["revoked"],
        expired=row["expired"],
    )


async def lock_family(conn: OneConn, family_id: uuid.UUID) -> None:
    """Inside a transaction: serialize everything done to one family (rotation, reuse detection, logout), so that
    a token issued by a concurrent rotation cannot escape a revocation."""
    await conn.execute("SELECT pg_advisory_xact_lock(hashtextextended($1::uuid::text, 1213))", family_id)


async def mark_used(conn: Conn, token_hash: bytes) -> None:
    await conn.execute("UPDATE refresh_tokens SET used_at = now() WHERE token_hash = $1", token_hash)


async def revoke_user_refresh_tokens(conn: Conn, user_id: uuid.UUID) -> None:
    """End every sign-in of the user: each of their refresh families, so a rotation in flight cannot escape."""
    await conn.execute(
        "UPDATE refresh_tokens SET revoked_at = now() WHERE user_id = $1 AND revoked_at IS NULL", user_id
    )


async def revoke_family(conn: Conn, family_id: uuid.UUID) -> None:
    await conn.execute(
        "UPDATE refresh_tokens SET revoked_at = now() WHERE family_id = $1 AND revoked_at IS NULL", family_id
    )


# --- API keys ---


async def insert_api_key(conn: Conn, *, user_id: uuid.UUID, name: str, key_hash: bytes) -> ApiKey:
    row = await conn.fetchrow(
        "INSERT INTO api_keys (user_id, name, key_hash) VALUES ($1, $2, $3)"
        " RETURNING id, name, created_at, last_used_at",
        user_id,
        name,
        key_hash,
    )
    assert row is not None
    return _api_key(row)


async def list_api_keys(conn: Conn, user_id: uuid.UUID) -> list[ApiKey]:
    rows = await conn.fetch(
        "SELECT id, name, created_at, last_used_at FROM api_keys WHERE user_id = $1 ORDER BY created_at, id",
        user_id,
    )
    return [_api_key(r) for r in rows]


async def delete_api_key(conn: Conn, *, user_id: uuid.UUID, key_id: uuid.UUID) -> bool:
    status: str = await conn.execute("DELETE FROM api_keys WHERE id = $1 AND user_id = $2", key_id, user_id)
    return status == "DELETE 1"


async def user_by_api_key(conn: Conn, key_hash: bytes) -> Account | None:
    """The owner of a key; marks it used, at most once a minute so that busy keys do not write on every call."""
    row = await conn.fetchrow(
        "WITH k AS (SELECT id, user_id, last_used_at FROM api_keys WHERE key_hash = $1),"
        " touched AS (UPDATE api_keys SET last_used_at = now() FROM k"
        "   WHERE api_keys.id = k.id AND (k.last_used_at IS NULL OR k.last_used_at < now() - interval '1 minute'))"
        " SELECT u.id, u.email, u.display_name, u.role, u.created_at, u.disabled"
        " FROM users u JOIN k ON u.id = k.user_id",
        key_hash,
    )
    return _account(row) if row else None


# --- administration ---


def _admin_user(row: asyncpg.Record) -> AdminUser:
    return AdminUser(
        **_user(row).model_dump(),
        disabled=row["disabled"],
        last_login_at=row["last_login_at"],
        session_count=row["session_count"],
        usage=TokenUsage(input_tokens=row["input_tokens"], output_tokens=row["output_tokens"]),
    )


_ADMIN_SELECT = (
    f"SELECT {', '.join('u.' + c for c in _ACCOUNT_COLUMNS.split(', '))}, u.last_login_at,"
    " s.session_count, s.input_tokens, s.output_tokens FROM users u"
    " CROSS JOIN LATERAL (SELECT count(*) AS session_count, coalesce(sum(input_tokens), 0)::bigint AS input_tokens,"
    "   coalesce(sum(output_tokens), 0)::bigint AS output_tokens FROM sessions WHERE user_id = u.id) s"
)


async def list_admin_users(
    conn: Conn, *, limit: int, after: tuple[str, uuid.UUID] | None, email_prefix: str | None
) -> list[AdminUser]:
    """Users by email (emails are stored lower-cased), keyset after `(email, id)`; at most `limit`."""
    rows = await conn.fetch(
        _ADMIN_SELECT + " WHERE ($1::text IS NULL OR (lower(u.email), u.id) > ($1, $2::uuid))"
        " AND ($3::text IS NULL OR starts_with(lower(u.email), $3))"
        " ORDER BY lower(u.email), u.id LIMIT $4",
        None if after is None else after[0],
        None if after is None else after[1],
        email_prefix,
        limit,
    )
    return [_admin_user(r) for r in rows]


async def get_admin_user(conn: Conn, user_id: uuid.UUID) -> AdminUser | None:
    row = await conn.fetchrow(_ADMIN_SELECT + " WHERE u.id = $1", user_id)
    return _admin_user(row) if row else None


async def lock_active_admins(conn: OneConn) -> set[uuid.UUID]:
    """Inside a transaction: lock every active (not disabled) admin row, in id order, and return their ids. Two
    transactions that could each remove an admin thus run one after the other, and the second sees the first's
    change (PostgreSQL re-checks a locked row's condition once the lock is granted)."""
    rows = await conn.fetch("SELECT id FROM users WHERE role = 'admin' AND NOT disabled ORDER BY id FOR UPDATE")
    return {r["id"] for r in rows}


async def lock_account(conn: OneConn, user_id: uuid.UUID) -> Account | None:
    row = await conn.fetchrow(f"SELECT {_ACCOUNT_COLUMNS} FROM users WHERE id = $1 FOR UPDATE", user_id)
    return _account(row) if row else None


async def update_account(
    conn: Conn,
    user_id: uuid.UUID,
    *,
    role: Literal["admin", "user"] | None,
    disabled: bool | None,
    password_hash: str | None,
) -> None:
    """Set the fields given (None: leave as it is)."""
    await conn.execute(
        "UPDATE users SET role = coalesce($2, role), disabled = coalesce($3, disabled),"
        " password_hash = coalesce($4, password_hash) WHERE id = $1",
        user_id,
        role,
        disabled,
        password_hash,
    )


async def user_session_ids(conn: Conn, user_id: uuid.UUID) -> list[str]:
    rows = await conn.fetch("SELECT id FROM sessions WHERE user_id = $1", user_id)
    return [str(r["id"]) for r in rows]


async def user_active_runs(conn: Conn, user_id: uuid.UUID) -> list[tuple[str, str]]:
    """`(session_id, run_id)` of each of the user's sessions with a run going."""
    rows = await conn.fetch(
        "SELECT id, active_run_id FROM sessions WHERE user_id = $1 AND active_run_id IS NOT NULL", user_id
    )
    return [(str(r["id"]), str(r["active_run_id"])) for r in rows]


async def delete_user(conn: OneConn, user_id: uuid.UUID) -> dict[str, list[str]]:
    """Delete the user; sessions, messages, context, runs, files, tokens and keys go with them (ON DELETE CASCADE).
    Returns the storage keys of their files per session id (the bytes are the file store's to remove)."""
    rows = await conn.fetch(
        "SELECT s.id, ARRAY(SELECT storage_key FROM files f WHERE f.session_id = s.id) AS keys"
        " FROM sessions s WHERE s.user_id = $1 FOR UPDATE OF s",
        user_id,
    )
    await conn.execute("DELETE FROM users WHERE id = $1", user_id)
    return {str(r["id"]): list(r["keys"]) for r in rows}
