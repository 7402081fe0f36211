"""Per-run model clients against the fake OpenAI server, with the real `openai` client and Agents SDK."""

from __future__ import annotations

import asyncio
import os
import time
from collections.abc import AsyncIterator
from typing import Any

import openai
import pytest
from agents import Agent, ModelSettings, RunConfig, Runner, function_tool
from agents.tracing import trace
from agents.tracing.traces import NoOpTrace
from openai import AsyncOpenAI

from chinwag.config import Settings, SettingsError
from chinwag.llm.provider import PLACEHOLDER_API_KEY, LlmClients, RunModelProvider
from chinwag.llm.tokens import ApproximateCounter, EncodingFileError, TiktokenCounter
from tests.fakes.openai_script import call, fail, say
from tests.fakes.openai_server import FakeOpenAI


@pytest.fixture
async def fake() -> AsyncIterator[FakeOpenAI]:
    async with FakeOpenAI.start() as server:
        yield server


def _settings(**values: Any) -> Settings:
    return Settings(_env_file=None, **values)


def _clients(fake: FakeOpenAI, **values: Any) -> LlmClients:
    values.setdefault("openai_base_url", fake.base_url)
    # The approximate counter keeps these tests from loading an encoding; tokens have their own tests.
    return LlmClients(_settings(**values), counter=ApproximateCounter())


@function_tool
def lookup(city: str) -> str:
    """Look up the weather of a city."""
    return f"sunny in {city}"


@pytest.mark.parametrize("api", ["chat_completions", "responses"])
async def test_run_provider_streams_a_run_with_a_tool(fake: FakeOpenAI, api: str) -> None:
    llm = _clients(fake, llm_api=api, openai_api_key="sk-secret", models="gpt-4o")
    fake.script(call("lookup", {"city": "Oslo"}), say("It is sunny in Oslo.", input_tokens=30, output_tokens=6))
    async with llm.run_provider() as provider:
        assert isinstance(provider, RunModelProvider)
        assert llm.open_clients == 1
        agent = Agent(name="a", instructions="Help.", tools=[lookup], model_settings=ModelSettings(include_usage=True))
        result = Runner.run_streamed(
            agent, "Weather in Oslo?", run_config=RunConfig(model_provider=provider, tracing_disabled=True)
        )
        deltas = [
            e.data.delta
            async for e in result.stream_events()
            if e.type == "raw_response_event" and e.data.type == "response.output_text.delta"
        ]
    assert llm.open_clients == 0
    assert "".join(deltas) == "It is sunny in Oslo."
    assert result.final_output == "It is sunny in Oslo."
    assert result.context_wrapper.usage.output_tokens >= 6
    first, second = fake.requests
    expected_path = "/v1/chat/completions" if api == "chat_completions" else "/v1/responses"
    assert first.path == expected_path
    # No model on the agent: the provider falls back to the configured default.
    assert first.body["model"] == "gpt-4o"
    assert first.headers["authorization"] == "Bearer sk-secret"
    assert "sunny in Oslo" in str(second.body)


async def test_placeholder_key_when_none_is_configured(fake: FakeOpenAI) -> None:
    llm = _clients(fake)
    assert await _one_completion(llm, fake) == "ok"
    assert fake.last_request.headers["authorization"] == f"Bearer {PLACEHOLDER_API_KEY}"


async def _one_completion(llm: LlmClients, fake: FakeOpenAI) -> str:
    fake.script(say("ok"))
    return await llm.complete(model="gpt-4o-mini", instructions="sys", prompt="hi")


@pytest.mark.parametrize("api", ["chat_completions", "responses"])
async def test_complete_is_one_whole_answer(fake: FakeOpenAI, api: str) -> None:
    llm = _clients(fake, llm_api=api)
    fake.script(say("A short title"))
    answer = await llm.complete(model="gpt-4o-mini", instructions="Name this chat.", prompt="User: hello")
    assert answer == "A short title"
    body = fake.last_request.body
    assert not body.get("stream")
    assert body["model"] == "gpt-4o-mini"
    if api == "chat_completions":
        assert body["messages"] == [
            {"role": "system", "content": "Name this chat."},
            {"role": "user", "content": "User: hello"},
        ]
    else:
        assert body["instructions"] == "Name this chat."
        assert body["input"] == "User: hello"
    assert llm.open_clients == 0


async def test_complete_raises_the_openai_error(fake: FakeOpenAI) -> None:
    llm = _clients(fake)
    fake.script(fail(400))
    with pytest.raises(openai.BadRequestError):
        await llm.complete(model="m", instructions="i", prompt="p")
    assert llm.open_clients == 0


async def test_azure_endpoint(fake: FakeOpenAI) -> None:
    root = fake.base_url.removesuffix("/v1")
    settings = _settings(
        azure_openai_endpoint=root,
        azure_openai_api_key="azure-secret",
        openai_api_version="2024-10-21",
        models="my-deployment",
    )
    llm = LlmClients(settings, counter=ApproximateCounter())
    fake.script(say("from azure"))
    assert await llm.complete(model="my-deployment", instructions="i", prompt="p") == "from azure"
    request = fake.last_request
    assert request.path == "/openai/deployments/my-deployment/chat/completions"
    assert "api-version=2024-10-21" in request.query
    assert request.headers["api-key"] == "azure-secret"
    with pytest.raises(SettingsError, match="OPENAI_API_VERSION"):
        LlmClients(_settings(azure_openai_endpoint=root), counter=ApproximateCounter())


def _open_fds() -> int:
    return len(os.listdir("/proc/self/fd"))


async def test_repeated_interrupts_leave_no_connection_behind(fake: FakeOpenAI) -> None:
    """Cancel 60 runs mid-stream: every client is closed, every upstream stream ends, no socket stays open."""
    llm = _clients(fake)
    fake.default = say("word " * 2000, delay=0.01)
    started = asyncio.Event()

    async def run() -> None:
        async with llm.run_provider() as provider:
            stream = await provider.client.chat.completions.create(
                model="m", messages=[{"role": "user", "content": "go"}], stream=True
            )
            async for _chunk in stream:
                started.set()

    baseline = _open_fds()
    for _ in range(60):
        started.clear()
        task = asyncio.create_task(run())
        await asyncio.wait_for(started.wait(), 5)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
    assert llm.open_clients == 0
    async with asyncio.timeout(5):
        while fake.active:
            await asyncio.sleep(0.01)
    assert _open_fds() <= baseline + 5
    fake.default = None
    assert await _one_completion(llm, fake) == "ok"


async def test_per_run_clients_are_cheap(fake: FakeOpenAI) -> None:
    llm = _clients(fake)
    rounds = 100
    started = time.process_time()
    for _ in range(rounds):
        async with llm.run_provider():
            pass
    shared = (time.process_time() - started) / rounds
    started = time.process_time()
    for _ in range(5):
        await AsyncOpenAI(api_key="k", base_url=fake.base_url).close()
    fresh = (time.process_time() - started) / 5
    print(f"per-run client: {shared * 1000:.2f} ms CPU (shared SSL context) vs {fresh * 1000:.2f} ms (a fresh client)")
    assert shared < fresh / 3


async def test_open_disables_trace_export(fake: FakeOpenAI) -> None:
    async with LlmClients.open(_settings(openai_base_url=fake.base_url)) as llm:
        assert isinstance(trace("anything"), NoOpTrace)
        assert llm.counter.count_text("hello world") == 2  # the real encoding, loaded off the loop
        assert [m.id for m in llm.catalog.models()] == ["gpt-4.1-mini"]


async def test_open_never_logs_credentials(caplog: pytest.LogCaptureFixture) -> None:
    settings = _settings(openai_base_url="http://user:hunter2@127.0.0.1:9/v1?key=sk-in-query", openai_api_key="sk-key")
    with caplog.at_level("INFO", logger="chinwag.llm.provider"):
        async with LlmClients.open(settings):
            pass
    assert "127.0.0.1:9/v1" in caplog.text
    for secret in ("hunter2", "sk-in-query", "sk-key"):
        assert secret not in caplog.text


async def test_a_broken_tokenizer_falls_back_to_approximate_counts(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    def damaged() -> TiktokenCounter:
        raise EncodingFileError("encoding file o200k_base.tiktoken.gz does not match its pinned SHA-256")

    # Simulates a damaged install (the shipped file itself is checked in tests/llm/test_tokens.py).
    monkeypatch.setattr("chinwag.llm.provider.TiktokenCounter", damaged)
    with caplog.at_level("ERROR", logger="chinwag.llm.provider"):
        async with LlmClients.open(_settings()) as llm:
            assert isinstance(llm.counter, ApproximateCounter)
    assert "tokenizer unavailable" in caplog.text
