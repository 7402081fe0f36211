"""Start-up that explains itself: real `chinwag` processes, their real output."""

from __future__ import annotations

import asyncio
import json
import os
import sys
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

import httpx
import pytest

from chinwag.config import unknown_env_warnings
from tests.conftest import free_port
from tests.routes.chat_support import Chat, connect
from tests.routes.process_support import ROOT, chinwag_serve, sign_up


def _clean_env(data_dir: Path, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("CHINWAG_", "OPENAI_", "AZURE_"))}
    return env | {"CHINWAG_DATA_DIR": str(data_dir), "PYTHONPATH": str(ROOT), **extra}


async def _cli(*args: str, env: dict[str, str], cwd: Path) -> tuple[int, str]:
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "chinwag", *args, env=env, cwd=cwd, stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )  # fmt: skip
    async with asyncio.timeout(120):
        _, err = await proc.communicate()
    assert proc.returncode is not None
    return proc.returncode, err.decode()


def test_an_unknown_variable_is_named_with_the_nearest_known_one() -> None:
    lines = unknown_env_warnings({"CHINWAG_DATABSE_URL": "x", "CHINWAG_ZZZQQQ": "1", "CHINWAG_REDIS_URL": "x"})
    assert lines == [
        "CHINWAG_DATABSE_URL is not a chinwag setting and is ignored: did you mean CHINWAG_DATABASE_URL?",
        "CHINWAG_ZZZQQQ is not a chinwag setting and is ignored",
    ]
    # The test suite's own variables are not settings, and not typos either.
    assert unknown_env_warnings({"CHINWAG_TEST_DATABASE_URL": "x", "CHINWAG_REQUIRE_SERVICES": "1"}) == []


def _on(dsn: str, *, user: str | None = None, database: str | None = None, port: int | None = None) -> str:
    parts = urlsplit(dsn)
    netloc = f"{user or parts.username or 'postgres'}@{parts.hostname}:{port or parts.port or 5432}"
    return urlunsplit(parts._replace(netloc=netloc, path=f"/{database}" if database else parts.path))


@pytest.mark.parametrize(
    ("case", "cause"),
    [
        ("database", 'database "chinwag_no_such_db" does not exist'),
        ("role", 'role "chinwag_no_such_role" does not exist'),
        ("refused", "connection refused"),
        ("scheme", "not a valid PostgreSQL DSN"),
        ("port", "not a valid PostgreSQL DSN"),
    ],
)
async def test_a_database_mistake_is_one_line_naming_the_setting(
    server_dsn: str, tmp_path: Path, case: str, cause: str
) -> None:
    dsn = {
        "database": _on(server_dsn, database="chinwag_no_such_db"),
        "role": _on(server_dsn, user="chinwag_no_such_role"),
        "refused": _on(server_dsn, port=free_port()),
        "scheme": "mysql://root@127.0.0.1/chinwag",
        "port": "postgresql://postgres@127.0.0.1:notaport/chinwag",
    }[case]
    # `serve` checks the database the same way before it starts any worker: tried once, for the commonest mistake.
    commands = [("migrate",)] + ([("serve", "--port", str(free_port()))] if case == "database" else [])
    for command in commands:
        code, err = await _cli(*command, env=_clean_env(tmp_path / "data", CHINWAG_DATABASE_URL=dsn), cwd=tmp_path)
        assert code == 1, err
        errors = [line for line in err.splitlines() if line.startswith("error:")]
        assert len(errors) == 1, err
        assert "CHINWAG_DATABASE_URL" in errors[0]
        assert cause in errors[0]
        assert "Traceback" not in err


async def test_serve_without_a_model_says_what_to_set_everywhere(
    database_dsn: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    data_dir = tmp_path / "data"
    port = free_port()
    env = {"CHINWAG_DATABASE_URL": database_dsn, "CHINWAG_LOG_FORMAT": "json", "CHINWAG_DATABSE_URL": "typo"}
    for name in [k for k in os.environ if k.startswith(("OPENAI_", "AZURE_"))]:
        monkeypatch.delenv(name)  # the server process inherits the test's environment
    async with chinwag_serve(port=port, data_dir=data_dir, env=env):
        url = f"http://127.0.0.1:{port}"
        async with httpx.AsyncClient(base_url=url, timeout=60) as c:
            ready = (await c.get("/health/ready")).json()
            config = (await c.get("/api/v1/config")).json()
        assert ready["status"] == "ok"
        assert ready["model_provider"].startswith("not_configured: ")
        assert "OPENAI_API_KEY" in ready["model_provider"]
        assert config["model_provider"]["status"] == "not_configured"
        assert "OPENAI_BASE_URL" in config["model_provider"]["detail"]
        user = await sign_up(url, prefix="nomodel")
        async with httpx.AsyncClient(base_url=url + "/api/v1", headers=user.headers, timeout=60) as c:
            session_id = (await c.post("/sessions", json={"title": "no model"})).json()["id"]
        async with connect(Chat(base_url=url, user=user, session_id=session_id)) as sock:
            await sock.send({"type": "message", "content": "hello?"})
            frames = await sock.until("assistant_end", timeout=30)
        errors = [f for f in frames if f["type"] == "error"]
        assert [e["code"] for e in errors] == ["llm_error"]
        assert "OPENAI_API_KEY" in errors[0]["message"]
        assert errors[0]["retryable"] is False
    log = (data_dir / "server.log").read_text()
    entries = [json.loads(line) for line in log.splitlines() if line.strip()]  # every line is one JSON object
    assert {"time", "level", "logger", "message", "request_id", "user_id", "session_id", "run_id"} <= set(entries[0])
    messages = [e["message"] for e in entries if e["level"] == "WARNING"]
    assert any("did you mean CHINWAG_DATABASE_URL" in m for m in messages), messages
    assert any("OPENAI_API_KEY" in m and "llm_error" in m for m in messages), messages
    assert any(e["message"] == f"data dir: {data_dir.resolve()}" for e in entries)
    # The run's lines name the user and the session they are about, and no line carries the token.
    assert any(e["user_id"] == user.id and e["session_id"] == session_id for e in entries)
    assert user.access_token not in log
