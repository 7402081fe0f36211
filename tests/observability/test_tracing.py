"""OpenTelemetry spans of a real run, collected in process: the request, the run, its model calls and tool call."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import httpx
import pytest
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from chinwag.config import Settings
from chinwag.main import create_app
from tests.conftest import TEST_PASSWORD, TestUser, serve
from tests.fakes.openai_script import call, say
from tests.fakes.openai_server import FakeOpenAI
from tests.mcp.support import fake_stdio
from tests.routes.chat_support import Chat, connect, new_session


@pytest.fixture
async def fake() -> AsyncIterator[FakeOpenAI]:
    async with FakeOpenAI.start() as server:
        yield server


async def test_a_run_is_traced_with_its_model_and_tool_calls(
    fake: FakeOpenAI, settings_factory: Callable[..., Settings], tmp_path: Path, db: Any
) -> None:
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    config = tmp_path / "mcp.json"
    config.write_text(json.dumps({"mcpServers": {"testtools": fake_stdio(pool_size=1, timeout_s=30)}}))
    settings = settings_factory(openai_base_url=fake.base_url, mcp_config=config)
    async with serve(create_app(settings, tracer_provider=provider)) as server:
        async with httpx.AsyncClient(base_url=server.url + "/api/v1", timeout=60) as c:
            email = "traced@example.com"
            assert (await c.post("/auth/register", json={"email": email, "password": TEST_PASSWORD})).status_code == 201
            tokens = (await c.post("/auth/login", json={"email": email, "password": TEST_PASSWORD})).json()
        headers = {"Authorization": f"Bearer {tokens['access_token']}"}
        user = TestUser(tokens["user"]["id"], email, TEST_PASSWORD, tokens["access_token"], "", headers)
        chat = Chat.on(server, user, await new_session(server, user))
        fake.script(call("echo", {"text": "hi"}, text="Echoing."), say("It said hi."))
        async with connect(chat) as sock:
            await sock.send({"type": "message", "content": "echo hi"})
            frames = await sock.until("assistant_end", timeout=30)
        run_id = frames[-1]["run_id"]
    spans = exporter.get_finished_spans()
    by_name: dict[str, list[Any]] = {}
    for span in spans:
        by_name.setdefault(span.name, []).append(span)

    # The request spans of the FastAPI instrumentation, named by route template.
    assert "POST /api/v1/sessions" in by_name, sorted(by_name)
    [run] = by_name["chinwag.run"]
    assert run.attributes["chinwag.run_id"] == run_id
    assert run.attributes["chinwag.session_id"] == chat.session_id
    assert run.attributes["chinwag.finish_reason"] == "stop"
    assert run.attributes["gen_ai.usage.output_tokens"] > 0
    assert [e.name for e in run.events] == ["first_text"]
    model_calls = by_name["chinwag.model_call"]
    [tool_call] = by_name["chinwag.tool_call"]
    assert len(model_calls) == 2
    assert tool_call.attributes["chinwag.mcp_server"] == "testtools"
    assert tool_call.attributes["gen_ai.tool.name"] == "echo"
    # Each model and tool call belongs to the run: the same trace, the run's span as parent.
    for child in [*model_calls, tool_call]:
        assert child.context.trace_id == run.context.trace_id
        assert child.parent is not None
        assert child.parent.span_id == run.context.span_id
