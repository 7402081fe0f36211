"""`chinwag migrate` and `chinwag serve` as a user runs them: subprocesses, embedded PostgreSQL, no configuration."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import httpx
import psutil
import pytest
import websockets.sync.client
from websockets.exceptions import ConnectionClosed

from tests.conftest import free_port


def _clean_env(data_dir: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("CHINWAG_", "OPENAI_", "AZURE_"))}
    env["CHINWAG_DATA_DIR"] = str(data_dir)
    return env


def _cli(*args: str, env: dict[str, str], cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "chinwag", *args], env=env, cwd=cwd, capture_output=True, text=True, timeout=120
    )


def _postgres_running(pgdata: Path) -> bool:
    for proc in psutil.process_iter(attrs=["name", "cmdline"]):
        cmdline = proc.info["cmdline"] or []
        if proc.info["name"] == "postgres" and any(str(pgdata) in part for part in cmdline):
            return True
    return False


def test_migrate_on_embedded_database_twice(tmp_path: Path) -> None:
    env = _clean_env(tmp_path / "data")
    first = _cli("migrate", env=env, cwd=tmp_path)
    assert first.returncode == 0, first.stderr
    # Every migration the package ships, from 0001 on.
    assert "0001_initial" in first.stdout
    assert "applied 0 migration" not in first.stdout
    second = _cli("migrate", env=env, cwd=tmp_path)
    assert second.returncode == 0, second.stderr
    assert "applied 0 migration" in second.stdout
    assert (tmp_path / "data" / "pg" / "PG_VERSION").exists()
    assert not _postgres_running(tmp_path / "data" / "pg"), "the embedded server is stopped after the command"


def test_bad_setting_fails_naming_the_variable(tmp_path: Path) -> None:
    env = _clean_env(tmp_path / "data") | {"CHINWAG_MAX_UPLOAD_BYTES": "huge"}
    result = _cli("migrate", env=env, cwd=tmp_path)
    assert result.returncode == 2
    assert "CHINWAG_MAX_UPLOAD_BYTES" in result.stderr
    assert "Traceback" not in result.stderr


def test_unreachable_database_fails_clearly(tmp_path: Path) -> None:
    env = _clean_env(tmp_path / "data") | {"CHINWAG_DATABASE_URL": f"postgresql://nobody@127.0.0.1:{free_port()}/x"}
    result = _cli("migrate", env=env, cwd=tmp_path)
    assert result.returncode == 1
    assert "cannot reach the database" in result.stderr


def test_serve_with_no_configuration_becomes_ready(tmp_path: Path) -> None:
    env = _clean_env(tmp_path / "data")
    port = free_port()
    # A generous wait for readiness (the first start runs initdb), not a speed check: speed belongs in bench/.
    deadline = time.monotonic() + 120
    proc = subprocess.Popen(
        [sys.executable, "-m", "chinwag", "serve", "--port", str(port)],
        env=env,
        cwd=tmp_path,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        ready = False
        while time.monotonic() < deadline and proc.poll() is None:
            try:
                if httpx.get(f"http://127.0.0.1:{port}/health/ready", timeout=1).status_code == 200:
                    ready = True
                    break
            except httpx.TransportError:
                pass
            time.sleep(0.1)
        assert ready, "never became ready" if proc.poll() is None else "serve exited before it was ready"
        config = httpx.get(f"http://127.0.0.1:{port}/openapi.json", timeout=2)
        assert config.status_code == 200
        assert (tmp_path / "data" / "secret_key").exists()
        # A socket's token travels in its URL, which uvicorn logs: it must not reach the log.
        url = f"ws://127.0.0.1:{port}/ws/chat/x?token=s3cr3t-t0ken"
        with websockets.sync.client.connect(url) as ws, pytest.raises(ConnectionClosed) as closed:
            ws.recv(timeout=5)
        assert closed.value.rcvd is not None
        assert closed.value.rcvd.code == 4401
    finally:
        proc.send_signal(signal.SIGTERM)
        output, _ = proc.communicate(timeout=30)
    assert proc.returncode == 0, output
    assert "Traceback" not in output
    assert "/ws/chat/x?token=***" in output
    assert "s3cr3t-t0ken" not in output
    assert not _postgres_running(tmp_path / "data" / "pg"), "serve stops the embedded server on shutdown"


def test_bad_mcp_config_fails_naming_server_and_field(tmp_path: Path) -> None:
    config = tmp_path / "mcp.json"
    config.write_text('{"mcpServers": {"files": {"command": "x", "pool_size": 0}}}')
    env = _clean_env(tmp_path / "data") | {"CHINWAG_MCP_CONFIG": str(config)}
    result = _cli("serve", "--port", str(free_port()), env=env, cwd=tmp_path)
    assert result.returncode == 2
    assert "files" in result.stderr
    assert "pool_size" in result.stderr
    assert "Traceback" not in result.stderr
