"""`chinwag user list | set-role | disable | enable | delete | set-password`, each run as a real subprocess against the
test database, next to a running server whose answers show the effect."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import asyncpg
import httpx

from tests.conftest import TEST_PASSWORD, RunningServer, TestUser, UserFactory
from tests.test_cli import _env


def chinwag_user(*args: str, database_dsn: str, tmp_path: Path, stdin: str = "") -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "chinwag", "user", *args],
        input=stdin,
        env=_env(database_dsn, tmp_path / "data"),
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=120,
        start_new_session=True,
    )


class Cli:
    """`chinwag user ...` against one database and data dir."""

    def __init__(self, database_dsn: str, tmp_path: Path) -> None:
        self.database_dsn = database_dsn
        self.tmp_path = tmp_path

    def __call__(self, *args: str, stdin: str = "") -> subprocess.CompletedProcess[str]:
        return chinwag_user(*args, database_dsn=self.database_dsn, tmp_path=self.tmp_path, stdin=stdin)


def failed(result: subprocess.CompletedProcess[str], *words: str) -> None:
    """Exit code 1 and one clear line on stderr, no traceback."""
    assert result.returncode == 1, (result.stdout, result.stderr)
    assert "Traceback" not in result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("error: ")
    for word in words:
        assert word in lines[0], lines[0]


async def login(client: httpx.AsyncClient, email: str, password: str = TEST_PASSWORD) -> httpx.Response:
    return await client.post("/auth/login", json={"email": email, "password": password})


async def test_list_set_role_disable_enable_and_set_password(
    client: httpx.AsyncClient, server: RunningServer, user_factory: UserFactory, database_dsn: str, tmp_path: Path
) -> None:
    alice = await user_factory(server, "alice@example.com")
    await user_factory(server, "bob@example.com", admin=True)
    run = Cli(database_dsn, tmp_path)

    listed = run("list")
    assert listed.returncode == 0, listed.stderr
    rows = [line.split("\t") for line in listed.stdout.strip().splitlines()]
    assert [(r[0], r[1], r[2]) for r in rows] == [
        ("alice@example.com", "user", "active"),
        ("bob@example.com", "admin", "active"),
    ]
    only = run("list", "--email-prefix", "BO")
    assert [line.split("\t")[0] for line in only.stdout.strip().splitlines()] == ["bob@example.com"]

    promoted = run("set-role", "Alice@Example.com", "admin")
    assert promoted.returncode == 0, promoted.stderr
    assert (await login(client, alice.email)).json()["user"]["role"] == "admin"
    failed(run("set-role", alice.email, "owner"), "admin or user")

    assert run("disable", alice.email).returncode == 0
    refused = await login(client, alice.email)
    assert (refused.status_code, refused.json()["code"]) == (401, "account_disabled")
    me = await client.get("/auth/me", headers=alice.headers)
    assert me.json()["code"] == "account_disabled"
    assert "disabled" in run("list", "--email-prefix", "alice").stdout

    assert run("enable", alice.email).returncode == 0
    assert (await login(client, alice.email)).status_code == 200

    failed(run("set-password", alice.email, "--password-stdin", stdin="short\n"), "at least 8")
    changed = run("set-password", alice.email, "--password-stdin", stdin="brand-new-password\n")
    assert changed.returncode == 0, changed.stderr
    assert "brand-new-password" not in changed.stdout + changed.stderr
    assert (await login(client, alice.email)).status_code == 401
    assert (await login(client, alice.email, "brand-new-password")).status_code == 200
    refreshed = await client.post("/auth/refresh", json={"refresh_token": alice.refresh_token})
    assert refreshed.status_code == 401  # the sign-in from before the new password has ended


async def test_the_last_admin_rule_and_unknown_users_fail_clearly(
    server: RunningServer, user_factory: UserFactory, database_dsn: str, tmp_path: Path, db: asyncpg.Connection
) -> None:
    await user_factory(server, "root@example.com", admin=True)
    run = Cli(database_dsn, tmp_path)
    failed(run("set-role", "root@example.com", "user"), "last active administrator")
    failed(run("disable", "root@example.com"), "last active administrator")
    failed(run("delete", "root@example.com", "--yes"), "last active administrator")
    assert await db.fetchval("SELECT count(*) FROM users WHERE role = 'admin' AND NOT disabled") == 1
    for command in (("set-role", "nobody@example.com", "admin"), ("disable", "nobody@example.com")):
        failed(run(*command), "nobody@example.com")
    failed(run("delete", "root@example.com", stdin="n\n"), "nothing deleted")


async def test_delete_removes_the_user_and_their_files_on_disk(
    server: RunningServer, alice: TestUser, bob: TestUser, database_dsn: str, tmp_path: Path, db: asyncpg.Connection
) -> None:
    async with httpx.AsyncClient(base_url=server.url + "/api/v1", headers=alice.headers, timeout=60) as c:
        session_id = (await c.post("/sessions", json={})).json()["id"]
        upload = await c.post(f"/sessions/{session_id}/files", files={"file": ("a.txt", b"alice only", "text/plain")})
        assert upload.status_code == 201, upload.text
    data_dir = Path(server.app.state.settings.data_dir)
    assert data_dir == tmp_path / "data"
    stored = [p for p in data_dir.rglob("*") if p.is_file() and p.read_bytes() == b"alice only"]
    assert stored

    deleted = chinwag_user("delete", alice.email, "--yes", database_dsn=database_dsn, tmp_path=tmp_path)
    assert deleted.returncode == 0, deleted.stderr
    assert alice.id in deleted.stdout
    assert not any(p.exists() for p in stored)
    assert await db.fetchval("SELECT count(*) FROM users WHERE email = $1", alice.email) == 0
    assert await db.fetchval("SELECT count(*) FROM users WHERE email = $1", bob.email) == 1
    async with httpx.AsyncClient(base_url=server.url + "/api/v1", timeout=60) as c:
        assert (await login(c, alice.email)).status_code == 401
        assert (await login(c, bob.email)).status_code == 200
