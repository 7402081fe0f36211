"""Per-run model clients against the fake OpenAI server, with the real `openai` client and Agents SDK."""

from __future__ import annotations

import asyncio
import os
from collections.abc import AsyncIterator, Callable
from typing import Any

import openai
import pytest
from agents import Agent, ModelSettings, RunConfig, Runner, function_tool
from agents.tracing import trace
from agents.tracing.traces import NoOpTrace

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


@pytest.fixture
async def clients(fake: FakeOpenAI) -> AsyncIterator[Callable[..., LlmClients]]:
    """Makes `LlmClients` on the fake (settings as keywords); their shared connection pools close after the test."""
    made: list[LlmClients] = []

    def make(**values: Any) -> LlmClients:
        values.setdefault("openai_base_url", fake.base_url)
        # The approximate counter keeps these tests from loading an encoding; tokens have their own tests.
        made.append(LlmClients(_settings(**values), counter=ApproximateCounter()))
        return made[-1]

    yield make
    for llm in made:
        await llm.aclose()


@function_tool
def lookup(city: str) -> str:
    """Look up the weather of a city."""
    return f"sunny in {city}"


@pytest.mark.parametrize("api", ["chat_completions", "responses"])
async def test_run_provider_streams_a_run_with_a_tool(
    fake: FakeOpenAI, clients: Callable[..., LlmClients], api: str
) -> None:
    llm = clients(llm_api=api, openai_api_key="sk-secret", models="gpt-4o")
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


async def test_placeholder_key_when_none_is_configured(fake: FakeOpenAI, clients: Callable[..., LlmClients]) -> None:
    llm = clients()
    assert await _one_completion(llm, fake) == "ok"
    assert fake.last_request.headers["authorization"] == f"Bearer {PLACEHOLDER_API_KEY}"


async def _one_completion(llm: LlmClients, fake: FakeOpenAI) -> str:
    fake.script(say("ok"))
    return await llm.complete(model="gpt-4o-mini", instructions="sys", prompt="hi")


@pytest.mark.parametrize("api", ["chat_completions", "responses"])
async def test_complete_is_one_whole_answer(fake: FakeOpenAI, clients: Callable[..., LlmClients], api: str) -> None:
    llm = clients(llm_api=api)
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


async def test_complete_raises_the_openai_error(fake: FakeOpenAI, clients: Callable[..., LlmClients]) -> None:
    llm = clients()
    fake.script(fail(400))
    with pytest.raises(openai.BadRequestError):
        await llm.complete(model="m", instructions="i", prompt="p")
    assert llm.open_clients == 0


async def test_azure_endpoint(fake: FakeOpenAI, clients: Callable[..., LlmClients]) -> None:
    root = fake.base_url.removesuffix("/v1")
    llm = clients(
        openai_base_url=None,
        azure_openai_endpoint=root,
        azure_openai_api_key="azure-secret",
        openai_api_version="2024-10-21",
        models="my-deployment",
    )
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


async def test_repeated_interrupts_leave_no_connection_behind(
    fake: FakeOpenAI, clients: Callable[..., LlmClients]
) -> None:
    """Cancel 60 runs mid-stream: every client is closed, every upstream stream ends, no socket stays open."""
    llm = clients()
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


async def test_runs_take_turns_on_one_kept_alive_connection(
    fake: FakeOpenAI, clients: Callable[..., LlmClients]
) -> None:
    """Each run has a client of its own, yet a run after another sends on the connection the first one left: no
    new TCP (or TLS) handshake before its request."""
    llm = clients()
    for _ in range(3):
        assert await _one_completion(llm, fake) == "ok"
    ports = {request.client_port for request in fake.requests}
    assert len(ports) == 1, ports
    assert llm.open_clients == 0


async def test_an_interrupted_run_cuts_only_its_own_stream(
    fake: FakeOpenAI, clients: Callable[..., LlmClients]
) -> None:
    """Two runs stream at once on the shared pool; closing one run's client (an interrupt) ends its stream at the
    fake, while the other run reads its answer to the end; the pool still serves the next run."""
    llm = clients()
    fake.default = say("word " * 200, delay=0.005)
    both_started = asyncio.Barrier(3)

    async def run() -> str:
        async with llm.run_provider() as provider:
            stream = await provider.client.chat.completions.create(
                model="m", messages=[{"role": "user", "content": "go"}], stream=True
            )
            text: list[str] = []
            async for chunk in stream:
                if not text:
                    await both_started.wait()
                text.extend(choice.delta.content or "" for choice in chunk.choices)
            return "".join(text)

    cut = asyncio.create_task(run())
    whole = asyncio.create_task(run())
    await both_started.wait()
    cut.cancel()
    with pytest.raises(asyncio.CancelledError):
        await cut
    async with asyncio.timeout(10):
        while fake.active > 1:
            await asyncio.sleep(0.01)
    assert fake.active == 1  # the other stream goes on
    assert await whole == "word " * 200
    fake.default = None
    assert await _one_completion(llm, fake) == "ok"
    assert llm.open_clients == 0


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
