"""The `chinwag` command: serve, migrate, user management."""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import sys
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

import typer

from chinwag.config import Settings, SettingsError, load_settings
from chinwag.logging import configure_logging

if TYPE_CHECKING:
    from chinwag.schemas.users import RegisterRequest, User

app = typer.Typer(help="chinwag: a self-hosted, multi-user chat server for LLM agents.", no_args_is_help=True)
user_app = typer.Typer(help="Manage users.", no_args_is_help=True)
app.add_typer(user_app, name="user")


def _settings() -> Settings:
    from chinwag.mcp import load_mcp_config

    try:
        settings = load_settings()
        load_mcp_config(settings.mcp_config)  # fail here, in one clear line, rather than inside a worker
        return settings
    except SettingsError as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(2) from None


def _fail(message: str, code: int = 1) -> typer.Exit:
    typer.echo(f"error: {message}", err=True)
    return typer.Exit(code)


@contextlib.contextmanager
def _database(settings: Settings) -> Iterator[str]:
    """The DSN to use; starts the embedded server (and stops it after) when none is configured."""
    if settings.database_url:
        yield settings.database_url
        return
    from chinwag.db.embedded import embedded_server

    with embedded_server(settings.data_dir) as dsn:
        yield dsn


def create_app_from_env() -> object:
    """uvicorn's factory: each worker process reads the settings once and builds its app."""
    from chinwag.main import create_app

    configure_logging()
    return create_app(load_settings())


@app.command()
def serve(
    host: str = typer.Option("127.0.0.1", help="Interface to bind."),
    port: int = typer.Option(8000, min=1, max=65535, help="Port to listen on."),
    workers: int = typer.Option(1, min=1, max=64, help="Worker processes (several need CHINWAG_REDIS_URL)."),
    reload: bool = typer.Option(False, help="Restart on code changes (development)."),
) -> None:
    """Start the server (migrating the database first)."""
    import uvicorn

    configure_logging()
    settings = _settings()
    if workers > 1 and not settings.redis_url:
        raise _fail("--workers > 1 needs CHINWAG_REDIS_URL (runs and events are shared through Redis)", 2)
    # uvicorn re-raises SIGTERM/SIGINT after its graceful shutdown; turn that into a normal exit so the embedded
    # database below is stopped too.
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, _exit_quietly)
    with _database(settings) as dsn:
        _migrate_or_exit(dsn)
        os.environ["CHINWAG_DATABASE_URL"] = dsn
        uvicorn.run(
            "chinwag.cli:create_app_from_env",
            factory=True,
            host=host,
            port=port,
            workers=workers if not reload else None,
            reload=reload,
            log_config=None,
            **uvicorn_options(settings),
        )


def uvicorn_options(settings: Settings) -> dict[str, Any]:
    """What `serve` sets on uvicorn beyond the address: socket limits, and whom it believes about the client."""
    return {
        # Always 1009 for an oversize frame and 1007 for bad UTF-8, with a warning line, never a dropped connection.
        "ws": "chinwag.websocket.protocol:ChinwagWebSocketProtocol",
        "ws_max_size": 1024 * 1024,
        "ws_ping_interval": 20.0,
        "ws_ping_timeout": 20.0,
        "ws_per_message_deflate": False,
        "timeout_graceful_shutdown": 10,
        # uvicorn's own default trusts X-Forwarded-For from 127.0.0.1: only the configured proxies may set it.
        "proxy_headers": bool(settings.trusted_proxies),
        "forwarded_allow_ips": list(settings.trusted_proxies) or None,
    }


def _exit_quietly(signum: int, frame: object) -> None:
    raise SystemExit(0)


async def _migrate(dsn: str) -> list[str]:
    import asyncpg

    from chinwag.db.migrate import migrate as run_migrations

    conn = await asyncpg.connect(dsn, timeout=10)
    try:
        return await run_migrations(conn)
    finally:
        await conn.close()


def _migrate_or_exit(dsn: str) -> list[str]:
    try:
        return asyncio.run(_migrate(dsn))
    except (TimeoutError, OSError) as exc:
        raise _fail(f"cannot reach the database: {exc}") from None


@app.command()
def migrate() -> None:
    """Apply pending database migrations, then exit."""
    configure_logging()
    settings = _settings()
    with _database(settings) as dsn:
        applied = _migrate_or_exit(dsn)
    typer.echo(f"applied {len(applied)} migration(s)" + (f": {', '.join(applied)}" if applied else ""))


@user_app.command("create")
def user_create(
    email: str = typer.Argument(..., help="Email address; the user signs in with it."),
    admin: bool = typer.Option(False, "--admin", help="Make the user an administrator."),
    password_stdin: bool = typer.Option(False, "--password-stdin", help="Read the password from standard input."),
    display_name: str | None = typer.Option(None, "--display-name", help="Name shown to others."),
) -> None:
    """Create a user, whatever CHINWAG_REGISTRATION says (migrating the database first)."""
    import asyncpg
    from pydantic import ValidationError

    from chinwag.errors import Conflict
    from chinwag.schemas.users import RegisterRequest

    configure_logging()
    settings = _settings()
    if password_stdin:
        password = sys.stdin.read().removesuffix("\n").removesuffix("\r")
    else:
        password = typer.prompt("Password", hide_input=True, confirmation_prompt=True)
    try:
        body = RegisterRequest(email=email, password=password, display_name=display_name)
    except ValidationError as exc:
        problems = (f"{'.'.join(map(str, e['loc']))}: {e['msg'].removeprefix('Value error, ')}" for e in exc.errors())
        raise _fail("; ".join(problems)) from None
    try:
        with _database(settings) as dsn:
            user = asyncio.run(_create_user(dsn, body, admin=admin, settings=settings))
    except Conflict as exc:
        raise _fail(f"{body.email}: {exc.detail}") from None
    except (OSError, TimeoutError, asyncpg.PostgresError) as exc:
        raise _fail(f"cannot reach the database: {exc}") from None
    typer.echo(f"created {user.role} {user.email} (id {user.id})")


async def _create_user(dsn: str, body: RegisterRequest, *, admin: bool, settings: Settings) -> User:
    from chinwag.db.pool import open_pool
    from chinwag.services.auth_service import PasswordHashing, create_user

    async with open_pool(dsn, size=1) as pool:
        return await create_user(
            pool,
            PasswordHashing.from_settings(settings),
            email=body.email,
            password=body.password,
            display_name=body.display_name,
            admin=admin,
        )


def main() -> None:  # pragma: no cover - console entry
    app(prog_name="chinwag")
    sys.exit(0)
