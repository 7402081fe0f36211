"""The `chinwag` command: serve, migrate, user management."""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import sys
from collections.abc import Awaitable, Callable, Iterator
from typing import TYPE_CHECKING, Any, Literal, TypeVar

import typer

from chinwag.config import Settings, SettingsError, load_settings
from chinwag.logging import configure_logging

if TYPE_CHECKING:
    from chinwag.schemas.users import RegisterRequest, User
    from chinwag.services.admin_service import AdminService

T = TypeVar("T")

app = typer.Typer(help="chinwag: a self-hosted, multi-user chat server for LLM agents.", no_args_is_help=True)
user_app = typer.Typer(help="Manage users.", no_args_is_help=True)
app.add_typer(user_app, name="user")


def _settings() -> Settings:
    from chinwag.mcp import load_mcp_config

    try:
        settings = load_settings()
        load_mcp_config(settings.mcp_config)  # fail here, in one clear line, rather than inside a worker
    except SettingsError as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(2) from None
    configure_logging(settings.log_level, settings.log_format)
    return settings


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

    settings = load_settings()
    configure_logging(settings.log_level, settings.log_format)
    return create_app(settings, drain_on_sigterm=True)


@app.command()
def serve(
    host: str = typer.Option("127.0.0.1", help="Interface to bind."),
    port: int = typer.Option(8000, min=1, max=65535, help="Port to listen on."),
    workers: int = typer.Option(1, min=1, max=64, help="Worker processes (several need CHINWAG_REDIS_URL)."),
    reload: bool = typer.Option(False, help="Restart on code changes (development)."),
) -> None:
    """Start the server (migrating the database first)."""
    import uvicorn

    from chinwag.startup import report

    configure_logging()
    settings = _settings()
    if workers > 1 and not settings.redis_url:
        raise _fail("--workers > 1 needs CHINWAG_REDIS_URL (runs and events are shared through Redis)", 2)
    report(settings)
    if settings.metrics:
        from chinwag.observability.multiproc import prepare_multiprocess_dir

        # Before any worker (or, with one, this process) imports prometheus_client: it picks its mode at import.
        prepare_multiprocess_dir(settings.data_dir)
    # uvicorn re-raises SIGTERM/SIGINT after its graceful shutdown; turn that into a normal exit so the embedded
    # database below is stopped too.
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, _exit_quietly)
    with _database(settings) as dsn:
        _migrate_or_exit(dsn, configured=bool(settings.database_url))
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
        # After the SIGTERM drain (chinwag.shutdown) has ended the runs and closed the chat sockets: what is left
        # is HTTP requests.
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


def _migrate_or_exit(dsn: str, *, configured: bool) -> list[str]:
    from chinwag.startup import DATABASE_ERRORS, describe_database_error

    try:
        return asyncio.run(_migrate(dsn))
    except DATABASE_ERRORS as exc:
        raise _fail(describe_database_error(exc, dsn, configured=configured)) from None


@app.command()
def migrate() -> None:
    """Apply pending database migrations, then exit."""
    configure_logging()
    settings = _settings()
    with _database(settings) as dsn:
        applied = _migrate_or_exit(dsn, configured=bool(settings.database_url))
    typer.echo(f"applied {len(applied)} migration(s)" + (f": {', '.join(applied)}" if applied else ""))


@user_app.command("create")
def user_create(
    email: str = typer.Argument(..., help="Email address; the user signs in with it."),
    admin: bool = typer.Option(False, "--admin", help="Make the user an administrator."),
    password_stdin: bool = typer.Option(False, "--password-stdin", help="Read the password from standard input."),
    display_name: str | None = typer.Option(None, "--display-name", help="Name shown to others."),
) -> None:
    """Create a user, whatever CHINWAG_REGISTRATION says (migrating the database first)."""
    from pydantic import ValidationError

    from chinwag.errors import Conflict
    from chinwag.schemas.users import RegisterRequest

    configure_logging()
    settings = _settings()
    password = _read_password(password_stdin)
    try:
        body = RegisterRequest(email=email, password=password, display_name=display_name)
    except ValidationError as exc:
        raise _fail(_problems(exc)) from None
    from chinwag.startup import DATABASE_ERRORS, describe_database_error

    dsn = settings.database_url or ""
    try:
        with _database(settings) as dsn:
            user = asyncio.run(_create_user(dsn, body, admin=admin, settings=settings))
    except Conflict as exc:
        raise _fail(f"{body.email}: {exc.detail}") from None
    except DATABASE_ERRORS as exc:
        raise _fail(describe_database_error(exc, dsn, configured=bool(settings.database_url))) from None
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


def _read_password(from_stdin: bool) -> str:
    if from_stdin:
        return sys.stdin.read().removesuffix("\n").removesuffix("\r")
    password: str = typer.prompt("Password", hide_input=True, confirmation_prompt=True)
    return password


def _problems(exc: Any) -> str:
    """A pydantic `ValidationError` as one line: `field: what is wrong; ...`."""
    return "; ".join(f"{'.'.join(map(str, e['loc']))}: {e['msg'].removeprefix('Value error, ')}" for e in exc.errors())


def _with_admin(work: Callable[[AdminService], Awaitable[T]]) -> T:
    """Run `work` with the same service the admin API uses, on the configured database (migrated first). A
    domain error (no such user, the last admin) or an unreachable database is one line on stderr and exit 1."""
    from chinwag.errors import ChinwagError
    from chinwag.startup import DATABASE_ERRORS, describe_database_error

    configure_logging()
    settings = _settings()

    async def run(dsn: str) -> T:
        from chinwag.db.pool import open_pool
        from chinwag.services.admin_service import AdminService
        from chinwag.services.auth_service import PasswordHashing
        from chinwag.services.file_service import FileStore

        async with open_pool(dsn, size=2) as pool:
            admin = AdminService(
                pool=pool, passwords=PasswordHashing.from_settings(settings), files=FileStore.from_settings(settings)
            )
            return await work(admin)

    dsn = settings.database_url or ""
    try:
        with _database(settings) as dsn:
            return asyncio.run(run(dsn))
    except ChinwagError as exc:
        raise _fail(exc.detail) from None
    except DATABASE_ERRORS as exc:
        raise _fail(describe_database_error(exc, dsn, configured=bool(settings.database_url))) from None


EmailArgument = typer.Argument(..., help="The user's email address.")


@user_app.command("list")
def user_list(
    prefix: str | None = typer.Option(None, "--email-prefix", help="Only users whose email starts with this."),
) -> None:
    """List users: email, role, state, last login, sessions, tokens used."""

    async def work(admin: AdminService) -> list[str]:
        lines = []
        cursor = None
        while True:
            page = await admin.list_users(limit=100, cursor=cursor, q=prefix)
            for u in page.items:
                last = u.last_login_at.isoformat(timespec="seconds") if u.last_login_at else "never"
                state = "disabled" if u.disabled else "active"
                tokens = u.usage.input_tokens + u.usage.output_tokens
                lines.append(
                    f"{u.email}\t{u.role}\t{state}\tlast login {last}\t{u.session_count} session(s)\t"
                    f"{tokens} token(s)\t{u.id}"
                )
            cursor = page.next_cursor
            if cursor is None:
                return lines

    lines = _with_admin(work)
    for line in lines:
        typer.echo(line)
    if not lines:
        typer.echo("no users", err=True)


@user_app.command("set-role")
def user_set_role(
    email: str = EmailArgument,
    role: str = typer.Argument(..., help="admin or user.", metavar="ROLE"),
) -> None:
    """Make a user an administrator or a plain user (the last active admin stays one)."""
    if role not in ("admin", "user"):
        raise _fail(f"role must be admin or user, not {role!r}")
    new_role: Literal["admin", "user"] = "admin" if role == "admin" else "user"

    async def work(admin: AdminService) -> str:
        return (await admin.update_user(user_id=await admin.id_of(email), role=new_role)).email

    typer.echo(f"{_with_admin(work)} is now {new_role}")


@user_app.command("disable")
def user_disable(email: str = EmailArgument) -> None:
    """Disable a user: they cannot sign in, and their tokens and API keys stop working."""

    async def work(admin: AdminService) -> str:
        return (await admin.update_user(user_id=await admin.id_of(email), disabled=True)).email

    typer.echo(f"disabled {_with_admin(work)}")


@user_app.command("enable")
def user_enable(email: str = EmailArgument) -> None:
    """Enable a disabled user again: they can sign in."""

    async def work(admin: AdminService) -> str:
        return (await admin.update_user(user_id=await admin.id_of(email), disabled=False)).email

    typer.echo(f"enabled {_with_admin(work)}")


@user_app.command("delete")
def user_delete(
    email: str = EmailArgument,
    yes: bool = typer.Option(False, "--yes", help="Do not ask for confirmation."),
) -> None:
    """Delete a user with all their sessions, messages and files."""
    if not yes and not typer.confirm(f"Delete {email} and everything of theirs?"):
        raise _fail("nothing deleted")

    async def work(admin: AdminService) -> str:
        user_id = await admin.id_of(email)
        await admin.delete_user(user_id=user_id)
        return user_id

    typer.echo(f"deleted {email.strip().lower()} (id {_with_admin(work)})")


@user_app.command("set-password")
def user_set_password(
    email: str = EmailArgument,
    password_stdin: bool = typer.Option(False, "--password-stdin", help="Read the password from standard input."),
) -> None:
    """Set a user's password; every sign-in of theirs ends."""
    from pydantic import ValidationError

    from chinwag.schemas.users import AdminUserUpdate

    try:
        checked = AdminUserUpdate(password=_read_password(password_stdin)).password
    except ValidationError as exc:
        raise _fail(_problems(exc)) from None
    assert checked is not None

    async def work(admin: AdminService) -> str:
        return (await admin.update_user(user_id=await admin.id_of(email), password=checked)).email

    typer.echo(f"password set for {_with_admin(work)}")


def main() -> None:  # pragma: no cover - console entry
    app(prog_name="chinwag")
    sys.exit(0)
