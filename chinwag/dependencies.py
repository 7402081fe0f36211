"""Dependency aliases: everything a route needs comes from the app's state through these, never from a global."""

from __future__ import annotations

from typing import Annotated

import asyncpg
from fastapi import Depends
from starlette.requests import HTTPConnection

from chinwag.config import Settings


def get_settings(conn: HTTPConnection) -> Settings:
    settings: Settings = conn.app.state.settings
    return settings


def get_pool(conn: HTTPConnection) -> asyncpg.Pool:
    pool: asyncpg.Pool = conn.app.state.pool
    return pool


AppSettings = Annotated[Settings, Depends(get_settings)]
Pool = Annotated[asyncpg.Pool, Depends(get_pool)]
