"""The MCP pool with real servers: the fake server over stdio and HTTP, mcp-server-time, a command that does not exist.

One pool serves the whole module (starting Python processes is the slow part); tests that break an instance use a
server of their own inside it.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import time
from collections.abc import AsyncIterator
from datetime import UTC, datetime

import pytest
from agents import Agent, RunConfig, Runner
from agents.testing import ScriptedModel, assistant_message, function_call

from chinwag.mcp import McpPool, McpToolError, parse_mcp_config
from chinwag.mcp.tools import PooledServer
from tests.mcp.support import HttpFake, fake_stdio, http_fake, text_of, time_stdio, wait_until_dead

NO_TRACING = RunConfig(tracing_disabled=True)


@pytest.fixture(scope="module")
async def http_server() -> AsyncIterator[HttpFake]:
    async with http_fake() as server:
        yield server


@pytest.fixture(scope="module")
async def pool(http_server: HttpFake) -> AsyncIterator[McpPool]:
    config = parse_mcp_config(
        {
            "mcpServers": {
                "fake": fake_stdio(pool_size=2, stateful=True),
                "web": {"url": http_server.url, "timeout_s": 5},
                "time": time_stdio(pool_size=1),
                "crashy": fake_stdio(pool_size=1),
                "slow": fake_stdio(pool_size=1, timeout_s=0.5),
                "broken": {"command": "/nonexistent/chinwag-mcp-server"},
                "off": fake_stdio(enabled=False),
            }
        }
    )
    async with McpPool.start(config, health_interval_s=0.3) as started:
        await started.wait_started()
        yield started


def pooled(server: object) -> PooledServer:
    assert isinstance(server, PooledServer)
    return server


async def whoami(server: object) -> int:
    return int(text_of(await pooled(server).call_tool("whoami", {})))


async def test_status_reports_every_server(pool: McpPool) -> None:
    status = {s.name: s for s in pool.status()}
    assert list(status) == ["fake", "web", "time", "crashy", "slow", "broken", "off"]
    fake_tools = ["echo", "sleep", "fail", "huge", "crash", "whoami"]
    assert (status["fake"].status, status["fake"].tools, status["fake"].error) == ("ready", fake_tools, None)
    assert (status["web"].status, status["web"].tools) == ("ready", fake_tools)
    assert status["time"].status == "ready"
    assert "get_current_time" in status["time"].tools
    assert status["broken"].status == "failed"
    assert status["broken"].error is not None
    assert "/nonexistent/chinwag-mcp-server" in status["broken"].error
    assert (status["off"].status, status["off"].tools) == ("disabled", [])


async def test_a_tool_call_through_the_pool_over_stdio_and_http(pool: McpPool) -> None:
    async with pool.acquire(["fake", "web"]) as tools:
        assert tools.unavailable == []
        assert [s.name for s in tools.servers] == ["fake", "web"]
        for server in tools.servers:
            result = await pooled(server).call_tool("echo", {"text": f"hello from {server.name}"})
            assert text_of(result) == f"hello from {server.name}"
            assert not result.is_error
        assert tools.server_of("echo") == "fake"
        assert tools.server_of("no_such_tool") is None


async def test_an_agent_run_calls_an_mcp_tool_and_sees_its_output(pool: McpPool) -> None:
    model = ScriptedModel(
        [
            [function_call("echo", {"text": "the tide is high"}, call_id="call-1")],
            [assistant_message("done")],
        ]
    )
    async with pool.acquire(["fake"]) as tools:
        agent = Agent(name="assistant", model=model, mcp_servers=tools.servers)
        result = await Runner.run(agent, "say it", run_config=NO_TRACING)
    assert result.final_output == "done"
    assert tools.server_of("echo") == "fake"
    assert not tools.failed("call-1")
    offered = {tool.name for tool in model.calls[0].tools}
    assert {"echo", "whoami", "huge"} <= offered
    outputs = [item for item in model.calls[1].input if isinstance(item, dict) and item.get("call_id") == "call-1"]
    outputs = [item for item in outputs if item.get("type") == "function_call_output"]
    assert len(outputs) == 1
    assert "the tide is high" in json.dumps(outputs[0]["output"])


async def test_a_failing_tool_gives_the_model_an_error_and_the_run_goes_on(pool: McpPool) -> None:
    model = ScriptedModel(
        [
            [function_call("fail", {"message": "disk on fire"}, call_id="call-f")],
            [assistant_message("sorry")],
        ]
    )
    async with pool.acquire(["fake"]) as tools:
        agent = Agent(name="assistant", model=model, mcp_servers=tools.servers)
        result = await Runner.run(agent, "try it", run_config=NO_TRACING)
    assert result.final_output == "sorry"
    assert tools.failed("call-f")
    error = tools.error_of("call-f")
    assert error is not None
    assert "disk on fire" in error
    outputs = [item for item in model.calls[1].input if isinstance(item, dict) and item.get("call_id") == "call-f"]
    assert any("disk on fire" in json.dumps(item.get("output")) for item in outputs)


async def test_an_error_result_raises_a_tool_error_with_its_text(pool: McpPool) -> None:
    async with pool.acquire(["fake"]) as tools:
        with pytest.raises(McpToolError, match=r"reported an error: .*out of cheese"):
            await pooled(tools.servers[0]).call_tool("fail", {"message": "out of cheese"})
        # The instance is fine afterwards.
        assert text_of(await pooled(tools.servers[0]).call_tool("echo", {"text": "x"})) == "x"


async def test_concurrent_runs_get_different_stdio_instances(pool: McpPool) -> None:
    async with pool.acquire(["fake"]) as first, pool.acquire(["fake"]) as second:
        pids = {await whoami(first.servers[0]), await whoami(second.servers[0])}
        assert len(pids) == 2
        started = time.monotonic()
        async with pool.acquire(["fake", "web"], wait_s=0.3) as third:
            waited = time.monotonic() - started
            assert third.unavailable == ["fake"]
            assert [s.name for s in third.servers] == ["web"]
        assert waited >= 0.25  # it did wait for a free instance (how long at most is not a test's business)
    # Given back: both instances are free again.
    async with pool.acquire(["fake"], wait_s=0.1) as again:
        assert await whoami(again.servers[0]) in pids


async def test_a_waiting_acquisition_gets_the_instance_a_run_gives_back(pool: McpPool) -> None:
    release = asyncio.Event()
    holding = [asyncio.Event(), asyncio.Event()]

    async def hold(index: int) -> int:
        async with pool.acquire(["fake"]) as tools:
            pid = await whoami(tools.servers[0])
            holding[index].set()
            await release.wait()
            return pid

    async def release_later() -> None:
        await asyncio.sleep(0.3)
        release.set()

    async with asyncio.TaskGroup() as group:
        holders = [group.create_task(hold(i)) for i in range(2)]
        for event in holding:
            await event.wait()
        group.create_task(release_later())
        started = time.monotonic()
        async with pool.acquire(["fake"], wait_s=5) as waiting:
            waited = time.monotonic() - started
            assert waiting.unavailable == []
            pid = await whoami(waiting.servers[0])
    assert waited >= 0.25  # it got the instance once it was given back, not before
    assert pid in {holder.result() for holder in holders}


async def test_a_cancelled_acquisition_loses_no_instance(pool: McpPool) -> None:
    async with pool.acquire(["fake"]) as first, pool.acquire(["fake"]) as second:
        assert first.unavailable == second.unavailable == []

        async def wait_for_one() -> None:
            async with pool.acquire(["fake"], wait_s=30):
                pass

        waiter = asyncio.create_task(wait_for_one())
        await asyncio.sleep(0.1)
        waiter.cancel()
        with pytest.raises(asyncio.CancelledError):
            await waiter
    async with pool.acquire(["fake"], wait_s=1) as a, pool.acquire(["fake"], wait_s=1) as b:
        assert a.unavailable == b.unavailable == []


async def test_a_released_server_cannot_be_used_any_more(pool: McpPool) -> None:
    async with pool.acquire(["fake"]) as tools:
        server = pooled(tools.servers[0])
    with pytest.raises(McpToolError, match="no longer held"):
        await server.call_tool("echo", {"text": "late"})


async def test_http_servers_are_shared(pool: McpPool) -> None:
    async with pool.acquire(["web"], wait_s=0.1) as first, pool.acquire(["web"], wait_s=0.1) as second:
        assert first.unavailable == second.unavailable == []
        one, two = await asyncio.gather(whoami(first.servers[0]), whoami(second.servers[0]))
        assert one == two


async def test_a_crash_mid_call_is_an_error_and_the_next_run_gets_a_fresh_instance(pool: McpPool) -> None:
    async with pool.acquire(["crashy"]) as tools:
        server = pooled(tools.servers[0])
        old_pid = await whoami(server)
        with pytest.raises(McpToolError, match="stopped during the call"):
            await server.call_tool("crash", {})
    assert await wait_until_dead(old_pid)
    async with pool.acquire(["crashy"], wait_s=20) as tools:
        assert tools.unavailable == []
        new_pid = await whoami(tools.servers[0])
    assert new_pid != old_pid
    assert pool.status()[3].status == "ready"


async def test_after_a_crash_the_same_run_goes_on_with_a_fresh_instance(pool: McpPool) -> None:
    model = ScriptedModel(
        [
            [function_call("crash", {}, call_id="call-c")],
            [function_call("echo", {"text": "still here"}, call_id="call-e")],
            [assistant_message("recovered")],
        ]
    )
    async with pool.acquire(["crashy"], wait_s=20) as tools:
        agent = Agent(name="assistant", model=model, mcp_servers=tools.servers)
        result = await Runner.run(agent, "go", run_config=NO_TRACING)
    assert result.final_output == "recovered"
    assert tools.failed("call-c")
    assert not tools.failed("call-e")
    outputs = [item for item in model.calls[2].input if isinstance(item, dict) and item.get("call_id") == "call-e"]
    assert any("still here" in json.dumps(item.get("output")) for item in outputs)


async def test_an_idle_instance_that_dies_is_replaced(pool: McpPool) -> None:
    async with pool.acquire(["crashy"], wait_s=20) as tools:
        old_pid = await whoami(tools.servers[0])
    os.kill(old_pid, signal.SIGKILL)
    # The idle check (every 0.3 s here) notices; a call that comes first gets an error and replaces it too.
    deadline = time.monotonic() + 20
    pid = old_pid
    errors: list[str] = []
    while pid == old_pid and time.monotonic() < deadline:
        await asyncio.sleep(0.2)
        async with pool.acquire(["crashy"], wait_s=20) as tools:
            assert tools.unavailable == []
            try:
                pid = await whoami(tools.servers[0])
            except McpToolError as exc:
                errors.append(str(exc))
    assert pid != old_pid
    assert all("stopped during the call" in error for error in errors)


async def test_a_slow_call_times_out_as_an_error_and_the_server_recovers(pool: McpPool) -> None:
    async with pool.acquire(["slow"]) as tools:
        server = pooled(tools.servers[0])
        with pytest.raises(McpToolError, match=r"timed out after 0\.5 s"):  # the 30 s call was not waited out
            await server.call_tool("sleep", {"seconds": 30})
    async with pool.acquire(["slow"], wait_s=20) as tools:
        assert tools.unavailable == []
        assert text_of(await pooled(tools.servers[0]).call_tool("sleep", {"seconds": 0.01})) == "slept 0.01"


async def test_a_timeout_inside_a_run_is_a_tool_error_not_a_crash(pool: McpPool) -> None:
    model = ScriptedModel([[function_call("sleep", {"seconds": 30}, call_id="call-s")], [assistant_message("gave up")]])
    async with pool.acquire(["slow"], wait_s=20) as tools:
        agent = Agent(name="assistant", model=model, mcp_servers=tools.servers)
        result = await Runner.run(agent, "wait", run_config=NO_TRACING)
    assert result.final_output == "gave up"
    error = tools.error_of("call-s")
    assert error is not None
    assert "timed out" in error


async def test_large_output_is_cut_with_a_marker(pool: McpPool) -> None:
    async with pool.acquire(["fake"]) as tools:
        server = pooled(tools.servers[0])
        big = text_of(await server.call_tool("huge", {"size": 250_000}))
        small = text_of(await server.call_tool("huge", {"size": 1000}))
    assert "[output truncated: 250000 bytes, only the first 100000 shown]" in big
    assert len(big.encode()) < 100_200
    assert big.startswith("0123456789abcdef")
    assert len(small) == 1000
    assert "truncated" not in small


async def test_a_server_that_cannot_start_leaves_the_others_working(pool: McpPool) -> None:
    # No waiting for a server that is down: an acquire that waited out `wait_s` (an hour) would hit this bound.
    async with asyncio.timeout(120), pool.acquire(["broken", "fake", "nobody", "off"], wait_s=3600) as tools:
        assert tools.unavailable == ["broken", "nobody", "off"]
        assert [s.name for s in tools.servers] == ["fake"]
        assert text_of(await pooled(tools.servers[0]).call_tool("echo", {"text": "ok"})) == "ok"
    assert {s.name: s.status for s in pool.status()}["broken"] == "failed"


async def test_acquiring_everything_skips_disabled_servers(pool: McpPool) -> None:
    async with pool.acquire(None, wait_s=0.5) as tools:
        names = [s.name for s in tools.servers]
        assert "off" not in names
        assert "off" not in tools.unavailable
        assert "broken" in tools.unavailable
        assert {"fake", "web", "time"} <= set(names)


async def test_mcp_server_time_over_stdio(pool: McpPool) -> None:
    async with pool.acquire(["time"]) as tools:
        result = await pooled(tools.servers[0]).call_tool("get_current_time", {"timezone": "UTC"})
    data = json.loads(text_of(result))
    assert data["timezone"] == "UTC"
    now = datetime.fromisoformat(data["datetime"])
    assert abs((now - datetime.now(UTC)).total_seconds()) < 60


async def test_a_streamed_run_calls_an_mcp_tool(pool: McpPool) -> None:
    model = ScriptedModel(
        [[function_call("echo", {"text": "streamed"}, call_id="call-st")], [assistant_message("streamed done")]]
    )
    async with pool.acquire(["fake"]) as tools:
        agent = Agent(name="assistant", model=model, mcp_servers=tools.servers)
        result = Runner.run_streamed(agent, "go", run_config=NO_TRACING)
        outputs = [
            event.item.output
            async for event in result.stream_events()
            if event.type == "run_item_stream_event" and event.name == "tool_output"
        ]
    assert result.final_output == "streamed done"
    assert len(outputs) == 1
    assert "streamed" in json.dumps(outputs[0])


async def test_interrupting_a_run_during_a_tool_call_is_quick_and_the_instance_stays_usable(pool: McpPool) -> None:
    model = ScriptedModel([[function_call("sleep", {"seconds": 30}, call_id="call-long")], [assistant_message("x")]])
    async with pool.acquire(["fake"]) as tools:
        pid = await whoami(tools.servers[0])
        agent = Agent(name="assistant", model=model, mcp_servers=tools.servers)
        result = Runner.run_streamed(agent, "go", run_config=NO_TRACING)
        cancelled = False
        async with asyncio.timeout(25):  # the tool sleeps 30 s: ending before that means the cancel cut it
            async for event in result.stream_events():
                if event.type == "run_item_stream_event" and event.name == "tool_called":
                    await asyncio.sleep(0.2)
                    cancelled = True
                    result.cancel()
        assert cancelled
    # Back in the pool, the same process answers at once (the cancelled call does not block it).
    async with pool.acquire(["fake"], wait_s=1) as first, pool.acquire(["fake"], wait_s=1) as second:
        pids = {await whoami(first.servers[0]), await whoami(second.servers[0])}
    assert pid in pids
