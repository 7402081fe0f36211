"""The lean model stream against the stock `openai` stream: the same SDK events, field by field, for every scripted
case of the fake server, on both APIs; its SSE framing; and its request body against the client's transform."""

from __future__ import annotations

import contextlib
import gzip
import math
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any, get_args, get_type_hints

import httpx2
import openai
import pydantic
import pytest
from agents import Agent, ModelSettings, RunConfig, Runner, function_tool
from agents.models.openai_chatcompletions import OpenAIChatCompletionsModel
from agents.models.openai_responses import OpenAIResponsesModel
from openai import AsyncOpenAI
from openai._streaming import SSEDecoder as StockDecoder
from openai._utils import async_maybe_transform
from openai._utils._transform import PropertyInfo
from openai.types.chat import ChatCompletionChunk, completion_create_params
from openai.types.responses import response_create_params
from openai.types.shared import Reasoning
from typing_extensions import is_typeddict

from chinwag.config import Settings
from chinwag.llm.lean_stream import (
    LeanAzureOpenAI,
    LeanChatStream,
    LeanOpenAI,
    LeanResponsesStream,
    plain,
    request_body,
)
from chinwag.llm.provider import LlmClients
from chinwag.llm.sse import MAX_EVENT_BYTES, EventTooLarge, ServerEvent, SSEParser
from chinwag.llm.tokens import ApproximateCounter
from tests.fakes.openai_script import Reply, ToolCall, call, calls, echo, fail, say
from tests.fakes.openai_server import FakeOpenAI

# --- SSE framing -----------------------------------------------------------------------------------------------


def _parse(*chunks: bytes) -> list[ServerEvent]:
    parser = SSEParser()
    return [event for chunk in chunks for event in parser.feed(chunk)]


def test_sse_every_line_end_and_a_crlf_split_between_reads() -> None:
    body = b'data: {"a":1}\r\n\r\ndata: 2\n\ndata: 3\r\rdata: 4\r\n\r\n'
    whole = _parse(body)
    assert [e.data for e in whole] == [b'{"a":1}', b"2", b"3", b"4"]
    # Every split point, one byte at a time included, gives the same events.
    for cut in range(1, len(body)):
        assert _parse(body[:cut], body[cut:]) == whole
    assert _parse(*(body[i : i + 1] for i in range(len(body)))) == whole


def test_sse_comments_event_names_multiline_data_and_fields() -> None:
    events = _parse(
        b": comment\n"
        b'event: response.created\ndata: {"a":\ndata:1}\nid: 7\nretry: 100\n\n'
        b"event: only-a-name\n\n"  # no data: not dispatched, and its name does not leak into the next event
        b"data\n\n"  # a field name alone: an empty data line
        b"data:no-space\nunknown: field\n\n"
        b"data: cut off by the end of the body"
    )
    assert events == [
        ServerEvent(data=b'{"a":\n1}', event="response.created", id="7", retry=100),
        ServerEvent(data=b"", id="7", retry=100),
        ServerEvent(data=b"no-space", id="7", retry=100),
    ]


def test_sse_whole_event_reads_give_what_byte_by_byte_reads_give() -> None:
    """The short paths (a read that is one whole `data:` event, or one whole `event:` + `data:` event) against the
    general one, which a byte at a time always takes."""
    reads = [
        b": comment\n\n",
        b'event: response.output_text.delta\ndata: {"delta":"Hi"}\n\n',
        b"event: \ndata: {}\n\n",  # an empty name: the event has none
        b"event: e\ndata:  two spaces\n\n",
        b"event: e\nid: 3\n\n",  # no data: not dispatched, but the id stays
        b"event: named\ndata: 1\n\n",
        b"data: unnamed\n\n",
        b"event: e\ndata:no-space\n\n",
        b"event:no-space\ndata: y\n\n",
        b"event: x\n",  # a name alone in one read, its data in the next
        b"data: z\n\n",
        b"event: e\r\ndata: crlf\r\n\r\n",
    ]
    whole = _parse(*reads)
    assert _parse(*(b[i : i + 1] for b in reads for i in range(len(b)))) == whole
    assert [(e.event, e.data) for e in whole] == [
        ("response.output_text.delta", b'{"delta":"Hi"}'),
        (None, b"{}"),
        ("e", b" two spaces"),
        ("named", b"1"),
        (None, b"unnamed"),
        ("e", b"no-space"),
        ("no-space", b"y"),
        ("x", b"z"),
        ("e", b"crlf"),
    ]
    assert {e.id for e in whole[3:]} == {"3"}


def test_sse_an_event_without_data_is_not_dispatched_unlike_the_stock_decoder() -> None:
    """The one place the lean parser parts from the stock stream on purpose: the spec drops an event that has no
    data (a lone `event:` or `retry:`); the client's decoder dispatches it, and its stream then fails on
    `json.loads("")`. (A server sending one is not following the API; the lean stream skips it.)"""
    body = b"retry: 10\n\nevent: ping\n\ndata: 1\n\n"
    assert _parse(body) == [ServerEvent(data=b"1", retry=10)]
    decoder = StockDecoder()
    stock = [decoder.decode(line) for line in body.decode().split("\n")]
    assert [e.data for e in stock if e is not None] == ["", "", "1"]


def test_sse_byte_order_mark_skipped_even_split() -> None:
    assert _parse(b"\xef\xbb", b"\xbfdata: x\n\n") == [ServerEvent(data=b"x")]
    assert _parse(b"\xef\xbb\xbfdata: x\n\n") == [ServerEvent(data=b"x")]


def test_sse_a_line_past_the_bound_is_refused() -> None:
    parser = SSEParser()
    with pytest.raises(EventTooLarge):
        parser.feed(b"data: " + b"x" * (MAX_EVENT_BYTES + 1))


# --- The request body ------------------------------------------------------------------------------------------


def _chat_arguments() -> dict[str, Any]:
    return {
        "model": "gpt-4o",
        "messages": [
            {"role": "system", "content": "Be brief."},
            {
                "role": "user",
                "content": [
                    {"type": "text", "text": "hi"},
                    {"type": "image_url", "image_url": {"url": "data:image/png;base64,AAAA"}},
                ],
            },
            {
                "role": "assistant",
                "content": None,
                "tool_calls": [{"id": "c1", "type": "function", "function": {"name": "f", "arguments": "{}"}}],
            },
            {"role": "tool", "tool_call_id": "c1", "content": "out"},
        ],
        "tools": [{"type": "function", "function": {"name": "f", "parameters": {"type": "object"}}}],
        "temperature": openai.omit,
        "top_p": 0.5,
        "max_tokens": 100,
        "stream": True,
        "stream_options": {"include_usage": True},
        "parallel_tool_calls": openai.omit,
        "metadata": openai.NOT_GIVEN,
    }


def _responses_arguments() -> dict[str, Any]:
    return {
        "model": "gpt-4o",
        "instructions": "Be brief.",
        "input": [
            {"role": "user", "content": "hi"},
            {"type": "function_call", "call_id": "c1", "name": "f", "arguments": "{}"},
            {"type": "function_call_output", "call_id": "c1", "output": "out"},
        ],
        "include": [],
        "tools": [{"type": "function", "name": "f", "parameters": {"type": "object"}, "strict": False}],
        "reasoning": Reasoning(effort="low"),
        "max_output_tokens": 100,
        "stream": True,
        "text": openai.omit,
        "previous_response_id": openai.omit,
    }


async def test_request_body_is_what_the_transform_sends() -> None:
    chat = _chat_arguments()
    assert request_body(chat) == await async_maybe_transform(
        chat, completion_create_params.CompletionCreateParamsStreaming
    )
    responses = _responses_arguments()
    assert request_body(responses) == await async_maybe_transform(
        responses, response_create_params.ResponseCreateParamsStreaming
    )
    # Omitted values are dropped at any depth of the small parameters, and pydantic models sent as their set fields.
    assert plain({"a": openai.omit, "b": ({"c": openai.NOT_GIVEN, "d": 1},), "r": Reasoning(effort="low")}) == {
        "b": [{"d": 1}],
        "r": {"effort": "low"},
    }


def _aliases(annotation: Any, seen: set[int]) -> list[str]:
    """Every `PropertyInfo(alias=...)` reachable from a parameter type (the transform renames those keys)."""

    if id(annotation) in seen:
        return []
    seen.add(id(annotation))
    found = [m.alias for m in getattr(annotation, "__metadata__", ()) if isinstance(m, PropertyInfo) and m.alias]
    if is_typeddict(annotation):
        for hint in get_type_hints(annotation, include_extras=True).values():
            found += _aliases(hint, seen)
    for arg in get_args(annotation):
        found += _aliases(arg, seen)
    return found


def test_no_request_parameter_has_an_alias() -> None:
    """`request_body` renames no key because no key of these parameters has an alias: an `openai` upgrade adding
    one fails here."""
    assert _aliases(completion_create_params.CompletionCreateParamsStreaming, set()) == []
    assert _aliases(response_create_params.ResponseCreateParamsStreaming, set()) == []


# --- Lean against stock, through the SDK -----------------------------------------------------------------------


@function_tool
def lookup(city: str) -> str:
    """Look up the weather of a city."""
    return f"sunny in {city}"


@dataclass(frozen=True)
class Case:
    name: str
    replies: tuple[Reply, ...]
    apis: tuple[str, ...] = ("chat_completions", "responses")
    settings: tuple[tuple[str, Any], ...] = ()


CASES = [
    Case("text", (say("Hello there, how can I help?"),)),
    Case("text in pieces with reasoning", (say("Paris is the capital.", tokens=4, reasoning="They ask of France."),)),
    Case("a tool call then text", (call("lookup", {"city": "Oslo"}, text="Checking."), say("Sunny in Oslo."))),
    Case(
        "two tool calls then text",
        (calls(ToolCall("lookup", '{"city": "Oslo"}'), ToolCall("lookup", '{"city": "Rome"}')), say("Both sunny.")),
    ),
    Case("cut by the output cap", (say("A long answer that was cut", finish_reason="length"),)),
    Case("echo", (echo(),)),
    Case("usage given", (say("Counted.", input_tokens=123, output_tokens=7),)),
    Case("paced with a pause", (say("one two three", delay=0.001, stall_at=1, stall=0.05),)),
    Case("dropped connection", (say("partial answer that breaks", drop_after=2),)),
    Case("error mid-stream", (say("half an answer then", error_after=3, error_message="The model broke."),)),
    Case("error mid-stream, no message", (say("half an answer", error_after=1),)),
    Case("error before any chunk", (say("nothing", error_after=0, error_message="At once."),)),
    Case("client error", (fail(400, message="Bad request, says the model."),)),
    Case("server errors past the retries", (fail(503, retry_after=0.01),) * 3),
    Case("a retried error then text", (fail(429, retry_after=0.01), say("After a retry."))),
    Case(
        "a stall mid-stream past the timeout",
        (say("one two three", stall_at=1, stall=2.0),),
        settings=(("llm_stall_timeout_s", 0.3),),
    ),
    *(
        Case(f"recorded {name}", (Reply(recorded=name),), apis=("chat_completions",))
        for name in (
            "chat_text_usage.sse",
            "chat_text_no_usage.sse",
            "chat_tool_call.sse",
            "chat_length.sse",
            "chat_quirks.sse",
        )
    ),
    *(
        Case(f"recorded {name}", (Reply(recorded=name),), apis=("responses",))
        for name in ("responses_text.sse", "responses_quirks.sse")
    ),
]
PARAMS = [pytest.param(case, api, id=f"{api}: {case.name}") for case in CASES for api in case.apis]
# Stamped with the clock (by the fake server, and by the SDK on the Response objects it makes of a chat completions
# stream): compared by type only.
_CLOCK_FIELDS = {"created_at", "created"}


def _clock(value: Any) -> str:
    kind = "int" if isinstance(value, float) and value.is_integer() else type(value).__name__
    return f"<clock {kind}>"


def _shape(value: Any) -> Any:
    """A value as comparable data: every pydantic model as its class, the fields it was given and each field's
    shape (extras included), so that two objects compare equal only when they agree field by field."""
    if isinstance(value, pydantic.BaseModel):
        fields = dict(value.__dict__)
        fields.update(value.__pydantic_extra__ or {})
        return (
            type(value).__qualname__,
            sorted(value.model_fields_set),
            {name: _clock(item) if name in _CLOCK_FIELDS else _shape(item) for name, item in sorted(fields.items())},
        )
    if isinstance(value, dict):
        return {key: _shape(item) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return [_shape(item) for item in value]
    if isinstance(value, float) and math.isfinite(value) and value.is_integer():
        return int(value)  # an int sent for a float field: the validator makes it 1.0, construct keeps 1
    return value


def _event_shape(event: Any) -> Any:
    if event.type == "raw_response_event":
        return ("raw", _shape(event.data))
    if event.type == "run_item_stream_event":
        return ("item", event.name, type(event.item).__qualname__, _shape(event.item.raw_item))
    return ("agent", event.new_agent.name)


async def _run(case: Case, api: str, *, lean: bool) -> tuple[list[Any], Any, list[Any]]:
    async with FakeOpenAI.start(*case.replies) as fake:
        settings = Settings(
            _env_file=None,
            openai_base_url=fake.base_url,
            llm_api=api,
            lean_stream=lean,
            models="gpt-4o",
            **dict(case.settings),
        )
        llm = LlmClients(settings, counter=ApproximateCounter())
        events: list[Any] = []
        error: Any = None
        async with contextlib.aclosing(llm), llm.run_provider() as provider:
            assert isinstance(provider.client, (LeanOpenAI if lean else AsyncOpenAI))
            assert isinstance(provider.client, LeanOpenAI) == lean
            agent = Agent(
                name="a", instructions="Help.", tools=[lookup], model_settings=ModelSettings(include_usage=True)
            )
            result = Runner.run_streamed(
                agent, "Weather in Oslo?", run_config=RunConfig(model_provider=provider, tracing_disabled=True)
            )
            try:
                async for event in result.stream_events():
                    events.append(_event_shape(event))
            except Exception as exc:
                error = (type(exc), str(exc), _shape(getattr(exc, "body", None)))
        bodies = [request.body for request in fake.requests]
        return events, error, bodies


@pytest.mark.parametrize(("case", "api"), PARAMS)
async def test_lean_stream_gives_the_sdk_what_the_stock_stream_does(case: Case, api: str) -> None:
    lean_events, lean_error, lean_bodies = await _run(case, api, lean=True)
    stock_events, stock_error, stock_bodies = await _run(case, api, lean=False)
    assert lean_error == stock_error
    assert len(lean_events) == len(stock_events)
    for index, (lean, stock) in enumerate(zip(lean_events, stock_events, strict=True)):
        assert lean == stock, f"event {index} differs"
    assert lean_bodies == stock_bodies
    assert lean_events, "the case produced no event at all"


async def test_the_lean_path_is_the_one_taken(monkeypatch: pytest.MonkeyPatch) -> None:
    """The lean classes really parse (a test of the test above: both paths must not be the stock one)."""
    seen: list[str] = []
    original = LeanChatStream._decode, LeanResponsesStream._decode

    def chat_decode(self: Any, event: ServerEvent) -> Any:
        seen.append("chat")
        return original[0](self, event)

    def responses_decode(self: Any, event: ServerEvent) -> Any:
        seen.append("responses")
        return original[1](self, event)

    monkeypatch.setattr(LeanChatStream, "_decode", chat_decode)
    monkeypatch.setattr(LeanResponsesStream, "_decode", responses_decode)
    for api in ("chat_completions", "responses"):
        events, error, _ = await _run(Case("text", (say("Hello there"),)), api, lean=True)
        assert error is None
        assert events
    assert "chat" in seen
    assert "responses" in seen


def test_lean_clients_keep_the_stock_model_classes() -> None:
    """The SDK's own models stay: only the client under them differs."""
    settings = Settings(_env_file=None, openai_base_url="http://127.0.0.1:9/v1", models="gpt-4o")
    llm = LlmClients(settings, counter=ApproximateCounter())
    client = llm.new_client()
    assert isinstance(client, LeanOpenAI)
    assert isinstance(OpenAIChatCompletionsModel(model="m", openai_client=client), OpenAIChatCompletionsModel)
    assert isinstance(OpenAIResponsesModel(model="m", openai_client=client), OpenAIResponsesModel)
    azure = LlmClients(
        Settings(_env_file=None, azure_openai_endpoint="https://x.openai.azure.com", openai_api_version="2025-01-01"),
        counter=ApproximateCounter(),
    ).new_client()
    assert isinstance(azure, LeanAzureOpenAI)


_CHUNKS = [
    b'{"id":"c","object":"chat.completion.chunk","created":1,"model":"m","choices":[{"index":0,"delta":{"content":"Hi"},'
    b'"logprobs":null,"finish_reason":null}]}',
    b'{"id":"c","object":"chat.completion.chunk","created":1,"model":"m","choices":[{"index":0,"delta":'
    b'{"reasoning_content":"Think.","reasoning":"Also.","thinking_blocks":[{"type":"thinking","thinking":"t"}],'
    b'"annotations":[],"x_vendor":1},"finish_reason":null}]}',
    b'{"id":"c","object":"chat.completion.chunk","created":1,"model":"m","choices":[{"index":0,"delta":'
    b'{"reasoning":null,"tool_calls":[{"index":0,"id":"call_1","type":"function","function":{"name":"f",'
    b'"arguments":""}}]},"finish_reason":null}]}',
    b'{"id":"c","object":"chat.completion.chunk","created":1,"model":"m","choices":[],"usage":{"prompt_tokens":1,'
    b'"completion_tokens":2,"total_tokens":3}}',
]
# What the SDK's chunk handler probes a delta for, and how (`hasattr` then truth, or `getattr` with a default).
_PROBED = ("thinking_blocks", "reasoning_content", "reasoning", "annotations", "audio", "refusal", "content")


@pytest.mark.parametrize("data", _CHUNKS)
def test_a_lean_chunk_is_the_stock_chunk_field_by_field(data: bytes) -> None:
    lean = LeanChatStream._validate(data)
    stock = ChatCompletionChunk.model_validate_json(data, strict=True)
    assert isinstance(lean, ChatCompletionChunk)

    def unnamed(shape: Any) -> Any:  # `_shape` without the class names, which differ on purpose
        if isinstance(shape, tuple) and len(shape) == 3 and isinstance(shape[0], str):
            return (shape[1], unnamed(shape[2]))
        if isinstance(shape, dict):
            return {key: unnamed(item) for key, item in shape.items()}
        if isinstance(shape, list):
            return [unnamed(item) for item in shape]
        return shape

    assert unnamed(_shape(lean)) == unnamed(_shape(stock))
    assert lean.model_dump() == stock.model_dump()
    assert lean.model_dump_json() == stock.model_dump_json()
    for lean_choice, stock_choice in zip(lean.choices, stock.choices, strict=True):
        for name in _PROBED:
            assert getattr(lean_choice.delta, name, None) == getattr(stock_choice.delta, name, None), name
            assert bool(hasattr(lean_choice.delta, name) and getattr(lean_choice.delta, name)) == bool(
                hasattr(stock_choice.delta, name) and getattr(stock_choice.delta, name)
            ), name


@pytest.mark.parametrize("coding", ["identity", "gzip", None, "read"])
async def test_a_stream_is_read_whatever_its_content_coding(coding: str | None) -> None:
    """Read raw when the body streams without a content coding, decoded when it has one, and as read when the
    transport read it already."""
    body = b"".join(b"data: " + chunk + b"\n\n" for chunk in _CHUNKS[:1] * 3) + b"data: [DONE]\n\n"
    headers = {"content-type": "text/event-stream"}
    if coding is not None and coding != "read":
        headers["content-encoding"] = coding
        if coding == "gzip":
            body = gzip.compress(body)

    async def parts() -> AsyncIterator[bytes]:
        for start in range(0, len(body), 50):
            yield body[start : start + 50]

    def answer(request: httpx2.Request) -> httpx2.Response:
        # "read": a body the transport read whole already (as `MockTransport` does with bytes).
        return httpx2.Response(200, headers=headers, content=body if coding == "read" else parts())

    http = httpx2.AsyncClient(transport=httpx2.MockTransport(answer))
    client = LeanOpenAI(api_key="k", base_url="http://model.test/v1", http_client=http)
    async with contextlib.aclosing(http):
        stream = await client.chat.completions.create(model="m", messages=[], stream=True)
        assert isinstance(stream, LeanChatStream)
        texts = [chunk.choices[0].delta.content async for chunk in stream]
    assert texts == ["Hi"] * 3


@pytest.fixture
async def fake() -> AsyncIterator[FakeOpenAI]:
    async with FakeOpenAI.start() as server:
        yield server


async def test_azure_deployment_url_on_the_lean_path(fake: FakeOpenAI) -> None:
    """The lean body is still a mapping, so the Azure client still finds the deployment in it."""
    root = fake.base_url.removesuffix("/v1")
    settings = Settings(
        _env_file=None,
        azure_openai_endpoint=root,
        azure_openai_api_key="test-key",
        openai_api_version="2025-01-01",
        models="gpt-4o",
    )
    llm = LlmClients(settings, counter=ApproximateCounter())
    fake.script(say("Hi from Azure."))
    async with contextlib.aclosing(llm), llm.run_provider() as provider:
        result = Runner.run_streamed(
            Agent(name="a", instructions="Help."),
            "hi",
            run_config=RunConfig(model_provider=provider, tracing_disabled=True),
        )
        async for _ in result.stream_events():
            pass
    assert result.final_output == "Hi from Azure."
    assert fake.last_request.path == "/openai/deployments/gpt-4o/chat/completions"
    assert fake.last_request.query == "api-version=2025-01-01"


def test_warm_up_builds_the_validators_before_the_first_stream() -> None:
    from chinwag.llm import lean_stream

    lean_stream._responses_event_adapter.cache_clear()
    lean_stream.warm_up("chat_completions")
    assert lean_stream._responses_event_adapter.cache_info().currsize == 0
    lean_stream.warm_up("responses")
    assert lean_stream._responses_event_adapter.cache_info().currsize == 1
