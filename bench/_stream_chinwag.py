"""chinwag under the streaming bench: a scratch database, the server in its own process, a user and sessions."""

from __future__ import annotations

import contextlib
import os
import secrets
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

import asyncpg
import httpx

from bench._stream_common import Child, Children, free_port

DEFAULT_ADMIN_URL = "postgresql://postgres@127.0.0.1:5432/test"
MODEL = "fake-model"
# Settings of the caller's environment that would send chinwag elsewhere than the fake, or to other services.
_FOREIGN_SETTINGS = (
    "AZURE_OPENAI_ENDPOINT",
    "AZURE_OPENAI_API_KEY",
    "OPENAI_API_VERSION",
    "CHINWAG_REDIS_URL",
    "CHINWAG_MCP_CONFIG",
    "CHINWAG_LLM_API",
    "CHINWAG_DEFAULT_MODEL",
)


def admin_url() -> str:
    return os.environ.get("CHINWAG_BENCH_DATABASE_URL", DEFAULT_ADMIN_URL)


def _with_database(url: str, name: str) -> str:
    parts = urlsplit(url)
    return urlunsplit(parts._replace(path="/" + name))


@contextlib.asynccontextmanager
async def scratch_database() -> AsyncIterator[str]:
    """A new, empty database beside the one `CHINWAG_BENCH_DATABASE_URL` names; dropped afterwards."""
    base = admin_url()
    name = f"chinwag_bench_{os.getpid()}_{secrets.token_hex(3)}"
    conn = await asyncpg.connect(base, timeout=10)
    try:
        await conn.execute(f'CREATE DATABASE "{name}"')
    finally:
        await conn.close()
    try:
        yield _with_database(base, name)
    finally:
        conn = await asyncpg.connect(base, timeout=10)
        try:
            await conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        finally:
            await conn.close()


def start_chinwag(
    kids: Children,
    *,
    database_url: str,
    fake: Child,
    data_dir: Path,
    api: str = "chat_completions",
    lean_stream: bool = True,
    name: str = "chinwag",
) -> Child:
    """`python -m chinwag serve` on a free port, its model at the fake over `api`."""
    port = free_port()
    env = {
        "CHINWAG_LLM_API": api,
        "CHINWAG_LEAN_STREAM": "true" if lean_stream else "false",
        "CHINWAG_DATABASE_URL": database_url,
        "CHINWAG_DATA_DIR": str(data_dir),
        "CHINWAG_SECRET_KEY": secrets.token_urlsafe(32),
        "CHINWAG_REGISTRATION": "open",
        "CHINWAG_MODELS": f"{MODEL}:128000",
        "OPENAI_BASE_URL": fake.url + "/v1",
        "OPENAI_API_KEY": "bench-placeholder",
        # One bench user opens every socket and starts every stream: the per-user limits would refuse them.
        "CHINWAG_MAX_SOCKETS_PER_USER": "100000",
        "CHINWAG_MAX_ACTIVE_RUNS_PER_USER": "100000",
    }
    return kids.start(
        name,
        ["-m", "chinwag", "serve", "--port", str(port)],
        port=port,
        env=env,
        unset=tuple(key for key in _FOREIGN_SETTINGS if key not in env),
        ready_path="/health/ready",
    )


@dataclass
class ChinwagApi:
    """A signed-in bench user of a running chinwag."""

    server: Child
    token: str

    def ws_url(self, session_id: str) -> str:
        return f"ws://127.0.0.1:{self.server.port}/ws/chat/{session_id}?token={self.token}"

    async def create_sessions(self, count: int, *, mcp_servers: list[str] | None = None) -> list[str]:
        """`count` sessions, titled up front so that no title request reaches the model."""
        ids = []
        async with httpx.AsyncClient(base_url=self.server.url + "/api/v1", timeout=30) as http:
            headers = {"Authorization": f"Bearer {self.token}"}
            for i in range(count):
                body = {"title": f"bench {i}", "model": MODEL, "mcp_servers": mcp_servers}
                response = await http.post("/sessions", json=body, headers=headers)
                response.raise_for_status()
                ids.append(str(response.json()["id"]))
        return ids


async def sign_in(server: Child) -> ChinwagApi:
    email = f"bench-{secrets.token_hex(4)}@example.com"
    password = secrets.token_urlsafe(16)
    async with httpx.AsyncClient(base_url=server.url + "/api/v1", timeout=30) as http:
        response = await http.post("/auth/register", json={"email": email, "password": password})
        response.raise_for_status()
        response = await http.post("/auth/login", json={"email": email, "password": password})
        response.raise_for_status()
        return ChinwagApi(server=server, token=str(response.json()["access_token"]))


def database_name(url: str) -> str:
    return urlsplit(url).path.lstrip("/")
