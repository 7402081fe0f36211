"""The fake OpenAI server, driven by the real `openai` client and the real Agents SDK."""

from __future__ import annotations

import asyncio
import itertools
import json
import subprocess
import sys
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import openai
import pytest
from agents import Agent, AgentsException, ModelSettings, RunConfig, Runner, function_tool
from agents.models.openai_chatcompletions import OpenAIChatCompletionsModel
from agents.models.openai_responses import OpenAIResponsesModel
from openai import AsyncOpenAI

from tests.conftest import free_port
from tests.fakes.openai_script import Reply, ToolCall, call, calls, echo, fail, say, split_tokens
from tests.fakes.openai_server import FakeOpenAI

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture
async def fake() -> AsyncIterator[FakeOpenAI]:
    async with FakeOpenAI.start() as server:
        yield server


@pytest.fixture
async def client(fake: FakeOpenAI) -> AsyncIterator[AsyncOpenAI]:
    async with AsyncOpenAI(base_url=fake.base_url, api_key="sk-test", max_retries=0) as c:
        yield c


def test_split_tokens() -> None:
    assert split_tokens("Hello big world", None) == ["Hello", " big", " world"]
    assert split_tokens("abcdefg", 3) == ["abc", "de", "fg"]
    assert "".join(split_tokens("a longer text, with punctuation.", 7)) == "a longer text, with punctuation."
    assert split_tokens("", 4) == []


# Chat completions ------------------------------------------------------------------------------------------------


async def test_chat_stream_text_tokens_and_usage(fake: FakeOpenAI, client: AsyncOpenAI) -> None:
    fake.script(say("Hello there, friend", tokens=4, input_tokens=11))
    stream = await client.chat.completions.create(
        model="gpt-4o",
        messages=[{"role": "user", "content": "Hi!"}],
        stream=True,
        stream_options={"include_usage": True},
    )
    deltas: list[str] = []
    finish = None
    usage = None
    roles = []
    async for chunk in stream:
        if chunk.usage is not None:
            usage = chunk.usage
            assert chunk.choices == []
            continue
        choice = chunk.choices[0]
        if choice.delta.role:
            roles.append(choice.delta.role)
        if choice.delta.content:
            deltas.append(choice.delta.content)
        finish = choice.finish_reason or finish
        assert chunk.model == "gpt-4o"
    assert deltas == ["Hello", " ther", "e, fr", "iend"]
    assert roles == ["assistant"]
    assert finish == "stop"
    assert usage is not None
    assert (usage.prompt_tokens, usage.completion_tokens, usage.total_tokens) == (11, 4, 15)

    request = fake.last_request
    assert request.path == "/v1/chat/completions"
    assert request.body["messages"] == [{"role": "user", "content": "Hi!"}]
    assert request.headers["authorization"] == "Bearer sk-test"
    assert request.last_user_text == "Hi!"
    assert fake.remaining == 0


async def test_chat_stream_without_include_usage_sends_no_usage_chunk(fake: FakeOpenAI, client: AsyncOpenAI) -> None:
    fake.script(say("one two"))
    stream = await client.chat.completions.create(model="m", messages=[{"role": "user", "content": "x"}], stream=True)
    chunks = [chunk async for chunk in stream]
    assert all(chunk.usage is None for chunk in chunks)
    assert all(chunk.choices for chunk in chunks)
    assert "".join(c.choices[0].delta.content or "" for c in chunks) == "one two"


async def test_chat_stream_tool_calls_after_text(fake: FakeOpenAI, client: AsyncOpenAI) -> None:
    fake.script(
        calls(
            ToolCall("get_weather", '{"city": "Paris", "unit": "celsius"}'),
            ToolCall("get_time", "{}", call_id="call_fixed"),
            text="Let me check.",
        )
    )
    stream = await client.chat.completions.create(
        model="m", messages=[{"role": "user", "content": "weather?"}], stream=True
    )
    text = ""
    tools: dict[int, dict[str, str]] = {}
    finish = None
    async for chunk in stream:
        delta = chunk.choices[0].delta
        text += delta.content or ""
        for tc in delta.tool_calls or []:
            entry = tools.setdefault(tc.index, {"id": "", "name": "", "arguments": ""})
            if tc.id:
                entry["id"] = tc.id
            if tc.function and tc.function.name:
                entry["name"] = tc.function.name
            if tc.function and tc.function.arguments:
                entry["arguments"] += tc.function.arguments
        finish = chunk.choices[0].finish_reason or finish
    assert text == "Let me check."
    assert finish == "tool_calls"
    assert tools[0]["name"] == "get_weather"
    assert json.loads(tools[0]["arguments"]) == {"city": "Paris", "unit": "celsius"}
    assert tools[0]["id"].startswith("call_")
    assert tools[1] == {"id": "call_fixed", "name": "get_time", "arguments": "{}"}


async def test_chat_whole_completion(fake: FakeOpenAI, client: AsyncOpenAI) -> None:
    fake.script(say("A whole answer."), call("lookup", {"q": "x"}))
    first = await client.chat.completions.create(model="m", messages=[{"role": "user", "content": "a"}])
    assert first.choices[0].message.content == "A whole answer."
    assert first.choices[0].finish_reason == "stop"
    assert first.usage is not None
    assert first.usage.completion_tokens == 3
    second = await client.chat.completions.create(model="m", messages=[{"role": "user", "content": "b"}])
    tool_calls = second.choices[0].message.tool_calls
    assert second.choices[0].message.content is None
    assert tool_calls is not None
    assert len(tool_calls) == 1
    assert tool_calls[0].type == "function"
    assert tool_calls[0].function.name == "lookup"
    assert json.loads(tool_calls[0].function.arguments) == {"q": "x"}


async def test_chat_errors(fake: FakeOpenAI, client: AsyncOpenAI) -> None:
    fake.script(fail(429, retry_after=7), fail(500, message="boom"), fail(400))
    messages: Any = [{"role": "user", "content": "x"}]
    with pytest.raises(openai.RateLimitError) as rate_limited:
        await client.chat.completions.create(model="m", messages=messages, stream=True)
    assert rate_limited.value.response.headers["retry-after"] == "7"
    assert rate_limited.value.code == "rate_limit_exceeded"
    with pytest.raises(openai.InternalServerError, match="boom"):
        await client.chat.completions.create(model="m", messages=messages)
    with pytest.raises(openai.BadRequestError):
        await client.chat.completions.create(model="m", messages=messages)


async def test_client_retries_after_429(fake: FakeOpenAI) -> None:
    fake.script(fail(429, retry_after=0.05), say("second time lucky"))
    async with AsyncOpenAI(base_url=fake.base_url, api_key="k", max_retries=2) as client:
        result = await client.chat.completions.create(model="m", messages=[{"role": "user", "content": "x"}])
    assert result.choices[0].message.content == "second time lucky"
    assert len(fake.requests) == 2


async def test_chat_dropped_connection_mid_stream(fake: FakeOpenAI, client: AsyncOpenAI) -> None:
    fake.script(say("one two three four five", drop_after=2))
    stream = await client.chat.completions.create(model="m", messages=[{"role": "user", "content": "x"}], stream=True)
    received: list[str] = []

    async def read_all() -> None:
        async for chunk in stream:
            received.append(chunk.choices[0].delta.content or "")

    with pytest.raises((httpx.RemoteProtocolError, openai.APIError)):
        await read_all()
    assert "".join(received) == "one two"


async def test_chat_error_mid_stream(fake: FakeOpenAI, client: AsyncOpenAI) -> None:
    fake.script(say("one two three four", error_after=3, error_message="overloaded"), say("x", error_after=0))
    stream = await client.chat.completions.create(model="m", messages=[{"role": "user", "content": "x"}], stream=True)
    received: list[str] = []

    async def read_all() -> None:
        async for chunk in stream:
            received.append(chunk.choices[0].delta.content or "")

    with pytest.raises(openai.APIError, match="overloaded"):
        await read_all()
    assert "".join(received) == "one two three"
    with pytest.raises(openai.InternalServerError):
        await client.chat.completions.create(model="m", messages=[{"role": "user", "content": "x"}])


async def test_responses_failed_mid_stream(fake: FakeOpenAI, client: AsyncOpenAI) -> None:
    fake.script(say("one two three", error_after=2, error_message="context too long"))
    stream = await client.responses.create(model="m", input="x", stream=True)
    events = [event async for event in stream]
    deltas = [e.delta for e in events if e.type == "response.output_text.delta"]
    assert deltas == ["one", " two"]
    last = events[-1]
    assert last.type == "response.failed"
    assert last.response.error is not None
    assert last.response.error.message == "context too long"
    assert [e.sequence_number for e in events] == list(range(len(events)))


async def test_whole_completion_dropped(fake: FakeOpenAI, client: AsyncOpenAI) -> None:
    fake.script(say("never arrives", drop_after=0))
    with pytest.raises(openai.APIConnectionError):
        await client.chat.completions.create(model="m", messages=[{"role": "user", "content": "x"}])


async def test_paced_tokens_and_stalls(fake: FakeOpenAI, client: AsyncOpenAI) -> None:
    fake.script(say("a b c d e", delay=0.03, stall_at=2, stall=0.4))
    started = time.monotonic()
    stream = await client.chat.completions.create(model="m", messages=[{"role": "user", "content": "x"}], stream=True)
    arrivals: list[float] = []
    async for chunk in stream:
        if chunk.choices[0].delta.content:
            arrivals.append(time.monotonic() - started)
    assert len(arrivals) == 5
    assert arrivals[-1] >= 5 * 0.03 + 0.4
    gaps = [b - a for a, b in itertools.pairwise(arrivals)]
    assert gaps[1] >= 0.4  # the stall sits between the second and the third token
    # No upper bound on the other gaps: a busy machine may stretch any of them (pacing speed is not a test's business).


async def test_stall_before_headers_times_out_the_client(fake: FakeOpenAI) -> None:
    fake.script(say("late", stall_before=30))
    async with AsyncOpenAI(base_url=fake.base_url, api_key="k", max_retries=0, timeout=0.3) as client:
        with pytest.raises(openai.APITimeoutError):
            await client.chat.completions.create(model="m", messages=[{"role": "user", "content": "x"}])


async def test_client_going_away_stops_a_long_stream() -> None:
    async with (
        FakeOpenAI.start(say("word " * 1000, delay=0.1)) as fake,
        AsyncOpenAI(base_url=fake.base_url, api_key="k", max_retries=0) as client,
    ):
        stream = await client.chat.completions.create(
            model="m", messages=[{"role": "user", "content": "x"}], stream=True
        )
        async for _chunk in stream:
            break
        assert fake.active == 1
        await stream.close()
        # 1000 tokens at 100 ms would take 100 s; the server notices the disconnect at the next token (a generous
        # wait, well below the 100 s the stream would last).
        async with asyncio.timeout(60):
            while fake.active:
                await asyncio.sleep(0.01)


async def test_default_reply_echo_and_empty_script(fake: FakeOpenAI, client: AsyncOpenAI) -> None:
    messages: Any = [{"role": "system", "content": "sys"}, {"role": "user", "content": "say this back"}]
    with pytest.raises(openai.InternalServerError, match="no scripted reply"):
        await client.chat.completions.create(model="m", messages=messages)
    fake.default = echo()
    for _ in range(2):
        result = await client.chat.completions.create(model="m", messages=messages)
        assert result.choices[0].message.content == "say this back"
    fake.script(say("scripted first"))
    result = await client.chat.completions.create(model="m", messages=messages)
    assert result.choices[0].message.content == "scripted first"
    assert len(fake.requests) == 4
    fake.reset()
    assert fake.requests == []
    assert fake.default is None


# Responses -------------------------------------------------------------------------------------------------------


async def test_responses_stream_text(fake: FakeOpenAI, client: AsyncOpenAI) -> None:
    fake.script(say("Streaming over responses", tokens=3, output_tokens=9))
    stream = await client.responses.create(model="gpt-4.1", input="hello", instructions="be brief", stream=True)
    kinds: list[str] = []
    deltas: list[str] = []
    completed = None
    sequence: list[int] = []
    async for event in stream:
        kinds.append(event.type)
        sequence.append(event.sequence_number)
        if event.type == "response.output_text.delta":
            deltas.append(event.delta)
        if event.type == "response.completed":
            completed = event.response
    assert kinds[:4] == [
        "response.created",
        "response.in_progress",
        "response.output_item.added",
        "response.content_part.added",
    ]
    assert kinds[-4:] == [
        "response.output_text.done",
        "response.content_part.done",
        "response.output_item.done",
        "response.completed",
    ]
    assert sequence == list(range(len(kinds)))
    assert len(deltas) == 3
    assert "".join(deltas) == "Streaming over responses"
    assert completed is not None
    assert completed.output_text == "Streaming over responses"
    assert completed.usage is not None
    assert completed.usage.output_tokens == 9
    assert completed.instructions == "be brief"
    assert fake.last_request.path == "/v1/responses"
    assert fake.last_request.last_user_text == "hello"


async def test_responses_stream_tool_calls(fake: FakeOpenAI, client: AsyncOpenAI) -> None:
    fake.script(call("search", {"query": "cats and dogs"}, text="Searching."))
    stream = await client.responses.create(model="m", input=[{"role": "user", "content": "find"}], stream=True)
    arguments = ""
    completed = None
    async for event in stream:
        if event.type == "response.function_call_arguments.delta":
            arguments += event.delta
        if event.type == "response.completed":
            completed = event.response
    assert json.loads(arguments) == {"query": "cats and dogs"}
    assert completed is not None
    assert [item.type for item in completed.output] == ["message", "function_call"]
    function_call = completed.output[1]
    assert function_call.type == "function_call"
    assert function_call.name == "search"
    assert function_call.arguments == arguments


async def test_responses_whole_and_errors(fake: FakeOpenAI, client: AsyncOpenAI) -> None:
    fake.script(say("not streamed"), fail(429, retry_after=1), fail(503))
    response = await client.responses.create(model="m", input="hi")
    assert response.output_text == "not streamed"
    assert response.status == "completed"
    with pytest.raises(openai.RateLimitError):
        await client.responses.create(model="m", input="hi", stream=True)
    with pytest.raises(openai.InternalServerError):
        await client.responses.create(model="m", input="hi")


async def test_reasoning_on_both_apis(fake: FakeOpenAI, client: AsyncOpenAI) -> None:
    fake.script(say("The answer.", reasoning="Think it through first."), say("Sure.", reasoning="Hmm, fine."))
    stream = await client.responses.create(model="o3", input="q", stream=True)
    summary = ""
    completed = None
    async for event in stream:
        if event.type == "response.reasoning_summary_text.delta":
            summary += event.delta
        if event.type == "response.completed":
            completed = event.response
    assert summary == "Think it through first."
    assert completed is not None
    assert [item.type for item in completed.output] == ["reasoning", "message"]
    assert completed.usage is not None
    assert completed.usage.output_tokens_details.reasoning_tokens == 4

    chat_stream = await client.chat.completions.create(
        model="m", messages=[{"role": "user", "content": "q"}], stream=True
    )
    reasoning = ""
    text = ""
    async for chunk in chat_stream:
        delta = chunk.choices[0].delta
        reasoning += (delta.model_extra or {}).get("reasoning_content") or ""
        text += delta.content or ""
    assert (reasoning, text) == ("Hmm, fine.", "Sure.")


# The Agents SDK --------------------------------------------------------------------------------------------------


@function_tool
def add(a: int, b: int) -> str:
    """Add two integers."""
    return str(a + b)


@pytest.mark.parametrize("api", ["chat_completions", "responses"])
async def test_agents_sdk_streamed_run_with_a_tool_round_trip(fake: FakeOpenAI, client: AsyncOpenAI, api: str) -> None:
    fake.script(
        call("add", {"a": 2, "b": 3}, text="Adding."),
        say("The sum is 5.", delay=0.001, input_tokens=40, output_tokens=5),
    )
    model = (
        OpenAIChatCompletionsModel(model="gpt-4o", openai_client=client)
        if api == "chat_completions"
        else OpenAIResponsesModel(model="gpt-4o", openai_client=client)
    )
    agent = Agent(
        name="calc", instructions="You add.", model=model, tools=[add], model_settings=ModelSettings(include_usage=True)
    )
    result = Runner.run_streamed(agent, "What is 2 + 3?", run_config=RunConfig(tracing_disabled=True))
    text_deltas: list[str] = []
    tool_outputs: list[Any] = []
    async for event in result.stream_events():
        if event.type == "raw_response_event" and event.data.type == "response.output_text.delta":
            text_deltas.append(event.data.delta)
        if event.type == "run_item_stream_event" and event.name == "tool_output":
            tool_outputs.append(event.item.output)
    assert result.final_output == "The sum is 5."
    assert "".join(text_deltas) == "Adding.The sum is 5."
    assert tool_outputs == ["5"]
    assert len(fake.requests) == 2
    first, second = fake.requests
    assert first.body["stream"] is True
    assert "add" in json.dumps(first.body["tools"])
    if api == "chat_completions":
        tool_messages = [m for m in second.body["messages"] if m["role"] == "tool"]
        assert [m["content"] for m in tool_messages] == ["5"]
        assert first.body["stream_options"] == {"include_usage": True}
    else:
        outputs = [i for i in second.body["input"] if i.get("type") == "function_call_output"]
        assert [o["output"] for o in outputs] == ["5"]
    # "Adding." is one token, its 13 characters of arguments three more; then the scripted 5.
    assert result.context_wrapper.usage.output_tokens == 4 + 5
    assert result.context_wrapper.usage.requests == 2


async def test_agents_sdk_replays_reasoning_items_on_responses(fake: FakeOpenAI, client: AsyncOpenAI) -> None:
    fake.script(call("add", {"a": 1, "b": 1}, reasoning="Use the tool."), say("2"))
    agent = Agent(name="r", model=OpenAIResponsesModel(model="o3", openai_client=client), tools=[add])
    result = Runner.run_streamed(agent, "1+1?", run_config=RunConfig(tracing_disabled=True))
    names = [e.name async for e in result.stream_events() if e.type == "run_item_stream_event"]
    assert names[0] == "reasoning_item_created"
    assert result.final_output == "2"
    second_input = fake.requests[1].body["input"]
    kinds = [item.get("type") for item in second_input if isinstance(item, dict)]
    assert kinds.index("reasoning") < kinds.index("function_call") < kinds.index("function_call_output")


@pytest.mark.parametrize("api", ["chat_completions", "responses"])
async def test_agents_sdk_sees_a_mid_stream_error(fake: FakeOpenAI, client: AsyncOpenAI, api: str) -> None:
    fake.script(say("partial text here", error_after=2, error_message="upstream overloaded"))
    model = (
        OpenAIChatCompletionsModel(model="gpt-4o", openai_client=client)
        if api == "chat_completions"
        else OpenAIResponsesModel(model="gpt-4o", openai_client=client)
    )
    result = Runner.run_streamed(Agent(name="a", model=model), "hi", run_config=RunConfig(tracing_disabled=True))
    deltas: list[str] = []

    async def consume() -> None:
        async for event in result.stream_events():
            if event.type == "raw_response_event" and event.data.type == "response.output_text.delta":
                deltas.append(event.data.delta)

    with pytest.raises((openai.APIError, AgentsException), match="upstream overloaded"):
        await consume()
    assert "".join(deltas) == "partial text"


# Out of process, over the control API ----------------------------------------------------------------------------


async def test_out_of_process_server_and_control_api() -> None:
    port = free_port()
    default = json.dumps({"text": "default words", "delay": 0})
    process = subprocess.Popen(
        [sys.executable, "-m", "tests.fakes.openai_server", "--port", str(port), "--default", default],
        cwd=ROOT,
    )
    try:
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}", timeout=5) as http:
            deadline = time.monotonic() + 15
            while True:
                try:
                    await http.get("/_control/requests")
                    break
                except httpx.TransportError:
                    if time.monotonic() > deadline or process.poll() is not None:
                        raise
                    await asyncio.sleep(0.05)
            bad = await http.post("/_control/script", json={"text": "not a list"})
            assert bad.status_code == 400
            assert bad.json()["code"] == "bad_request"
            bad = await http.post("/_control/script", json=[{"nonsense": 1}])
            assert bad.status_code == 400
            queued = await http.post(
                "/_control/script",
                json=[
                    {"text": "scripted", "tokens": 2},
                    {"tool_calls": [{"name": "f", "arguments": {"x": 1}}]},
                    {"status": 429, "retry_after": 2},
                ],
            )
            assert queued.json() == {"queued": 3}
            async with AsyncOpenAI(base_url=f"http://127.0.0.1:{port}/v1", api_key="k", max_retries=0) as client:
                messages: Any = [{"role": "user", "content": "hi"}]
                first = await client.chat.completions.create(model="m", messages=messages)
                assert first.choices[0].message.content == "scripted"
                second = await client.chat.completions.create(model="m", messages=messages)
                assert second.choices[0].message.tool_calls is not None
                with pytest.raises(openai.RateLimitError):
                    await client.chat.completions.create(model="m", messages=messages)
                fallback = await client.chat.completions.create(model="m", messages=messages)
                assert fallback.choices[0].message.content == "default words"
            recorded = (await http.get("/_control/requests")).json()
            assert [r["path"] for r in recorded] == ["/v1/chat/completions"] * 4
            assert recorded[0]["body"]["messages"] == [{"role": "user", "content": "hi"}]
            assert (await http.put("/_control/default", content=b"null")).json() == {"default": None}
            assert (await http.post("/_control/reset")).status_code == 200
            assert (await http.get("/_control/requests")).json() == []
    finally:
        process.terminate()
        process.wait(timeout=10)


def test_reply_json_round_trip() -> None:
    reply = call("f", {"a": [1, 2]}, text="t", delay=0.5)
    assert Reply.from_json(reply.to_json()) == reply
    with pytest.raises(ValueError, match="unknown reply fields"):
        Reply.from_json({"txt": "typo"})
    with pytest.raises(ValueError, match="wrong type"):
        Reply.from_json({"tokens": "3"})
    with pytest.raises(ValueError, match="wrong type"):
        Reply.from_json({"echo": 1})
    assert Reply.from_json({"delay": 1, "retry_after": None}).delay == 1
