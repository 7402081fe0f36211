"""ChatService on a real PostgreSQL, with the SDK's `ScriptedModel` as the model (the HTTP path is tested end to end
in tests/routes/test_chat.py against the fake OpenAI server)."""

from __future__ import annotations

import asyncio
import contextlib
import uuid
from collections.abc import AsyncIterator, Callable
from typing import Any

import asyncpg
import httpx2
import openai
import orjson
import pytest
from agents import Model, ModelProvider
from agents.testing import ModelCall, ModelStep, ScriptedModel, assistant_message

from chinwag.config import Settings
from chinwag.errors import BadRequest, Busy, NotFound
from chinwag.llm.catalog import ModelCatalog
from chinwag.services.agent_builder import McpSource, McpToolsLike, RunDeps
from chinwag.services.chat_service import ChatService
from chinwag.services.run_events import classify_error
from chinwag.services.titles import clean_title
from chinwag.websocket.bus import Envelope, InProcessBus
from chinwag.websocket.runs import MemoryRunBuffers, TaskSupervisor
from tests.services.layer1_support import WordCounter, make_session


class ScriptedProvider(ModelProvider):
    def __init__(self, model: ScriptedModel) -> None:
        self.model = model

    def get_model(self, model_name: str | None) -> Model:
        return self.model


class ScriptedLlm:
    """The chat's `LlmSource` over a `ScriptedModel`; `complete` answers titles (and records the prompts)."""

    def __init__(self, model: ScriptedModel, catalog: ModelCatalog, *, title: str = '"Noon in Paris."') -> None:
        self.model = model
        self.counter = WordCounter()
        self.catalog = catalog
        self.history_cache = None  # the scripted model takes the history as plain items
        self.title = title
        self.prompts: list[str] = []
        self.providers_closed = 0

    @contextlib.asynccontextmanager
    async def run_provider(self) -> AsyncIterator[ModelProvider]:
        try:
            yield ScriptedProvider(self.model)
        finally:
            self.providers_closed += 1

    async def complete(self, *, model: str, instructions: str, prompt: str, max_tokens: int | None = None) -> str:
        self.prompts.append(prompt)
        if self.title == "fail":
            raise RuntimeError("title model down")
        return self.title


class Harness:
    def __init__(
        self, pool: asyncpg.Pool, settings: Settings, model: ScriptedModel, mcp: McpSource | None = None, **llm: Any
    ) -> None:
        self.bus = InProcessBus()
        self.buffers = MemoryRunBuffers()
        self.llm = ScriptedLlm(model, ModelCatalog(settings), **llm)
        self.chat = ChatService(
            RunDeps(pool=pool, settings=settings, bus=self.bus, buffers=self.buffers, llm=self.llm, mcp=mcp),
            supervisor=TaskSupervisor(),
        )
        self.frames: list[dict[str, Any]] = []
        self.session_id = ""

    async def watch(self, session_id: str) -> None:
        self.session_id = session_id
        await self.bus.subscribe(session_id, self._on)

    def _on(self, envelope: Envelope) -> None:
        self.frames.append(orjson.loads(envelope.frame))

    async def wait_for(self, kind: str, count: int = 1, timeout: float = 5.0) -> dict[str, Any]:
        async with asyncio.timeout(timeout):
            while sum(1 for f in self.frames if f["type"] == kind) < count:
                await asyncio.sleep(0.005)
        return [f for f in self.frames if f["type"] == kind][count - 1]


@pytest.fixture
async def session_ids(db: asyncpg.Connection) -> tuple[str, str]:
    return await make_session(db, model="gpt-4.1-mini")


@pytest.fixture
async def harness_factory(app_pool: asyncpg.Pool, settings: Settings) -> AsyncIterator[Callable[..., Harness]]:
    made: list[Harness] = []

    def make(model: ScriptedModel, mcp: McpSource | None = None, **llm: Any) -> Harness:
        h = Harness(app_pool, settings, model, mcp, **llm)
        made.append(h)
        return h

    yield make
    for h in made:
        await h.chat.aclose()


async def history(db: asyncpg.Connection, session_id: str) -> list[asyncpg.Record]:
    return await db.fetch(
        "SELECT seq, role, content, status, tool, run_id, client_id, usage FROM messages WHERE session_id = $1"
        " ORDER BY seq",
        uuid.UUID(session_id),
    )


async def test_a_start_undone_after_its_claim_ends_the_run_and_its_answer(
    harness_factory: Callable[..., Harness],
    session_ids: tuple[str, str],
    db: asyncpg.Connection,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The run's buffer cannot be opened (a crash at one exact line, between the claim and the run's task): nothing
    is left `running` or `streaming`, the slot is free and the next message runs."""
    user_id, session_id = session_ids
    h = harness_factory(ScriptedModel([[assistant_message("Second try.")]]))
    opened = h.buffers.open

    async def broken(run_id: str, session_id: str) -> None:
        raise RuntimeError("the run buffer is unavailable")

    monkeypatch.setattr(h.buffers, "open", broken)
    with pytest.raises(RuntimeError):
        await h.chat.start_run(user_id=user_id, session_id=session_id, content="first")
    rows = await history(db, session_id)
    assert [(r["role"], r["status"]) for r in rows] == [("user", "complete"), ("assistant", "interrupted")]
    assert await db.fetchval("SELECT status FROM runs WHERE session_id = $1", uuid.UUID(session_id)) == "interrupted"
    monkeypatch.setattr(h.buffers, "open", opened)
    await h.watch(session_id)
    assert await h.chat.start_run(user_id=user_id, session_id=session_id, content="again") is not None
    end = await h.wait_for("assistant_end")
    assert end["finish_reason"] == "stop"


async def test_a_run_streams_numbered_events_and_persists_before_announcing(
    harness_factory: Callable[..., Harness], session_ids: tuple[str, str], db: asyncpg.Connection
) -> None:
    user_id, session_id = session_ids
    h = harness_factory(ScriptedModel([[assistant_message("It is noon.")]]))
    await h.watch(session_id)
    run_id = await h.chat.start_run(user_id=user_id, session_id=session_id, content="What time is it?", client_id="c1")
    assert run_id is not None
    first = h.frames[0]
    assert first["type"] == "user_message"
    assert first["message"]["content"] == "What time is it?"
    assert first["message"]["seq"] == 1
    assert first["message"]["client_id"] == "c1"
    end = await h.wait_for("assistant_end")
    assert [f["seq"] for f in h.frames if "seq" in f and f.get("run_id") == run_id] == list(
        range(1, len([f for f in h.frames if f.get("run_id") == run_id]) + 1)
    )
    assert end["finish_reason"] == "stop"
    assert end["context"]["limit"] > 0
    assert end["context"]["tokens"] > 0
    text = "".join(f["delta"] for f in h.frames if f["type"] == "text_delta")
    assert text == "It is noon."
    rows = await history(db, session_id)
    assert [(r["seq"], r["role"], r["content"], r["status"]) for r in rows] == [
        (1, "user", "What time is it?", "complete"),
        (2, "assistant", "It is noon.", "complete"),
    ]
    assert str(rows[1]["run_id"]) == run_id
    assert end["message_id"] == h.frames[1]["message_id"]
    run = await db.fetchrow(
        "SELECT status, finish_reason, user_message_id, assistant_message_id FROM runs WHERE id = $1",
        uuid.UUID(run_id),
    )
    assert run is not None
    assert (run["status"], run["finish_reason"]) == ("complete", "stop")
    assert str(run["user_message_id"]) == first["message"]["id"]
    assert str(run["assistant_message_id"]) == end["message_id"]
    assert await db.fetchval("SELECT active_run_id FROM sessions WHERE id = $1", uuid.UUID(session_id)) is None
    # The model saw the user message, and Layer 1 now holds the exchange.
    call = h.llm.model.last_call
    assert call is not None
    assert "What time is it?" in str(call.input)
    items = await db.fetch("SELECT item FROM llm_context WHERE session_id = $1 ORDER BY id", uuid.UUID(session_id))
    assert len(items) == 2
    assert h.llm.providers_closed == 1


async def test_first_exchange_names_the_session_and_announces_it(
    harness_factory: Callable[..., Harness], session_ids: tuple[str, str], db: asyncpg.Connection
) -> None:
    user_id, session_id = session_ids
    h = harness_factory(ScriptedModel([[assistant_message("It is noon.")], [assistant_message("Still noon.")]]))
    await h.watch(session_id)
    await h.chat.start_run(user_id=user_id, session_id=session_id, content="What time is it?")
    updated = await h.wait_for("session_updated")
    assert updated["session"]["title"] == "Noon in Paris"
    assert await db.fetchval("SELECT title FROM sessions WHERE id = $1", uuid.UUID(session_id)) == "Noon in Paris"
    assert "What time is it?" in h.llm.prompts[0]
    # Only after the first exchange.
    await h.chat.start_run(user_id=user_id, session_id=session_id, content="And now?")
    await h.wait_for("assistant_end", 2)
    await asyncio.sleep(0.05)
    assert len(h.llm.prompts) == 1


async def test_a_failing_title_never_fails_the_run_and_names_the_session_from_the_message(
    harness_factory: Callable[..., Harness], session_ids: tuple[str, str], db: asyncpg.Connection
) -> None:
    user_id, session_id = session_ids
    h = harness_factory(ScriptedModel([[assistant_message("Hi.")]]), title="fail")
    await h.watch(session_id)
    await h.chat.start_run(user_id=user_id, session_id=session_id, content="Hello")
    end = await h.wait_for("assistant_end")
    assert end["finish_reason"] == "stop"
    updated = await h.wait_for("session_updated", timeout=30)
    assert updated["session"]["title"] == "Hello"  # the start of the first message, since the model gave none
    assert await db.fetchval("SELECT title FROM sessions WHERE id = $1", uuid.UUID(session_id)) == "Hello"


async def test_one_run_per_session_and_client_id_is_idempotent(
    harness_factory: Callable[..., Harness], session_ids: tuple[str, str], db: asyncpg.Connection
) -> None:
    user_id, session_id = session_ids
    release = asyncio.Event()

    async def slow(call: ModelCall) -> Any:
        await release.wait()
        return [assistant_message("done")]

    h = harness_factory(ScriptedModel([ModelStep.respond(slow)]))
    await h.watch(session_id)
    run_id = await h.chat.start_run(user_id=user_id, session_id=session_id, content="one", client_id="same")
    with pytest.raises(Busy):
        await h.chat.start_run(user_id=user_id, session_id=session_id, content="two", client_id="other")
    assert await h.chat.start_run(user_id=user_id, session_id=session_id, content="one", client_id="same") is None
    active = await h.chat.active_run(session_id=session_id)
    assert active is not None
    assert active.run_id == run_id
    assert active.last_seq >= 1
    release.set()
    await h.wait_for("assistant_end")
    assert await h.chat.active_run(session_id=session_id) is None
    # Once finished, the same client id still starts nothing.
    assert await h.chat.start_run(user_id=user_id, session_id=session_id, content="one", client_id="same") is None
    rows = await history(db, session_id)
    assert [r["role"] for r in rows] == ["user", "assistant"]
    assert await db.fetchval("SELECT count(*) FROM runs") == 1


async def test_interrupt_ends_the_run_within_a_second_and_the_next_message_works(
    harness_factory: Callable[..., Harness], session_ids: tuple[str, str], db: asyncpg.Connection
) -> None:
    user_id, session_id = session_ids

    async def never(call: ModelCall) -> Any:
        await asyncio.Event().wait()
        raise AssertionError("unreachable")

    h = harness_factory(ScriptedModel([ModelStep.respond(never), [assistant_message("fresh answer")]]))
    await h.watch(session_id)
    run_id = await h.chat.start_run(user_id=user_id, session_id=session_id, content="think forever")
    await h.wait_for("assistant_start")
    await asyncio.sleep(0.05)
    assert await h.chat.interrupt(session_id=session_id) == run_id
    end = await h.wait_for("assistant_end", timeout=30)  # the model never answers: only the interrupt ends it
    assert end["finish_reason"] == "interrupted"
    rows = await history(db, session_id)
    assert rows[1]["status"] == "interrupted"
    with pytest.raises(NotFound):
        await h.chat.interrupt(session_id=session_id)
    await h.chat.start_run(user_id=user_id, session_id=session_id, content="try again")
    second = await h.wait_for("assistant_end", 2)
    assert second["finish_reason"] == "stop"
    assert "try again" in str(h.llm.model.last_call.input if h.llm.model.last_call else "")


class BusyMcp:
    """An MCP pool whose servers are all taken: acquiring waits (until the run is interrupted)."""

    def __init__(self) -> None:
        self.waiting = asyncio.Event()
        self.released = False

    @contextlib.asynccontextmanager
    async def acquire(self, names: list[str] | None) -> AsyncIterator[McpToolsLike]:
        self.waiting.set()
        try:
            await asyncio.Event().wait()
            raise AssertionError("unreachable")
            yield
        finally:
            self.released = True


async def test_interrupt_while_waiting_for_tools_ends_the_run_at_once(
    harness_factory: Callable[..., Harness], session_ids: tuple[str, str], db: asyncpg.Connection
) -> None:
    user_id, session_id = session_ids
    mcp = BusyMcp()
    h = harness_factory(ScriptedModel([[assistant_message("after")]]), mcp=mcp)
    await h.watch(session_id)
    await h.chat.start_run(user_id=user_id, session_id=session_id, content="use the tools")
    async with asyncio.timeout(5):
        await mcp.waiting.wait()
    await h.chat.interrupt(session_id=session_id)
    end = await h.wait_for("assistant_end", timeout=30)  # the tools never come: only the interrupt ends it
    assert end["finish_reason"] == "interrupted"
    assert mcp.released
    assert h.llm.model.calls == ()
    for _ in range(100):  # the run task ends (not cancelled by the interrupt: it finished the run)
        if len(h.chat.supervisor) == 0:
            break
        await asyncio.sleep(0.01)
    assert len(h.chat.supervisor) == 0
    assert (await history(db, session_id))[1]["status"] == "interrupted"


async def test_a_model_error_ends_the_run_with_llm_error(
    harness_factory: Callable[..., Harness], session_ids: tuple[str, str], db: asyncpg.Connection
) -> None:
    user_id, session_id = session_ids
    response = httpx2.Response(429, request=httpx2.Request("POST", "http://model.invalid/v1/chat/completions"))
    error = openai.RateLimitError("slow down", response=response, body=None)
    h = harness_factory(ScriptedModel([error]))
    await h.watch(session_id)
    run_id = await h.chat.start_run(user_id=user_id, session_id=session_id, content="hello")
    end = await h.wait_for("assistant_end")
    err = next(f for f in h.frames if f["type"] == "error")
    assert err["code"] == "llm_error"
    assert err["retryable"] is True
    assert err["run_id"] == run_id
    assert err["seq"] == end["seq"] - 1
    assert end["finish_reason"] == "error"
    rows = await history(db, session_id)
    assert rows[1]["status"] == "error"
    assert await db.fetchval("SELECT status FROM runs WHERE id = $1", uuid.UUID(run_id)) == "error"


async def test_start_run_checks_the_session_and_the_files(
    harness_factory: Callable[..., Harness], session_ids: tuple[str, str], db: asyncpg.Connection
) -> None:
    user_id, session_id = session_ids
    other_user, _ = await make_session(db)
    h = harness_factory(ScriptedModel([]))
    with pytest.raises(NotFound):
        await h.chat.start_run(user_id=other_user, session_id=session_id, content="hi")
    with pytest.raises(BadRequest):
        await h.chat.start_run(user_id=user_id, session_id=session_id, content="hi", file_ids=[str(uuid.uuid4())])
    assert await history(db, session_id) == []
    assert await db.fetchval("SELECT count(*) FROM runs") == 0


async def test_recover_marks_what_a_dead_process_left_running_as_interrupted(
    harness_factory: Callable[..., Harness], session_ids: tuple[str, str], db: asyncpg.Connection
) -> None:
    _, session_id = session_ids
    sid = uuid.UUID(session_id)
    run_id = await db.fetchval("INSERT INTO runs (session_id) VALUES ($1) RETURNING id", sid)
    await db.execute("UPDATE sessions SET active_run_id = $2, message_count = 1 WHERE id = $1", sid, run_id)
    await db.execute(
        "INSERT INTO messages (session_id, seq, role, content, status)"
        " VALUES ($1, 1, 'assistant', 'half', 'streaming')",
        sid,
    )
    h = harness_factory(ScriptedModel([]))
    await h.chat.recover()
    assert await db.fetchval("SELECT status FROM runs WHERE id = $1", run_id) == "interrupted"
    assert await db.fetchval("SELECT status FROM messages WHERE session_id = $1", sid) == "interrupted"
    assert await db.fetchval("SELECT active_run_id FROM sessions WHERE id = $1", sid) is None


async def test_shutdown_ends_running_runs_as_interrupted(
    harness_factory: Callable[..., Harness], session_ids: tuple[str, str], db: asyncpg.Connection
) -> None:
    user_id, session_id = session_ids

    async def never(call: ModelCall) -> Any:
        await asyncio.Event().wait()
        raise AssertionError("unreachable")

    h = harness_factory(ScriptedModel([ModelStep.respond(never)]))
    await h.watch(session_id)
    run_id = await h.chat.start_run(user_id=user_id, session_id=session_id, content="hold on")
    await h.wait_for("assistant_start")
    await h.chat.aclose()
    end = await h.wait_for("assistant_end")
    assert end["finish_reason"] == "interrupted"
    assert run_id is not None
    assert await db.fetchval("SELECT status FROM runs WHERE id = $1", uuid.UUID(run_id)) == "interrupted"


def test_titles_are_cleaned() -> None:
    assert clean_title('  "Noon in Paris."  ') == "Noon in Paris"
    assert clean_title("Title: Trip planning") == "Trip planning"
    assert len(clean_title("word " * 100)) <= 80


def test_errors_are_classified() -> None:
    request = httpx2.Request("POST", "http://model.invalid/v1/chat/completions")
    bad = openai.BadRequestError("no", response=httpx2.Response(400, request=request), body=None)
    assert classify_error(bad)[0] == "llm_error"
    assert classify_error(bad)[2] is False
    assert classify_error(openai.APIConnectionError(request=request)) == (
        "llm_error",
        "The model provider could not be reached or dropped the connection.",
        True,
    )
    assert classify_error(httpx2.RemoteProtocolError("drop"))[0] == "llm_error"
    assert classify_error(ValueError("bug"))[0] == "internal"
