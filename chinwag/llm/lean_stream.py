"""The lean model stream: the `openai` client sends the request, chinwag turns the streamed body into its objects.

Why: the stock `AsyncStream` parses each server-sent event with `json.loads` and then builds the chunk with the
client's `construct_type`, which walks the type annotations in Python (~59 us a Chat Completions chunk here); the
request side walks every history message through TypedDict annotations (`async_maybe_transform`) on every model
call. pydantic's compiled validator does the chunk in ~3 us from the JSON bytes, and the Agents SDK hands the client
plain data already. What stays the client's: auth, base URL and Azure deployments, retries, timeouts, headers, the
HTTP status errors as its exceptions (`_post` is the client's own). What is chinwag's: the body is the SDK's keyword
arguments with omitted values dropped (no walk of the history), and the stream is `SSEParser` plus
`model_validate_json` (a `TypeAdapter` for the Responses event union).

The same objects reach the SDK's stream handling as with the stock stream; where the two could differ, the stock
behaviour is kept on purpose:
- `data: [DONE]` ends the stream (and an HTTP/1.1 body is drained so the connection can be reused);
- an event whose JSON has a truthy `error` raises `openai.APIError` with that body, as the stock stream does;
- validation is strict (no "1" made into 1), and an event the validator refuses (a field of an unexpected type, an
  event type this `openai` version does not know) is built by the client's own `construct_type`, exactly as the
  stock stream would build it; unknown fields are kept as extras either way (the client's models allow extras);
- a dropped connection or a read timeout raise `APIConnectionError` / `APITimeoutError`.
A history chinwag encoded already (`chinwag.llm.history`) comes through `extra_body` and is written into the body,
which is then sent as bytes.
`CHINWAG_LEAN_STREAM=false` puts the stock client back (`LlmClients.new_client`).
"""

from __future__ import annotations

import contextlib
import functools
import inspect
import json
from collections.abc import AsyncIterator, Callable, Mapping
from typing import Annotated, Any, Union, get_args

import httpx2
import orjson
import pydantic
from openai import APIConnectionError, APIError, APITimeoutError, AsyncAzureOpenAI, AsyncOpenAI
from openai._base_client import make_request_options
from openai._compat import cached_property
from openai._compat import model_dump as _openai_model_dump
from openai._httpx2 import request_exceptions, timeout_exceptions
from openai._streaming import AsyncStream
from openai._streaming_cleanup import drain_response_async
from openai._types import NotGiven, Omit, not_given
from openai._utils import path_template
from openai.lib._chat_completion_resources import validate_response_format
from openai.lib.azure import _deployments_endpoints as _azure_deployments_endpoints
from openai.resources.chat import AsyncChat
from openai.resources.chat.completions import AsyncCompletions
from openai.resources.responses import AsyncResponses
from openai.types.chat import ChatCompletion, ChatCompletionChunk
from openai.types.chat.chat_completion_chunk import Choice, ChoiceDelta
from openai.types.responses import Response, ResponseStreamEvent

from chinwag.llm.history import SPLICE_KEY, HistorySplice, dumps
from chinwag.llm.sse import ServerEvent, SSEParser

# Keys whose values the Agents SDK (and chinwag's own one-shot calls) build as plain JSON data: the history and the
# tools. Everything else is small, and goes through `plain` (omitted values dropped, pydantic models dumped).
_PLAIN_KEYS = frozenset({"messages", "input", "tools"})
_REQUEST_KEYS = frozenset({"extra_headers", "extra_query", "extra_body", "timeout"})


def _create_parameters(method: Callable[..., Any]) -> frozenset[str]:
    return frozenset(name for name in inspect.signature(method).parameters if name != "self")


_CHAT_CREATE_PARAMETERS = _create_parameters(AsyncCompletions.create)
_RESPONSES_CREATE_PARAMETERS = _create_parameters(AsyncResponses.create)


def _omitted(value: object) -> bool:
    return isinstance(value, (Omit, NotGiven))


def plain(value: Any) -> Any:
    """`value` as the `openai` transform would send it: omitted values dropped from mappings, other iterables as
    lists, pydantic models dumped as their set fields in JSON mode. (No request parameter of the two create calls
    has an alias, so there is no key to rename: `tests/llm/test_lean_stream.py` checks both.)"""
    if isinstance(value, Mapping):
        return {key: plain(item) for key, item in value.items() if not _omitted(item)}
    if isinstance(value, (str, int, float, bool)) or value is None:
        return value
    if isinstance(value, (list, tuple)):
        return [plain(item) for item in value]
    if isinstance(value, pydantic.BaseModel):
        return _openai_model_dump(
            value, exclude_unset=True, mode="json", exclude=getattr(value, "__api_exclude__", None)
        )
    if isinstance(value, (set, frozenset)) or inspect.isgenerator(value):
        return [plain(item) for item in value]
    return value


def request_body(arguments: Mapping[str, Any]) -> dict[str, Any]:
    """The JSON body of a create call from its keyword arguments (the request options taken out)."""
    body: dict[str, Any] = {}
    for key, value in arguments.items():
        if key in _REQUEST_KEYS or _omitted(value):
            continue
        body[key] = value if key in _PLAIN_KEYS and isinstance(value, list) else plain(value)
    return body


def spliced_body(body: Mapping[str, Any], splice: HistorySplice) -> bytes:
    """`body` as JSON bytes with the history's encoded parts written into its list `splice.key` at `splice.at`."""
    values = body.get(splice.key)
    parts = [dumps(value) for value in values] if isinstance(values, list) else []
    parts[splice.at : splice.at] = splice.parts
    head = dumps({key: value for key, value in body.items() if key != splice.key})
    joint = b"," if len(head) > 2 else b""
    return b"%s%s%s:[%s]}" % (head[:-1], joint, dumps(splice.key), b",".join(parts))


def _deployment_path(client: Any, path: str, model: Any) -> str:
    # What `AsyncAzureOpenAI._build_request` does with a mapping body, which a body of bytes no longer is.
    if (
        isinstance(client, AsyncAzureOpenAI)
        and path in _azure_deployments_endpoints
        and isinstance(model, str)
        and "/deployments" not in str(client.base_url.path)
    ):
        return path_template("/deployments/{model}", model=model) + path
    return path


async def _lean_post(
    resource: AsyncCompletions | AsyncResponses,
    path: str,
    arguments: dict[str, Any],
    *,
    cast_to: type[Any],
    stream_cls: type[AsyncStream[Any]],
) -> Any:
    extra_body = arguments.get("extra_body")
    body: dict[str, Any] | None = request_body(arguments)
    content: bytes | None = None
    if isinstance(extra_body, Mapping) and SPLICE_KEY in extra_body:
        # A history encoded already (`chinwag.llm.history`): the body is sent as bytes, `extra_body` merged into
        # it the way the client merges it (its keys over the body's, one level).
        splice = extra_body[SPLICE_KEY]
        extra = {key: value for key, value in extra_body.items() if key != SPLICE_KEY}
        assert isinstance(body, dict)
        assert isinstance(splice, HistorySplice)
        path = _deployment_path(resource._client, path, body.get("model"))
        merged = {**body, **extra}
        content = spliced_body(merged, splice) if merged.get(splice.key) is body.get(splice.key) else dumps(merged)
        body = extra_body = None
    options = make_request_options(
        extra_headers=arguments.get("extra_headers"),
        extra_query=arguments.get("extra_query"),
        extra_body=extra_body,
        timeout=arguments.get("timeout", not_given),
        security={"bearer_auth": True},
    )
    return await resource._post(
        path, body=body, content=content, options=options, cast_to=cast_to, stream=True, stream_cls=stream_cls
    )


class _LeanParsing:
    """What makes an `AsyncStream` lean: its events parsed by `SSEParser` and validated from their JSON bytes. (A
    base listed after `AsyncStream[T]`, because the client finds a stream's chunk type from the first base; so each
    stream names `__stream__` again.)"""

    response: httpx2.Response
    _client: AsyncOpenAI
    _cast_to: type[Any]
    _validate: Callable[[bytes], Any]

    async def __stream__(self) -> AsyncIterator[Any]:
        response = self.response
        timeouts, request_errors = timeout_exceptions(), request_exceptions()
        parser = SSEParser()
        # A body still streaming and sent without a content coding (as model streams are) is read raw: no decoder
        # and no chunker between each read and the parser, one async generator fewer per chunk.
        encoding = response.headers.get("content-encoding", "identity").strip().lower()
        raw = encoding in ("", "identity") and not response.is_stream_consumed
        chunks = response.aiter_raw() if raw else response.aiter_bytes()
        try:
            while True:
                try:
                    chunk = await chunks.__anext__()
                except StopAsyncIteration:
                    break
                except timeouts as err:
                    raise APITimeoutError(request=response.request) from err
                except request_errors as err:
                    raise APIConnectionError(request=response.request) from err
                for event in parser.feed(chunk):
                    if event.data.startswith(b"[DONE]"):
                        if response.http_version == "HTTP/1.1":
                            await drain_response_async(response)
                        return
                    yield self._decode(event)
        finally:
            await response.aclose()

    def _decode(self, event: ServerEvent) -> Any:
        data = event.data
        # Only an event that mentions "error" can be one: the others skip the second parse.
        if b'"error"' in data:
            loaded = orjson.loads(data)
            if isinstance(loaded, Mapping) and loaded.get("error"):
                error = loaded["error"]
                message = error.get("message") if isinstance(error, Mapping) else None
                if not message or not isinstance(message, str):
                    message = "An error occurred during streaming"
                raise APIError(message=message, request=self.response.request, body=error)
        try:
            validated = self._validate(data)
        except pydantic.ValidationError:
            # What the validator refuses, the client builds as the stock stream would (json.loads raising its
            # JSONDecodeError for a body that is not JSON at all, as the stock stream does).
            return self._client._process_response_data(
                data=json.loads(data), cast_to=self._cast_to, response=self.response
            )
        return validated


def _extra(model: pydantic.BaseModel, name: str) -> Any:
    extra = model.__pydantic_extra__
    return extra.get(name) if extra else None


class LeanChoiceDelta(ChoiceDelta):
    """`ChoiceDelta` whose vendor attributes read as None when the chunk does not carry them.

    Why: the SDK's chunk handler (openai-agents 0.24) probes every delta for attributes other providers send
    (`thinking_blocks`, `reasoning_content`, `reasoning`, `annotations`) with `hasattr` / `getattr(..., None)`. On a
    stock delta each absent one goes through pydantic's `__getattr__` and two raised `AttributeError`s, about 2 us
    each: 8 us per text chunk, more than validating it. Here each is a property that returns the extra field when the
    chunk has it and None when not, which is how the handler treats an absent one (it tests each for truth, or for a
    `str`); `tests/llm/test_lean_stream.py` runs both against the stock stream. Fields, extras, `model_dump` are the
    stock class's."""

    @property
    def thinking_blocks(self) -> Any:
        return _extra(self, "thinking_blocks")

    @property
    def reasoning_content(self) -> Any:
        return _extra(self, "reasoning_content")

    @property
    def reasoning(self) -> Any:
        return _extra(self, "reasoning")

    @property
    def annotations(self) -> Any:
        return _extra(self, "annotations")


class LeanChoice(Choice):
    """`Choice` with a `LeanChoiceDelta`."""

    delta: LeanChoiceDelta


class LeanChatCompletionChunk(ChatCompletionChunk):
    """`ChatCompletionChunk` whose choices have `LeanChoiceDelta`s (see there)."""

    # Pydantic's way to validate into subclasses is to narrow the field; mypy calls any narrowing of a mutable list
    # field unsafe, and no other spelling keeps the stock class's field, dumps and extras.
    choices: list[LeanChoice]  # type: ignore[assignment]


def _validate_chat_chunk(data: bytes) -> ChatCompletionChunk:
    return LeanChatCompletionChunk.model_validate_json(data, strict=True)


class LeanChatStream(AsyncStream[ChatCompletionChunk], _LeanParsing):
    """Chat Completions chunks."""

    __stream__ = _LeanParsing.__stream__
    _validate = staticmethod(_validate_chat_chunk)


def _discriminated(union: Any) -> Any:
    """The `openai` union `Annotated[Union[...], PropertyInfo(discriminator="type")]` as pydantic's tagged union:
    one dict lookup picks the event's model instead of trying each of ~60 in turn."""
    members = get_args(get_args(union)[0])
    return Annotated[Union[members], pydantic.Field(discriminator="type")]  # noqa: UP007


@functools.cache
def _responses_event_adapter() -> pydantic.TypeAdapter[Any]:
    return pydantic.TypeAdapter(_discriminated(ResponseStreamEvent))


def _validate_responses_event(data: bytes) -> Any:
    return _responses_event_adapter().validate_json(data, strict=True)


class LeanResponsesStream(AsyncStream[ResponseStreamEvent], _LeanParsing):
    """Responses stream events."""

    __stream__ = _LeanParsing.__stream__

    _validate = staticmethod(_validate_responses_event)


def warm_up(api: str) -> None:
    """Build the validators of `api` now (for `asyncio.to_thread` at start-up): pydantic builds a model's validator
    when it is first used, which would stall the event loop, every stream with it, in the first run (~50 ms for the
    chunk model, ~250 ms for the Responses event union here)."""
    if api == "responses":
        _responses_event_adapter()
    else:
        LeanChatCompletionChunk.model_rebuild()
        with contextlib.suppress(pydantic.ValidationError):
            _validate_chat_chunk(b"{}")


class LeanChatCompletions(AsyncCompletions):
    """`chat.completions` whose streamed `create` sends the body as given and answers a `LeanChatStream`. Anything
    else (not streamed, an unknown or missing argument) is the stock method's, errors included."""

    async def create(self, **arguments: Any) -> Any:
        if (
            arguments.get("stream") is not True
            or not arguments.keys() <= _CHAT_CREATE_PARAMETERS
            or "messages" not in arguments
            or "model" not in arguments
        ):
            return await super().create(**arguments)
        validate_response_format(arguments.get("response_format", not_given))
        return await _lean_post(self, "/chat/completions", arguments, cast_to=ChatCompletion, stream_cls=LeanChatStream)


class LeanResponses(AsyncResponses):
    """`responses` whose streamed `create` sends the body as given and answers a `LeanResponsesStream`
    (`with_streaming_response.create`, the path the SDK takes, wraps this `create`)."""

    async def create(self, **arguments: Any) -> Any:
        if arguments.get("stream") is not True or not arguments.keys() <= _RESPONSES_CREATE_PARAMETERS:
            return await super().create(**arguments)
        return await _lean_post(self, "/responses", arguments, cast_to=Response, stream_cls=LeanResponsesStream)


class _LeanChat(AsyncChat):
    @cached_property
    def completions(self) -> LeanChatCompletions:
        return LeanChatCompletions(self._client)


class LeanOpenAI(AsyncOpenAI):
    """`AsyncOpenAI` with the lean stream on `chat.completions.create` and `responses.create`."""

    @cached_property
    def chat(self) -> _LeanChat:
        return _LeanChat(self)

    @cached_property
    def responses(self) -> LeanResponses:
        return LeanResponses(self)


class LeanAzureOpenAI(AsyncAzureOpenAI):
    """`AsyncAzureOpenAI` (deployment URLs, api-version, Azure keys) with the lean stream, as `LeanOpenAI` has it."""

    chat = LeanOpenAI.chat
    responses = LeanOpenAI.responses
