"""Model access: `LlmClients`, built once in the lifespan, hands each run a model provider with its own client.

Why a client per run: closing it is how a run's model stream is cut (an interrupt), and nothing one run does to its
connections (a stream abandoned half-read) can reach another run. Why it is cheap: the per-run clients share one
connection pool (`ModelConnections`: one `ssl.SSLContext`, kept-alive connections), so a run neither builds an SSL
context (~16-30 ms of CPU) nor opens a connection (a TCP and TLS handshake before its first byte). Each run's client
sends through a `_RunTransport` of its own: closing it closes the responses that run still has open, which closes
their connections (a half-read response is never put back in the pool), and leaves the pool and other runs alone.

Tracing: the Agents SDK would export traces to OpenAI; chinwag never does. `LlmClients.open` disables the SDK's
trace provider for the process, and runs also pass `RunConfig(tracing_disabled=True)`.

Keys: OPENAI_API_KEY / AZURE_OPENAI_API_KEY are passed to the client and never logged. Servers that need no key
(Ollama, llama.cpp) get a placeholder, because the `openai` client refuses to be built without one.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
from collections.abc import AsyncIterator, Callable, Mapping, Sequence
from typing import Any, Literal
from urllib.parse import urlsplit, urlunsplit

import httpx2
from agents import ModelSettings, set_tracing_disabled
from agents.models.chatcmpl_converter import Converter
from agents.models.interface import Model, ModelProvider
from agents.models.openai_chatcompletions import OpenAIChatCompletionsModel
from agents.models.openai_responses import OpenAIResponsesModel
from agents.run_internal.items import deduplicate_input_items_preferring_latest
from agents.util._json import _to_dump_compatible
from openai import AsyncAzureOpenAI, AsyncOpenAI, omit
from openai.types.chat import ChatCompletionChunk

from chinwag.config import Settings, SettingsError
from chinwag.llm.catalog import ModelCatalog
from chinwag.llm.history import SPLICE_KEY, History, HistoryCache, HistorySplice, join, prepared, split_history
from chinwag.llm.lean_stream import LeanAzureOpenAI, LeanOpenAI, warm_up
from chinwag.llm.tokens import ApproximateCounter, EncodingFileError, TiktokenCounter, TokenCounter
from chinwag.observability.observer import NULL_OBSERVER, Observer

logger = logging.getLogger(__name__)

PLACEHOLDER_API_KEY = "chinwag-no-key"
MAX_MODEL_CONNECTIONS = 1024
"""Connections to the model provider open at once, all runs together (a run holds one while it streams)."""
KEPT_ALIVE_CONNECTIONS = 64
"""Idle connections kept for the next run's request (each saves it a TCP and TLS handshake)."""
KEEPALIVE_S = 30.0
CONNECT_TIMEOUT_S = 10.0
MAX_RETRIES = 2

LlmApi = Literal["chat_completions", "responses"]


class ModelNotConfigured(Exception):
    """No model provider is configured (no key, no base URL): the message says what to set. A run ends with
    `llm_error` carrying it, instead of a 401 from api.openai.com."""


class _FinishReasons:
    """Wraps a Chat Completions chunk stream and notes the provider's `finish_reason` of choice 0 as it passes.

    The SDK's stream handler turns a `finish_reason: "length"` answer into an ordinary completed response, so a cut
    answer would look finished; the run reads `RunModelProvider.cut` instead. Everything else is the wrapped
    stream's (`close()`, `response`, ...)."""

    def __init__(self, stream: Any, provider: RunModelProvider) -> None:
        self._stream = stream
        self._provider = provider

    def __getattr__(self, name: str) -> Any:
        return getattr(self._stream, name)

    async def __aiter__(self) -> AsyncIterator[ChatCompletionChunk]:
        async for chunk in self._stream:
            for choice in chunk.choices:
                if choice.index == 0 and choice.finish_reason is not None:
                    self._provider.cut = choice.finish_reason == "length"
            yield chunk


class _ObservedModel:
    """Mixed into the SDK's models (subclasses, never wrappers: the SDK checks their types): each call to the
    provider, streamed or not, is timed and traced through the run provider's `Observer`."""

    _provider: RunModelProvider
    _observed_name: str

    def stream_response(self, *args: Any, **kwargs: Any) -> AsyncIterator[Any]:
        return self._observe_stream(super().stream_response(*args, **kwargs))  # type: ignore[misc]

    async def _observe_stream(self, inner: AsyncIterator[Any]) -> AsyncIterator[Any]:
        async with self._provider.observer.model_call(self._observed_name):
            async for event in inner:
                yield event

    async def get_response(self, *args: Any, **kwargs: Any) -> Any:
        async with self._provider.observer.model_call(self._observed_name):
            return await super().get_response(*args, **kwargs)  # type: ignore[misc]


def _with_history(
    history: History,
    rest: list[Any],
    model_settings: ModelSettings,
    client: AsyncOpenAI,
    splice: Callable[[], HistorySplice],
) -> tuple[list[Any], ModelSettings]:
    """The input and settings a model's `_fetch_response` passes on for an input that held a history item: on the
    lean client, the run's own items and the history as encoded JSON (`extra_body`, for the lean client); else,
    or when sending the two apart could differ from what the SDK sends, the history's items before the run's, as
    the SDK's input handling would have left them."""
    extra = model_settings.extra_body
    lean = isinstance(client, LeanOpenAI | LeanAzureOpenAI)
    if lean and isinstance(extra, Mapping | None) and history.fits_before(rest):
        body = {**(extra or {}), SPLICE_KEY: splice()}
        return rest, dataclasses.replace(model_settings, extra_body=body)
    return deduplicate_input_items_preferring_latest([*prepared(history.items), *rest]), model_settings


class _ResponsesModel(_ObservedModel, OpenAIResponsesModel):
    """The SDK's Responses model, observed; a history item in its input is sent as JSON encoded once per row
    (`chinwag.llm.history`)."""

    def __init__(self, *, model: str, openai_client: AsyncOpenAI, provider: RunModelProvider) -> None:
        super().__init__(model=model, openai_client=openai_client)
        self._provider = provider
        self._observed_name = model

    async def _fetch_response(
        self, system_instructions: Any, input: Any, model_settings: Any, *args: Any, **kwargs: Any
    ) -> Any:
        history, rest = split_history(input)
        if history is not None and isinstance(rest, list):
            how = ("responses",)
            input, model_settings = _with_history(
                history,
                rest,
                model_settings,
                self._client,
                lambda: HistorySplice("input", 0, history.encoded(how, self._encode_items)),
            )
        return await super()._fetch_response(system_instructions, input, model_settings, *args, **kwargs)

    def _encode_items(self, items: Sequence[dict[str, Any]]) -> bytes:
        # As `_build_response_create_kwargs` sends them; its clean-up leaves an item that needs none as it is.
        cleaned = (self._clean_item_for_openai(item) for item in prepared(items))
        return join(item for item in cleaned if item is not None)


class _ChatCompletionsModel(_ObservedModel, OpenAIChatCompletionsModel):
    """The SDK's Chat Completions model, observed, telling its provider how each streamed answer finished."""

    def __init__(self, *, model: str, openai_client: AsyncOpenAI, provider: RunModelProvider) -> None:
        super().__init__(model=model, openai_client=openai_client)
        self._provider = provider
        self._observed_name = model

    async def _fetch_response(
        self, system_instructions: Any, input: Any, model_settings: Any, *args: Any, **kwargs: Any
    ) -> Any:
        history, rest = split_history(input)
        if history is not None and isinstance(rest, list):
            base_url = str(self._client.base_url)
            how = ("chat", self.model, base_url, self.should_replay_reasoning_content, self._strict_feature_validation)
            at = 1 if system_instructions else 0  # after the system message the SDK puts first
            input, model_settings = _with_history(
                history,
                rest,
                model_settings,
                self._client,
                lambda: HistorySplice("messages", at, history.encoded(how, self._encode_items)),
            )
        # openai-agents 0.24: `stream_response` gets `(response, stream)` from here and iterates the stream.
        fetched = await super()._fetch_response(system_instructions, input, model_settings, *args, **kwargs)
        if kwargs.get("stream") and isinstance(fetched, tuple):
            response, stream = fetched
            self._provider.cut = False
            return response, _FinishReasons(stream, self._provider)
        return fetched

    def _encode_items(self, items: Sequence[dict[str, Any]]) -> bytes:
        # As `_fetch_response` converts them (a group starts afresh for the converter: see `History.groups`).
        messages = Converter.items_to_messages(
            prepared(items),
            model=self.model,
            base_url=str(self._client.base_url),
            should_replay_reasoning_content=self.should_replay_reasoning_content,
            strict_feature_validation=self._strict_feature_validation,
        )
        return join(_to_dump_compatible(messages))


class _RunTransport(httpx2.AsyncBaseTransport):
    """One run's way to the shared connection pool. It remembers the responses it hands out; `aclose` closes those
    still open, so a model stream is cut at once (its connection is closed, not put back: it was not read to the
    end), while the pool, and the connections of every other run, stay as they are."""

    def __init__(self, pool: httpx2.AsyncClient) -> None:
        self._pool = pool
        self._responses: list[httpx2.Response] = []

    async def handle_async_request(self, request: httpx2.Request) -> httpx2.Response:
        # The pool's transport for this URL: its connection pool, or the one through a proxy named by the
        # environment (HTTPS_PROXY, ...), as a client of its own would choose. httpx2 has no public call for it.
        response = await self._pool._transport_for_url(request.url).handle_async_request(request)
        self._responses = [kept for kept in self._responses if not kept.is_closed]
        self._responses.append(response)
        return response

    async def aclose(self) -> None:
        responses, self._responses = self._responses, []
        for response in responses:
            await response.aclose()


class ModelConnections:
    """The connection pool every run's model client sends through (see the module's docstring), owned by
    `LlmClients`: `aclose()` when the app stops."""

    def __init__(self, *, timeout: httpx2.Timeout) -> None:
        limits = httpx2.Limits(
            max_connections=MAX_MODEL_CONNECTIONS,
            max_keepalive_connections=KEPT_ALIVE_CONNECTIONS,
            keepalive_expiry=KEEPALIVE_S,
        )
        self._timeout = timeout
        self._pool = httpx2.AsyncClient(verify=httpx2.create_ssl_context(), limits=limits, timeout=timeout)

    def run_client(self) -> httpx2.AsyncClient:
        """An HTTP client for one run: closing it cuts that run's open responses and nothing else."""
        return httpx2.AsyncClient(transport=_RunTransport(self._pool), timeout=self._timeout, follow_redirects=True)

    async def aclose(self) -> None:
        await self._pool.aclose()


class RunModelProvider(ModelProvider):
    """The Agents SDK model provider of one run: every model it hands out talks through this run's own client.

    `cut` says whether the last streamed Chat Completions answer ended with `finish_reason: "length"` (the Responses
    API says so with its own `response.incomplete` event)."""

    def __init__(
        self, client: AsyncOpenAI, *, api: LlmApi, default_model: str, observer: Observer = NULL_OBSERVER
    ) -> None:
        self.client = client
        self.observer = observer
        self.api: LlmApi = api
        self.default_model = default_model
        self.cut = False
        self._models: dict[str, Model] = {}

    def get_model(self, model_name: str | None) -> Model:
        name = model_name or self.default_model
        model = self._models.get(name)
        if model is None:
            if self.api == "responses":
                model = _ResponsesModel(model=name, openai_client=self.client, provider=self)
            else:
                model = _ChatCompletionsModel(model=name, openai_client=self.client, provider=self)
            self._models[name] = model
        return model

    async def aclose(self) -> None:
        await self.client.close()
        self._models.clear()
        # The client caches its API resources (`client.chat`, ...), and each refers back to it: a reference cycle
        # per run that only a full garbage collection would free. Forgotten, reference counting frees them now.
        client_attrs = vars(self.client)
        for name, value in list(client_attrs.items()):
            if getattr(value, "_client", None) is self.client:
                del client_attrs[name]


class LlmClients:
    """Model access for the whole app: the catalog, the token counter, and a client per run.

    ```python
    async with llm.run_provider() as provider:
        result = Runner.run_streamed(agent, text, run_config=RunConfig(model_provider=provider, tracing_disabled=True))
    title = await llm.complete(model="gpt-4o-mini", instructions="Name this chat.", prompt=first_exchange)
    ```
    """

    def __init__(
        self, settings: Settings, *, counter: TokenCounter | None = None, observer: Observer = NULL_OBSERVER
    ) -> None:
        if settings.uses_azure and not settings.openai_api_version:
            raise SettingsError("OPENAI_API_VERSION is required when AZURE_OPENAI_ENDPOINT is set")
        self.settings = settings
        self.observer = observer
        self.api: LlmApi = settings.llm_api
        self.catalog = ModelCatalog(settings)
        self.counter: TokenCounter = counter if counter is not None else TiktokenCounter()
        # The read timeout is the gap allowed between two chunks of the answer: the stall timeout.
        self.connections = ModelConnections(
            timeout=httpx2.Timeout(settings.llm_stall_timeout_s, connect=CONNECT_TIMEOUT_S)
        )
        self.history_cache: HistoryCache | None = HistoryCache() if settings.lean_stream else None
        """Layer 1 rows as request JSON, for the lean path (`chinwag.llm.history`); None on the stock client's."""
        self._open_clients = 0

    @classmethod
    @contextlib.asynccontextmanager
    async def open(cls, settings: Settings, *, observer: Observer = NULL_OBSERVER) -> AsyncIterator[LlmClients]:
        """For the lifespan: tracing export off, the encoding loaded and the lean stream's validators built off the
        event loop (they take most of a second)."""
        set_tracing_disabled(True)
        counter: TokenCounter
        try:
            counter = await asyncio.to_thread(TiktokenCounter)
        except EncodingFileError:
            # A damaged install: chat still works, with token counts about 10-20% off.
            logger.exception("tokenizer unavailable: counting about four characters per token instead")
            counter = ApproximateCounter()
        if settings.lean_stream:
            await asyncio.to_thread(warm_up, settings.llm_api)
        clients = cls(settings, counter=counter, observer=observer)
        where = settings.azure_openai_endpoint if settings.uses_azure else settings.openai_base_url
        logger.info("models: %s over %s at %s", ", ".join(settings.model_ids), settings.llm_api, _safe_url(where))
        try:
            yield clients
        finally:
            if clients.open_clients:
                logger.warning("%d model clients still open at shutdown", clients.open_clients)
            await clients.aclose()

    async def aclose(self) -> None:
        """Close the shared connection pool (the runs' own clients close with their runs)."""
        await self.connections.aclose()

    @property
    def open_clients(self) -> int:
        """Per-run clients made and not yet closed."""
        return self._open_clients

    def new_client(self) -> AsyncOpenAI:
        """A new client on the shared connection pool; the caller closes it (`await client.close()`: that cuts its
        open responses, never the pool). With `lean_stream` (the default) its streamed answers are parsed by
        `chinwag.llm.lean_stream`."""
        http_client = self.connections.run_client()
        settings = self.settings
        client: AsyncOpenAI
        lean = settings.lean_stream
        if settings.azure_openai_endpoint is not None:
            key = settings.azure_openai_api_key or settings.openai_api_key
            client = (LeanAzureOpenAI if lean else AsyncAzureOpenAI)(
                azure_endpoint=settings.azure_openai_endpoint,
                api_key=key.get_secret_value() if key is not None else PLACEHOLDER_API_KEY,
                api_version=settings.openai_api_version,
                http_client=http_client,
                max_retries=MAX_RETRIES,
            )
        else:
            key = settings.openai_api_key
            client = (LeanOpenAI if lean else AsyncOpenAI)(
                api_key=key.get_secret_value() if key is not None else PLACEHOLDER_API_KEY,
                base_url=settings.openai_base_url,
                http_client=http_client,
                max_retries=MAX_RETRIES,
            )
        self._open_clients += 1
        return client

    @contextlib.asynccontextmanager
    async def run_provider(self) -> AsyncIterator[RunModelProvider]:
        """A model provider with a client of its own, closed when the block ends (also when the run is cancelled:
        closing the client cuts any model stream still open). `ModelNotConfigured` when no provider is set."""
        problem = self.settings.model_problem
        if problem is not None:
            raise ModelNotConfigured(f"The server has no model configured: {problem}.")
        provider = RunModelProvider(
            self.new_client(), api=self.api, default_model=self.settings.resolved_default_model, observer=self.observer
        )
        try:
            yield provider
        finally:
            try:
                await provider.aclose()
            except Exception:
                logger.exception("closing a model client failed")
            finally:
                self._open_clients -= 1

    async def complete(self, *, model: str, instructions: str, prompt: str, max_tokens: int | None = None) -> str:
        """One non-streamed answer (titles, summaries), on a client of its own, at most `max_tokens` long.
        `openai` errors propagate."""
        async with self.run_provider() as provider:
            client = provider.client
            if self.api == "responses":
                response = await client.responses.create(
                    model=model,
                    instructions=instructions,
                    input=prompt,
                    max_output_tokens=max_tokens if max_tokens is not None else omit,
                )
                return response.output_text
            completion = await client.chat.completions.create(
                model=model,
                messages=[{"role": "system", "content": instructions}, {"role": "user", "content": prompt}],
                max_tokens=max_tokens if max_tokens is not None else omit,
            )
            if not completion.choices:
                return ""
            return completion.choices[0].message.content or ""


def _safe_url(url: str | None) -> str:
    """A base URL fit for a log line: without any user or password in it."""
    if not url:
        return "OpenAI"
    parts = urlsplit(url)
    host = parts.hostname or ""
    netloc = f"{host}:{parts.port}" if parts.port else host
    return urlunsplit(parts._replace(netloc=netloc, query=""))
