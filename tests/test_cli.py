"""`chinwag user create` run as a subprocess against the test database; the user it makes can then sign in."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import asyncpg
import httpx


def _env(database_dsn: str, data_dir: Path, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("CHINWAG_", "OPENAI_", "AZURE_"))}
    env.update(CHINWAG_DATABASE_URL=database_dsn, CHINWAG_DATA_DIR=str(data_dir), **extra)
    return env


def _user_create(
    *args: str, stdin: str, database_dsn: str, tmp_path: Path, **env: str
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "chinwag", "user", "create", *args],
        input=stdin,
        env=_env(database_dsn, tmp_path / "data", **env),
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=120,
        start_new_session=True,  # no controlling terminal: a password prompt reads stdin
    )


async def _login(client: httpx.AsyncClient, email: str, password: str) -> httpx.Response:
    return await client.post("/auth/login", json={"email": email, "password": password})


async def test_create_user_from_stdin_then_log_in(client: httpx.AsyncClient, database_dsn: str, tmp_path: Path) -> None:
    # Registration being closed does not matter to an operator at the console.
    result = _user_create(
        "Olga@Example.com",
        "--password-stdin",
        stdin="olga-password\n",
        database_dsn=database_dsn,
        tmp_path=tmp_path,
        CHINWAG_REGISTRATION="closed",
    )
    assert result.returncode == 0, result.stderr
    assert "olga@example.com" in result.stdout
    assert "olga-password" not in result.stdout + result.stderr

    response = await _login(client, "olga@example.com", "olga-password")
    assert response.status_code == 200, response.text
    assert response.json()["user"]["role"] == "user"
    assert (await _login(client, "olga@example.com", "olga-password\n")).status_code == 401


async def test_create_admin(client: httpx.AsyncClient, database_dsn: str, tmp_path: Path) -> None:
    result = _user_create(
        "root@example.com",
        "--admin",
        "--password-stdin",
        stdin="root-password",
        database_dsn=database_dsn,
        tmp_path=tmp_path,
    )
    assert result.returncode == 0, result.stderr
    response = await _login(client, "root@example.com", "root-password")
    assert response.json()["user"]["role"] == "admin"


async def test_prompted_password_asked_twice(client: httpx.AsyncClient, database_dsn: str, tmp_path: Path) -> None:
    result = _user_create(
        "pia@example.com", stdin="pia-password\npia-password\n", database_dsn=database_dsn, tmp_path=tmp_path
    )
    assert result.returncode == 0, result.stderr
    assert (await _login(client, "pia@example.com", "pia-password")).status_code == 200


async def test_prompted_passwords_that_differ_create_nothing(
    db: asyncpg.Connection, database_dsn: str, tmp_path: Path
) -> None:
    result = _user_create(
        "quin@example.com", stdin="first-password\nother-password\n", database_dsn=database_dsn, tmp_path=tmp_path
    )
    assert result.returncode != 0
    assert await db.fetchval("SELECT count(*) FROM users") == 0


async def test_duplicate_email_fails_clearly(db: asyncpg.Connection, database_dsn: str, tmp_path: Path) -> None:
    first = _user_create(
        "rae@example.com", "--password-stdin", stdin="rae-password", database_dsn=database_dsn, tmp_path=tmp_path
    )
    assert first.returncode == 0, first.stderr
    again = _user_create(
        "RAE@example.com", "--password-stdin", stdin="rae-password", database_dsn=database_dsn, tmp_path=tmp_path
    )
    assert again.returncode == 1
    assert "already exists" in again.stderr
    assert "Traceback" not in again.stderr
    assert await db.fetchval("SELECT count(*) FROM users") == 1


async def test_short_password_fails_clearly(db: asyncpg.Connection, database_dsn: str, tmp_path: Path) -> None:
    result = _user_create(
        "sam@example.com", "--password-stdin", stdin="short\n", database_dsn=database_dsn, tmp_path=tmp_path
    )
    assert result.returncode == 1
    assert "password" in result.stderr
    assert "at least 8" in result.stderr
    assert "Traceback" not in result.stderr
    assert await db.fetchval("SELECT count(*) FROM users") == 0


async def test_bad_email_fails_clearly(db: asyncpg.Connection, database_dsn: str, tmp_path: Path) -> None:
    result = _user_create(
        "not-an-email", "--password-stdin", stdin="long-enough-password", database_dsn=database_dsn, tmp_path=tmp_path
    )
    assert result.returncode == 1
    assert "email" in result.stderr
    assert "Traceback" not in result.stderr
    assert await db.fetchval("SELECT count(*) FROM users") == 0
