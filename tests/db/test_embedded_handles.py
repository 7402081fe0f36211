"""The embedded PostgreSQL after a process using it was killed with SIGKILL: the next clean stop stops it."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

from chinwag.db.embedded import HANDLES_FILE, forget_dead_handles
from tests.test_cli_serve import _clean_env, _cli, _postgres_running

HOLDER = """
import sys, time
from pathlib import Path
from chinwag.db.embedded import embedded_server
with embedded_server(Path(sys.argv[1])) as dsn:
    print(dsn, flush=True)
    time.sleep(600)
"""


def test_a_killed_user_of_the_server_is_forgotten(tmp_path: Path) -> None:
    data = tmp_path / "data"
    data.mkdir()
    env = _clean_env(data)
    holder = subprocess.Popen(
        [sys.executable, "-c", HOLDER, str(data)], env=env, cwd=Path(__file__).resolve().parents[2],
        stdout=subprocess.PIPE, text=True,
    )  # fmt: skip
    try:
        assert holder.stdout is not None
        assert holder.stdout.readline().startswith("postgresql://")
        os.kill(holder.pid, signal.SIGKILL)
        holder.wait(timeout=30)
        pgdata = data / "pg"
        assert holder.pid in json.loads((pgdata / HANDLES_FILE).read_text())  # the dead process is still listed
        # A clean start and stop afterwards: it is the last user, so PostgreSQL stops.
        result = _cli("migrate", env=env, cwd=tmp_path)
        assert result.returncode == 0, result.stderr
        assert holder.pid not in json.loads((pgdata / HANDLES_FILE).read_text())
        assert not _postgres_running(pgdata), "the server is stopped after the command"
    finally:
        if holder.poll() is None:
            holder.kill()
            holder.wait()
        if holder.stdout is not None:
            holder.stdout.close()


def test_live_users_are_kept(tmp_path: Path) -> None:
    (tmp_path / HANDLES_FILE).write_text(json.dumps([os.getpid(), 2**22 + 12345]))
    assert forget_dead_handles(tmp_path) == [2**22 + 12345]
    assert json.loads((tmp_path / HANDLES_FILE).read_text()) == [os.getpid()]
    assert forget_dead_handles(tmp_path / "nothing-here") == []
