"""Faults with real parts, end to end: the model server stalling, failing before it streams (bounded retries), an
MCP server process killed with SIGKILL mid-call, and the disk filling up under an upload (a real 2 MiB tmpfs).

Each fault ends in a clear error for the client, loses nothing already stored, and leaves the session usable."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import shutil
import signal
import subprocess
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import asyncpg
import httpx
import psutil
import pytest

from tests.conftest import REQUIRE_SERVICES, ServerFactory, UserFactory
from tests.fakes.openai_script import Reply, call, fail, say
from tests.fakes.openai_server import FakeOpenAI
from tests.mcp.support import fake_stdio
from tests.routes.chat_support import Chat, connect, new_session, text_of


@pytest.fixture
async def fake() -> AsyncIterator[FakeOpenAI]:
    async with FakeOpenAI.start() as server:
        yield server


async def chat_on(server_factory: ServerFactory, user_factory: UserFactory, **settings: object) -> Chat:
    server = await server_factory(**settings)
    user = await user_factory(server)
    return Chat.on(server, user, await new_session(server, user))


# --- the model server -----------------------------------------------------------------------------------------------


async def test_a_model_that_stalls_before_answering_ends_the_run_after_bounded_retries(
    fake: FakeOpenAI, server_factory: ServerFactory, user_factory: UserFactory
) -> None:
    chat = await chat_on(server_factory, user_factory, openai_base_url=fake.base_url, llm_stall_timeout_s=1.0)
    fake.script(*[say("too late", stall_before=30)] * 3, say("Awake now."))
    async with connect(chat) as sock:
        await sock.send({"type": "message", "content": "hello?"})
        frames = await sock.until("assistant_end", timeout=60)
        (error,) = [f for f in frames if f["type"] == "error"]
        assert (error["code"], error["retryable"]) == ("llm_error", True)
        assert "stall" in error["message"]
        assert frames[-1]["finish_reason"] == "error"
        assert len(fake.requests) == 3  # the first try and the openai client's two retries, then it gives up
        await sock.send({"type": "message", "content": "and now?"})
        again = await sock.until("assistant_end", timeout=30)
    assert text_of(again) == "Awake now."


async def test_a_model_that_stalls_mid_answer_ends_the_run_and_keeps_the_text(
    fake: FakeOpenAI, server_factory: ServerFactory, user_factory: UserFactory
) -> None:
    chat = await chat_on(server_factory, user_factory, openai_base_url=fake.base_url, llm_stall_timeout_s=1.0)
    fake.script(say("one two three four five six", stall_at=3, stall=30), say("Back."))
    async with connect(chat) as sock:
        await sock.send({"type": "message", "content": "count"})
        frames = await sock.until("assistant_end", timeout=60)
        (error,) = [f for f in frames if f["type"] == "error"]
        assert error["code"] == "llm_error"
        assert frames[-1]["finish_reason"] == "error"
        assert text_of(frames) == "one two three"
        assert len(fake.requests) == 1  # something was streamed: never retried
        history = await chat.history()
        assert (history[1]["status"], history[1]["content"]) == ("error", "one two three")
        await sock.send({"type": "message", "content": "again"})
        again = await sock.until("assistant_end", timeout=30)
    assert again[-1]["finish_reason"] == "stop"


@pytest.mark.parametrize(
    "first", [pytest.param(fail(500), id="500"), pytest.param(fail(429, retry_after=0.2), id="429")]
)
async def test_a_failure_before_anything_streamed_is_retried_and_the_run_succeeds(
    fake: FakeOpenAI, server_factory: ServerFactory, user_factory: UserFactory, first: Reply
) -> None:
    chat = await chat_on(server_factory, user_factory, openai_base_url=fake.base_url)
    fake.script(first, say("Second time lucky."))
    async with connect(chat) as sock:
        await sock.send({"type": "message", "content": "hi"})
        frames = await sock.until("assistant_end", timeout=30)
    assert [f for f in frames if f["type"] == "error"] == []
    assert frames[-1]["finish_reason"] == "stop"
    assert text_of(frames) == "Second time lucky."
    assert len(fake.requests) == 2


# --- an MCP server killed mid-call ----------------------------------------------------------------------------------


def mcp_processes() -> list[psutil.Process]:
    me = psutil.Process()
    return [p for p in me.children(recursive=True) if "tests.fakes.mcp_server" in " ".join(p.cmdline())]


async def test_an_mcp_server_killed_mid_call_fails_that_call_and_the_next_one_works(
    fake: FakeOpenAI, server_factory: ServerFactory, user_factory: UserFactory, tmp_path: Path
) -> None:
    config = tmp_path / "mcp.json"
    config.write_text(json.dumps({"mcpServers": {"testtools": fake_stdio(pool_size=1, timeout_s=30)}}))
    chat = await chat_on(server_factory, user_factory, openai_base_url=fake.base_url, mcp_config=config)
    await chat.running.app.state.mcp.wait_started()
    fake.script(
        call("sleep", {"seconds": 30}), say("That tool died."), call("echo", {"text": "alive"}), say("Fine again.")
    )
    async with connect(chat) as sock:
        await sock.send({"type": "message", "content": "sleep"})
        await sock.until("tool_start", timeout=30)
        (victim,) = mcp_processes()
        await asyncio.sleep(0.3)  # the call is in the process now
        os.kill(victim.pid, signal.SIGKILL)
        frames = await sock.until("assistant_end", timeout=30)
        (done,) = [f for f in frames if f["type"] == "tool_done"]
        assert (done["name"], done["ok"]) == ("sleep", False)
        assert "stopped" in done["output"]
        assert frames[-1]["finish_reason"] == "stop"
        # A fresh process takes the next call.
        await sock.send({"type": "message", "content": "echo"})
        again = await sock.until("assistant_end", timeout=60)
    (echoed,) = [f for f in again if f["type"] == "tool_done"]
    assert (echoed["ok"], echoed["output"]) == (True, "alive")
    assert victim.pid not in {p.pid for p in mcp_processes()}


# --- the disk fills up ----------------------------------------------------------------------------------------------


@contextlib.contextmanager
def small_filesystem(path: Path, size: str) -> Iterator[Path]:
    """A real tmpfs of `size` mounted at `path` (root only), unmounted after."""
    if os.geteuid() != 0 or shutil.which("mount") is None:
        reason = "mounting a tmpfs needs root and mount(8)"
        if REQUIRE_SERVICES:
            pytest.fail(f"CHINWAG_REQUIRE_SERVICES=1 but {reason}")
        pytest.skip(reason)
    path.mkdir(parents=True)
    subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(path)], check=True)
    try:
        yield path
    finally:
        subprocess.run(["umount", "-l", str(path)], check=False)


async def test_a_full_disk_refuses_the_upload_with_507_and_stores_nothing(
    server_factory: ServerFactory, user_factory: UserFactory, db: asyncpg.Connection, tmp_path: Path
) -> None:
    with small_filesystem(tmp_path / "small", "2m") as data_dir:
        server = await server_factory(data_dir=data_dir, max_upload_bytes=8 * 1024 * 1024)
        user = await user_factory(server)
        async with httpx.AsyncClient(base_url=server.url + "/api/v1", headers=user.headers, timeout=60) as c:
            session_id = (await c.post("/sessions", json={})).json()["id"]
            fits = await c.post(
                f"/sessions/{session_id}/files", files={"file": ("small.txt", b"a few words", "text/plain")}
            )
            assert fits.status_code == 201, fits.text
            big = (b"lorem ipsum dolor sit amet\n" * 200_000)[: 4 * 1024 * 1024]
            refused = await c.post(f"/sessions/{session_id}/files", files={"file": ("big.txt", big, "text/plain")})
            assert refused.status_code == 507, refused.text
            assert refused.json()["code"] == "insufficient_storage"
            listed = (await c.get(f"/sessions/{session_id}/files")).json()["items"]
            assert [f["name"] for f in listed] == ["small.txt"]
            # Room again once the big one is gone: nothing of it was left behind.
            again = await c.post(
                f"/sessions/{session_id}/files", files={"file": ("after.txt", b"more words", "text/plain")}
            )
            assert again.status_code == 201, again.text
        stored = sorted(p.name for p in (data_dir / "files" / session_id).iterdir())
        assert len(stored) == 2  # the two files kept, no partial one
        assert await db.fetchval("SELECT count(*) FROM files WHERE session_id = $1", uuid.UUID(session_id)) == 2
