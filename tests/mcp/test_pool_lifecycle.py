"""Starting and stopping: processes end with the pool, a lost HTTP server is reconnected, the app exposes the pool."""

from __future__ import annotations

import asyncio
import json
import sys
import time
from pathlib import Path

import pytest

from chinwag.mcp import McpPool, McpToolError, parse_mcp_config
from chinwag.mcp.tools import PooledServer
from tests.conftest import ServerFactory
from tests.mcp.support import ROOT, fake_stdio, http_fake, pid_alive, text_of, wait_until_dead


async def whoami(server: object) -> int:
    assert isinstance(server, PooledServer)
    return int(text_of(await server.call_tool("whoami", {})))


async def wait_for_status(pool: McpPool, name: str, wanted: set[str], timeout_s: float = 20) -> str:
    deadline = time.monotonic() + timeout_s
    while True:
        status = {s.name: s.status for s in pool.status()}[name]
        if status in wanted or time.monotonic() > deadline:
            return status
        await asyncio.sleep(0.05)


async def test_stopping_the_pool_ends_every_server_process() -> None:
    config = parse_mcp_config({"mcpServers": {"fake": fake_stdio(pool_size=2)}})
    async with McpPool.start(config) as pool:
        await pool.wait_started()
        async with pool.acquire(["fake"]) as first, pool.acquire(["fake"]) as second:
            pids = [await whoami(first.servers[0]), await whoami(second.servers[0])]
        assert all(pid_alive(pid) for pid in pids)
    for pid in pids:
        assert not pid_alive(pid)


async def test_a_pool_with_no_servers_lends_nothing() -> None:
    async with McpPool.start(parse_mcp_config({"mcpServers": {}})) as pool:
        await pool.wait_started()
        assert pool.status() == []
        async with pool.acquire(None) as tools:
            assert (tools.servers, tools.unavailable) == ([], [])
        async with pool.acquire(["ghost"]) as tools:
            assert tools.unavailable == ["ghost"]


async def test_stopping_while_a_server_is_still_starting_does_not_wait_for_it() -> None:
    # `sleep` never answers the MCP handshake: the pool must not wait out the connect timeout (an hour) to stop.
    config = parse_mcp_config({"mcpServers": {"mute": {"command": "sleep", "args": ["3600"]}}})
    async with asyncio.timeout(120):  # a generous bound, far below the connect timeout: not a speed check
        async with McpPool.start(config, connect_timeout_s=3600) as pool:
            await asyncio.sleep(0.3)
            assert pool.status()[0].status == "starting"


async def test_a_server_that_never_answers_fails_after_the_connect_timeout() -> None:
    config = parse_mcp_config({"mcpServers": {"mute": {"command": "sleep", "args": ["3600"], "pool_size": 1}}})
    async with McpPool.start(config, connect_timeout_s=1, max_backoff_s=0.5) as pool:
        await pool.wait_started()
        status = {s.name: s for s in pool.status()}
        assert status["mute"].status == "failed"
        assert status["mute"].error == "timed out while starting"


async def test_a_lost_http_server_is_an_error_then_reconnected() -> None:
    async with http_fake() as server:
        config = parse_mcp_config({"mcpServers": {"web": {"url": server.url, "timeout_s": 5}}})
        async with McpPool.start(config, health_interval_s=0.2, max_backoff_s=0.3) as pool:
            await pool.wait_started()
            async with pool.acquire(["web"]) as tools:
                first_pid = await whoami(tools.servers[0])
                await server.stop()
                with pytest.raises(McpToolError):
                    await whoami(tools.servers[0])
            assert await wait_until_dead(first_pid)
            assert await wait_for_status(pool, "web", {"failed"}) == "failed"
            async with pool.acquire(["web"], wait_s=0.5) as tools:
                assert tools.unavailable == ["web"]

            # The same address comes back: the pool reconnects on its own.
            await server.start()
            assert await wait_for_status(pool, "web", {"ready"}) == "ready"
            async with pool.acquire(["web"]) as tools:
                assert tools.unavailable == []
                assert await whoami(tools.servers[0]) != first_pid


async def test_the_app_starts_the_pool_from_its_config_file(server_factory: ServerFactory, tmp_path: Path) -> None:
    path = tmp_path / "mcp.json"
    path.write_text(json.dumps({"mcpServers": {"fake": fake_stdio(pool_size=1), "off": fake_stdio(enabled=False)}}))
    running = await server_factory(mcp_config=path)
    pool = running.app.state.mcp
    assert isinstance(pool, McpPool)
    await pool.wait_started()
    assert [(s.name, s.status) for s in pool.status()] == [("fake", "ready"), ("off", "disabled")]
    async with pool.acquire(["fake"]) as tools:
        pid = await whoami(tools.servers[0])
    # The app stopping stops the pool and its processes.
    running.server.should_exit = True
    assert await wait_until_dead(pid, timeout_s=15)


async def test_an_sse_server_and_a_stdio_server_started_in_its_cwd(tmp_path: Path) -> None:
    # `python -m tests.fakes.mcp_server` only finds the module when started in the repository's root: that is `cwd`.
    in_root = {"command": sys.executable, "args": ["-m", "tests.fakes.mcp_server"], "cwd": str(ROOT), "pool_size": 1}
    async with http_fake(transport="sse") as sse:
        config = parse_mcp_config(
            {"mcpServers": {"older": {"type": "sse", "url": sse.url, "timeout_s": 5}, "rooted": in_root}}
        )
        async with McpPool.start(config) as pool:
            await pool.wait_started()
            assert {s.name: s.status for s in pool.status()} == {"older": "ready", "rooted": "ready"}
            async with pool.acquire(["older", "rooted"]) as tools:
                assert tools.unavailable == []
                for server in tools.servers:
                    assert isinstance(server, PooledServer)
                    assert text_of(await server.call_tool("echo", {"text": server.name})) == server.name


async def test_a_per_call_server_serves_many_concurrent_runs_with_one_process() -> None:
    config = parse_mcp_config({"mcpServers": {"shared": fake_stdio(pool_size=1, timeout_s=20)}})
    async with McpPool.start(config) as pool:
        await pool.wait_started()
        async with (
            pool.acquire(["shared"], wait_s=1) as a,
            pool.acquire(["shared"], wait_s=1) as b,
            pool.acquire(["shared"], wait_s=1) as c,
        ):
            assert a.unavailable == b.unavailable == c.unavailable == []
            runs = [s for tools in (a, b, c) for s in tools.servers if isinstance(s, PooledServer)]
            assert len(runs) == 3
            # Calls from three runs at once take turns on the one process; none fails.
            results = await asyncio.gather(*(s.call_tool("sleep", {"seconds": 0.3}) for s in runs))
            assert [text_of(r) for r in results] == ["slept 0.3"] * 3
            assert len({text_of(await s.call_tool("whoami", {})) for s in runs}) == 1


async def test_a_stateful_server_is_held_for_the_whole_run() -> None:
    config = parse_mcp_config({"mcpServers": {"memory": fake_stdio(pool_size=1, stateful=True)}})
    async with McpPool.start(config) as pool:
        await pool.wait_started()
        async with pool.acquire(["memory"], wait_s=1) as first:
            assert first.unavailable == []
            async with pool.acquire(["memory"], wait_s=0.3) as second:
                assert second.unavailable == ["memory"]
        async with pool.acquire(["memory"], wait_s=1) as third:
            assert third.unavailable == []
