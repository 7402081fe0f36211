"""`/metrics` after a real run over the socket: a tool call, two model calls, HTTP requests, sockets, the pool."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from tests.conftest import RunningServer, ServerFactory, UserFactory
from tests.fakes.openai_script import call, say
from tests.fakes.openai_server import FakeOpenAI
from tests.mcp.support import fake_stdio
from tests.routes.chat_support import Chat, connect, new_session


@pytest.fixture
async def fake() -> AsyncIterator[FakeOpenAI]:
    async with FakeOpenAI.start() as server:
        yield server


Samples = dict[tuple[str, frozenset[tuple[str, str]]], float]


async def scrape(server: RunningServer) -> Samples:
    async with httpx.AsyncClient(base_url=server.url, timeout=60) as c:
        answer = await c.get("/metrics")
    assert answer.status_code == 200, answer.text
    assert answer.headers["content-type"].startswith("text/plain")
    samples: Samples = {}
    for family in text_string_to_metric_families(answer.text):
        for sample in family.samples:
            samples[(sample.name, frozenset(sample.labels.items()))] = sample.value
    return samples


def value(samples: Samples, name: str, **labels: str) -> float:
    return samples.get((name, frozenset(labels.items())), 0.0)


async def test_a_run_moves_the_counters(
    fake: FakeOpenAI, server_factory: ServerFactory, user_factory: UserFactory, tmp_path: Path
) -> None:
    config = tmp_path / "mcp.json"
    config.write_text(json.dumps({"mcpServers": {"testtools": fake_stdio(pool_size=1, timeout_s=30)}}))
    server = await server_factory(openai_base_url=fake.base_url, mcp_config=config, metrics=True)
    user = await user_factory(server)
    chat = Chat.on(server, user, await new_session(server, user))
    before = await scrape(server)
    assert value(before, "chinwag_tool_calls_total", server="testtools", outcome="ok") == 0

    fake.script(call("echo", {"text": "hi"}, text="Echoing."), say("It said hi."))
    async with connect(chat) as sock:
        await sock.send({"type": "message", "content": "echo hi"})
        frames = await sock.until("assistant_end", timeout=30)
        assert frames[-1]["finish_reason"] == "stop"
        during = await scrape(server)
    assert value(during, "chinwag_websocket_connections") == 1
    after = await scrape(server)

    assert value(after, "chinwag_websocket_connections") == 0
    assert value(after, "chinwag_tool_calls_total", server="testtools", outcome="ok") == 1
    assert value(after, "chinwag_model_call_duration_seconds_count", model=server.app.state.settings.models[0].id,
                 outcome="ok") == 2  # fmt: skip
    assert value(after, "chinwag_runs_total", finish_reason="stop") == 1
    assert value(after, "chinwag_active_runs") == 0
    assert value(after, "chinwag_time_to_first_token_seconds_count") == 1
    assert value(after, "chinwag_tokens_total", direction="input") > 0
    assert value(after, "chinwag_tokens_total", direction="output") > 0
    # Requests by route template (never the id in the path) and status, timed.
    route = "/api/v1/sessions"
    assert value(after, "chinwag_http_requests_total", method="POST", route=route, status="201") == 1
    assert value(after, "chinwag_http_request_duration_seconds_count", method="POST", route=route) == 1
    async with httpx.AsyncClient(base_url=server.url + "/api/v1", headers=user.headers, timeout=60) as c:
        assert (await c.get(f"/sessions/{chat.session_id}")).status_code == 200
        assert (await c.get("/sessions/not-a-session")).status_code == 404
    last = await scrape(server)
    one = "/api/v1/sessions/{session_id}"
    assert value(last, "chinwag_http_requests_total", method="GET", route=one, status="200") == 1
    assert value(last, "chinwag_http_requests_total", method="GET", route=one, status="404") == 1
    assert not any(chat.session_id in dict(labels).get("route", "") for _, labels in last)
    # Sampled state: the pool (4 connections in tests) and the MCP server.
    assert value(last, "chinwag_db_pool_connections", state="max") == 4
    assert value(last, "chinwag_db_pool_connections", state="in_use") >= 0
    assert value(last, "chinwag_mcp_server_up", server="testtools") == 1


async def test_metrics_are_off_unless_asked_for(root_client: httpx.AsyncClient) -> None:
    assert (await root_client.get("/metrics")).status_code == 404
