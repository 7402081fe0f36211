"""What the server says about its configuration as it starts: one line per problem, never a traceback.

An operator's first start is where most mistakes show (a typo in a variable, no model key, a DSN naming a database
that does not exist); each is named here with what to change.
"""

from __future__ import annotations

import logging
import socket
from urllib.parse import urlsplit, urlunsplit

import asyncpg

from chinwag.config import Settings, unknown_env_warnings

logger = logging.getLogger("chinwag.startup")

# What connecting to (or migrating) a database may raise when the DSN or the server is wrong: never a bug here.
DATABASE_ERRORS: tuple[type[BaseException], ...] = (
    OSError,
    TimeoutError,
    ValueError,
    asyncpg.PostgresError,
    asyncpg.InterfaceError,
)


def safe_dsn(dsn: str) -> str:
    """`dsn` fit for a log line: without its password or query."""
    try:
        parts = urlsplit(dsn)
        host = parts.hostname or ""
        port = f":{parts.port}" if parts.port else ""
    except ValueError:
        return "(unparsable)"
    user = f"{parts.username}@" if parts.username else ""
    return urlunsplit(parts._replace(netloc=f"{user}{host}{port}", query=""))


def describe_database_error(exc: BaseException, dsn: str, *, configured: bool) -> str:
    """One line naming the setting, the database and the cause of `exc`, for stderr."""
    where = f"CHINWAG_DATABASE_URL ({safe_dsn(dsn)})" if configured else f"the embedded database ({safe_dsn(dsn)})"
    cause: str
    if isinstance(exc, asyncpg.InvalidCatalogNameError):
        cause = f"{exc}: create it (createdb) or name another database"
    elif isinstance(exc, asyncpg.InvalidAuthorizationSpecificationError | asyncpg.InvalidPasswordError):
        cause = f"{exc}: check the user and password"
    elif isinstance(exc, socket.gaierror):
        cause = f"unknown host {urlsplit(dsn).hostname!r}"
    elif isinstance(exc, ConnectionRefusedError):
        cause = "connection refused: is PostgreSQL running and listening there?"
    elif isinstance(exc, TimeoutError):
        cause = "no answer in time (firewall, or a wrong host?)"
    elif isinstance(exc, asyncpg.ClientConfigurationError | ValueError):
        cause = f"not a valid PostgreSQL DSN ({exc}); expected postgresql://USER[:PASSWORD]@HOST[:PORT]/DATABASE"
    elif isinstance(exc, OSError):
        cause = exc.strerror or str(exc) or type(exc).__name__
    else:
        cause = str(exc) or type(exc).__name__
    return f"cannot reach the database: {where}: {cause}"


def report(settings: Settings) -> None:
    """Log, once per start, where the data lives and every configuration problem that does not stop the server."""
    for line in unknown_env_warnings():
        logger.warning("%s", line)
    logger.info("data dir: %s", settings.data_dir)
    problem = settings.model_problem
    if problem is not None:
        logger.warning("%s; until then every chat answers llm_error", problem)
