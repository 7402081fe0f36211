"""Real `python -m chinwag serve` processes for the tests that kill or restart one."""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import sys
import uuid
from collections.abc import AsyncIterator, Sequence
from pathlib import Path

import httpx

from tests.conftest import TestUser

ROOT = Path(__file__).resolve().parents[2]
SECRET = "test-secret-" + "x" * 40  # the one server_factory uses, so tokens stay valid across processes


@contextlib.asynccontextmanager
async def chinwag_serve(
    *,
    port: int,
    data_dir: Path,
    env: dict[str, str],
    ready: str = "/health/ready",
    args: Sequence[str] = (),
    start_timeout_s: float = 60,
) -> AsyncIterator[asyncio.subprocess.Process]:
    """`python -m chinwag serve` on `port` with `data_dir`, once `ready` answers 200; killed at the end, with its
    workers. `env` adds to the test's environment (the secret, open registration, the data dir and the import path
    are set here)."""
    data_dir.mkdir(exist_ok=True)
    environ = {
        **os.environ,
        "CHINWAG_SECRET_KEY": SECRET,
        "CHINWAG_REGISTRATION": "open",
        "CHINWAG_DATA_DIR": str(data_dir),
        "PYTHONPATH": str(ROOT),
        **env,
    }
    log_path = data_dir / "server.log"
    log = log_path.open("ab")
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "chinwag",
        "serve",
        "--port",
        str(port),
        *args,
        env=environ,
        stdout=log,
        stderr=log,
        cwd=ROOT,
        # Its own process group, killed whole at the end: with `--workers N` the workers are children that a kill
        # of the parent alone would leave running on the test database and Redis (they ended other tests' runs).
        start_new_session=True,
    )
    try:
        async with httpx.AsyncClient(timeout=60) as c, asyncio.timeout(start_timeout_s):
            while True:
                if proc.returncode is not None:
                    raise AssertionError(log_path.read_text())
                with contextlib.suppress(httpx.TransportError):
                    if (await c.get(f"http://127.0.0.1:{port}{ready}")).status_code == 200:
                        break
                await asyncio.sleep(0.1)
        yield proc
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)  # the server and any worker it started, even after it died itself
        await proc.wait()
        log.close()


async def sign_up(url: str, *, prefix: str = "user") -> TestUser:
    """Register and log in a fresh user on the server at `url`."""
    email = f"{prefix}-{uuid.uuid4().hex[:8]}@example.com"
    password = "correct horse battery staple"
    async with httpx.AsyncClient(base_url=url + "/api/v1", timeout=30) as c:
        assert (await c.post("/auth/register", json={"email": email, "password": password})).status_code == 201
        tokens = (await c.post("/auth/login", json={"email": email, "password": password})).json()
    return TestUser(
        id=tokens["user"]["id"],
        email=email,
        password=password,
        access_token=tokens["access_token"],
        refresh_token=tokens["refresh_token"],
        headers={"Authorization": f"Bearer {tokens['access_token']}"},
    )
