"""A history item (`chinwag.llm.history`) sends what the SDK sends for the same items: request bodies compared with
the stock path's for a long history with tool calls, images, reasoning, chinwag's partial answers and a summary,
on both APIs, through the SDK's tool loop, from the cache, and where sending the two apart would differ."""

from __future__ import annotations

import contextlib
from typing import Any

import pytest
from agents import Agent, ModelSettings, RunConfig, Runner, SessionSettings, function_tool
from agents.models.fake_id import FAKE_RESPONSES_ID

from chinwag.config import Settings
from chinwag.llm.history import History, HistoryCache, history_item, split_history
from chinwag.llm.provider import LlmClients
from chinwag.llm.tokens import ApproximateCounter
from tests.fakes.openai_script import ToolCall, call, calls, say
from tests.fakes.openai_server import FakeOpenAI

APIS = ["chat_completions", "responses"]


@function_tool
def lookup(city: str) -> str:
    """Look up the weather of a city."""
    return f"sunny in {city}"


def _turn(n: int) -> list[dict[str, Any]]:
    """One earlier turn of each shape Layer 1 holds (ids unique per turn)."""
    shapes = n % 4
    items: list[dict[str, Any]] = []
    if shapes == 1:
        items.append(
            {
                "type": "message",
                "role": "user",
                "content": [
                    {"type": "input_text", "text": f"what is in picture {n}?"},
                    {"type": "input_image", "image_url": "data:image/png;base64,iVBORw0KGgo=", "detail": "auto"},
                ],
            }
        )
    else:
        items.append({"type": "message", "role": "user", "content": f'question {n}: Ünïcode ✓ and "quotes"'})
    if shapes == 0:
        items += [
            {"type": "reasoning", "id": f"rs_{n}", "summary": [{"type": "summary_text", "text": f"think {n}"}]},
            {
                "type": "function_call",
                "id": f"fc_{n}",
                "call_id": f"call_old_{n}",
                "name": "lookup",
                "arguments": '{"city": "Oslo"}',
                "status": "completed",
            },
            {"type": "function_call_output", "call_id": f"call_old_{n}", "output": "sunny in Oslo"},
        ]
    if shapes == 2:
        # chinwag's own partial answer (an interrupted run), in the typed input shape.
        items.append({"type": "message", "role": "assistant", "content": f"partial answer {n}"})
    else:
        items.append(
            {
                "id": f"msg_{n}" if shapes != 3 else FAKE_RESPONSES_ID,
                "type": "message",
                "role": "assistant",
                "status": "completed",
                "content": [{"type": "output_text", "text": f"answer {n}", "annotations": [], "logprobs": []}],
            }
        )
    return items


def _history_items(turns: int) -> list[dict[str, Any]]:
    summary = {"type": "message", "role": "system", "content": "Summary of the earlier conversation: ..."}
    return [summary] + [item for n in range(turns) for item in _turn(n)]


class _Session:
    """The SDK `Session` protocol over fixed items: either the items or one history item of them."""

    session_settings: SessionSettings | None = None
    session_id = "test"

    def __init__(self, items: list[dict[str, Any]], *, cache: HistoryCache | None) -> None:
        self.items = items
        self.cache = cache
        self.added: list[Any] = []

    async def get_items(self, limit: int | None = None) -> list[Any]:
        if self.cache is None:
            return list(self.items)
        rows: list[int | None] = [None, *range(1, len(self.items))]  # the summary is no stored row
        return [history_item(History(items=self.items, rows=rows, cache=self.cache))]

    async def add_items(self, items: list[Any]) -> None:
        self.added.extend(items)

    async def pop_item(self) -> Any:
        return None

    async def clear_session(self) -> None:
        return None


async def _bodies(
    api: str,
    items: list[dict[str, Any]],
    replies: tuple[Any, ...],
    *,
    lean: bool,
    cache: HistoryCache | None,
    runs: int = 1,
) -> tuple[list[dict[str, Any]], list[Any], Any]:
    """The request bodies of `runs` runs (one after another, on one model server) with `items` as history, what
    the SDK gave the session to store, and the last run's answer."""
    async with FakeOpenAI.start(*(replies * runs)) as fake:
        settings = Settings(
            _env_file=None, openai_base_url=fake.base_url, llm_api=api, lean_stream=lean, models="gpt-4o"
        )
        llm = LlmClients(settings, counter=ApproximateCounter())
        session = _Session(items, cache=cache)
        output: Any = None
        async with contextlib.aclosing(llm):
            for _ in range(runs):
                async with llm.run_provider() as provider:
                    agent = Agent(
                        name="a", instructions="Help.", tools=[lookup], model_settings=ModelSettings(include_usage=True)
                    )
                    result = Runner.run_streamed(
                        agent,
                        "And the weather in Rome?",
                        session=session,
                        run_config=RunConfig(model_provider=provider, tracing_disabled=True),
                    )
                    async for _ in result.stream_events():
                        pass
                    output = result.final_output
        return [request.body for request in fake.requests], session.added, output


@pytest.mark.parametrize("api", APIS)
async def test_a_history_item_sends_what_the_sdk_sends_for_its_items(api: str, monkeypatch: pytest.MonkeyPatch) -> None:
    items = _history_items(40)
    replies = (call("lookup", {"city": "Rome"}, text="Checking."), say("Sunny in Rome."))
    stock = await _bodies(api, items, replies, lean=False, cache=None, runs=2)
    assert len(stock[0]) == 4, "each run's tool loop made two model calls"
    cache = HistoryCache()
    made: list[Any] = []
    original = cache.get

    def counted(key: Any, make: Any) -> bytes:
        def making() -> bytes:
            made.append(key)
            return bytes(make())

        return original(key, making)

    monkeypatch.setattr(cache, "get", counted)
    lean = await _bodies(api, items, replies, lean=True, cache=cache, runs=2)
    assert lean == stock
    # Every stored group was encoded once, in the first model call; the other three found it in the cache.
    assert len(made) == len(cache) == len(set(made)) > 0


@pytest.mark.parametrize("api", APIS)
async def test_a_new_call_id_seen_in_the_history_is_sent_as_the_sdk_sends_it(api: str) -> None:
    """The SDK keeps one item per call id (the latest); the history item then gives the SDK its items."""
    items = _history_items(6)
    replies = (
        calls(ToolCall("lookup", '{"city": "Rome"}', call_id="call_old_0"), text="Checking."),
        say("Sunny in Rome."),
    )
    stock = await _bodies(api, items, replies, lean=False, cache=None)
    lean = await _bodies(api, items, replies, lean=True, cache=HistoryCache())
    assert lean == stock


@pytest.mark.parametrize("api", APIS)
async def test_a_history_that_ends_mid_turn_is_sent_as_the_sdk_sends_it(api: str) -> None:
    """A history ending with an assistant message before the run's items: the converter could merge across."""
    items = [*_history_items(5)[:-1], {"type": "message", "role": "assistant", "content": "so far"}]
    stock = await _bodies(api, items, (say("Done."),), lean=False, cache=None)
    lean = await _bodies(api, items, (say("Done."),), lean=True, cache=HistoryCache())
    assert lean == stock


def test_the_cache_keeps_at_most_its_bytes_dropping_the_least_recently_used() -> None:
    cache = HistoryCache(max_bytes=10)
    assert cache.get("a", lambda: b"aaaa") == b"aaaa"
    cache.get("b", lambda: b"bbbb")
    cache.get("a", lambda: b"never")  # a used again: b is now the oldest
    cache.get("c", lambda: b"cccc")  # 12 bytes: b goes
    assert cache.get("b", lambda: b"bb") == b"bb"
    assert cache.get("a", lambda: b"never") == b"aaaa"
    assert cache.get("c", lambda: b"never") == b"cccc"


def test_split_history_takes_the_item_out_and_leaves_other_input_alone() -> None:
    history = History(items=[], rows=[], cache=HistoryCache())
    assert split_history("text") == (None, "text")
    found, rest = split_history([history_item(history), {"role": "user", "content": "hi"}])
    assert found is history
    assert rest == [{"role": "user", "content": "hi"}]
