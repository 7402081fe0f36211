"""A small migration runner: numbered SQL files applied once each, in order, under an advisory lock.

Several processes may start at once; the lock makes one of them migrate while the others wait, then find nothing
to do. Migrations only ever add: nothing here drops user data.
"""

from __future__ import annotations

import logging
from importlib import resources

import asyncpg

logger = logging.getLogger(__name__)

# Any constant works, as long as every chinwag process uses the same one.
_LOCK_KEY = 0x63_68_69_6E_77_61_67


def _migrations() -> list[tuple[str, str]]:
    folder = resources.files("chinwag.db") / "migrations"
    files = sorted((p for p in folder.iterdir() if p.name.endswith(".sql")), key=lambda p: p.name)
    return [(p.name.removesuffix(".sql"), p.read_text(encoding="utf-8")) for p in files]


async def migrate(conn: asyncpg.Connection) -> list[str]:
    """Apply every pending migration; return the names applied."""
    applied: list[str] = []
    await conn.execute("SELECT pg_advisory_lock($1)", _LOCK_KEY)
    try:
        await conn.execute(
            "CREATE TABLE IF NOT EXISTS schema_migrations ("
            " name text PRIMARY KEY, applied_at timestamptz NOT NULL DEFAULT now())"
        )
        done = {r["name"] for r in await conn.fetch("SELECT name FROM schema_migrations")}
        for name, sql in _migrations():
            if name in done:
                continue
            async with conn.transaction():
                await conn.execute(sql)
                await conn.execute("INSERT INTO schema_migrations (name) VALUES ($1)", name)
            logger.info("applied migration %s", name)
            applied.append(name)
    finally:
        await conn.execute("SELECT pg_advisory_unlock($1)", _LOCK_KEY)
    return applied
