"""One chat run, from `assistant_start` to `assistant_end`: the task the server owns (not the socket).

It builds the agent, streams `Runner.run_streamed`, turns each SDK event into at most one wire event, checkpoints
the answer at most about once a second, and at the end persists the assistant message, the tool messages, usage and
context size BEFORE it sends `assistant_end`. An interrupt (from any socket, through the bus) cancels the SDK run at
once; the partial text is kept as `interrupted`, every open tool gets `tool_done ok:false`, and Layer 1 gets the
partial answer (a tool call without output is never sent to a model: Layer 1 pairs them).
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
import time
import uuid
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, TypeVar

import openai
from agents import Agent, MaxTurnsExceeded, RunConfig, Runner, RunResultStreaming
from agents.exceptions import ModelBehaviorError
from agents.models.interface import ModelProvider

from chinwag.db import messages as messages_db
from chinwag.db import runs as runs_db
from chinwag.errors import ServiceUnavailable
from chinwag.schemas.messages import Message, MessageStatus, ToolCall
from chinwag.schemas.sessions import Session, SessionUpdate, TokenUsage
from chinwag.services.agent_builder import (
    FILE_BUDGET_SHARE,
    TITLE_INSTRUCTIONS,
    TITLE_MAX_TOKENS,
    TITLE_TIMEOUT_S,
    McpToolsLike,
    RunDeps,
    build_agent,
    clean_title,
    fallback_title,
    no_mcp,
    overhead_tokens,
    title_prompt,
)
from chinwag.services.context_items import assistant_message
from chinwag.services.file_context import FileContext, build_file_context
from chinwag.services.run_events import (
    ModelTurnCut,
    ModelTurnEnded,
    ModelTurnStarted,
    ToolFinished,
    ToolStarted,
    classify_error,
    map_stream_event,
    provider_message,
)
from chinwag.services.run_store import UnrecordedEnd, is_transient, with_retries
from chinwag.services.session_service import SessionService, context_windows
from chinwag.services.token_aware_session import (
    SUMMARY_INSTRUCTIONS,
    SUMMARY_MAX_TOKENS,
    TokenAwareSession,
    summary_prompt,
)
from chinwag.websocket.bus import Envelope, Unsubscribe
from chinwag.websocket.events import ErrorCode, FinishReason, SessionUpdated, encode
from chinwag.websocket.runs import RunChannel

logger = logging.getLogger(__name__)

T = TypeVar("T")

CHECKPOINT_EVERY_S = 1.0
PARAGRAPH_BREAK = "\n\n"
OUTPUT_MARGIN_TOKENS = 16
"""Kept free besides the answer: offline counts differ a little from the provider's."""
INTERRUPTED_TOOL_OUTPUT = "interrupted"

STORE_FAILED = (
    "The database could not be reached: the run was stopped. Its answer so far is kept and saved once the database"
    " is back."
)
_STORE_ERROR: tuple[ErrorCode, str, bool] = ("internal", "The answer could not be saved.", True)


class StoreUnavailable(ServiceUnavailable):
    """The database stayed away while a run streamed."""


_STATUS: dict[FinishReason, MessageStatus] = {
    "stop": "complete",
    "length": "complete",
    "max_turns": "complete",
    "interrupted": "interrupted",
    "error": "error",
}
_RUN_STATUS: dict[FinishReason, runs_db.RunStatus] = {
    "stop": "complete",
    "length": "complete",
    "max_turns": "max_turns",
    "interrupted": "interrupted",
    "error": "error",
}


@dataclass
class _OpenTool:
    name: str
    arguments: str


@dataclass
class RunState:
    """What the run has produced so far (in memory; checkpointed to the database)."""

    parts: list[str] = field(default_factory=list)
    """The answer's text deltas (joined when needed: `+=` on a long string would copy it per token)."""
    turn_start: int = 0
    """Index in `parts` where the current model response's text begins."""
    open_tools: dict[str, _OpenTool] = field(default_factory=dict)
    usage: TokenUsage = field(default_factory=TokenUsage)
    cut: bool = False
    """The provider cut the answer (output cap or window): the run ends with `finish_reason: "length"`."""
    tools_started: int = 0

    @property
    def text(self) -> str:
        return "".join(self.parts)

    @property
    def turn_text(self) -> str:
        """The text of the model response in progress (not yet an item the SDK stores)."""
        return "".join(self.parts[self.turn_start :])


class ChatRun:
    """One run of a session. `interrupt()` may be called from anywhere (the bus handler); `run()` is the task."""

    def __init__(self, deps: RunDeps, *, user_id: str, session: Session, file_ids: Sequence[str] = ()) -> None:
        self.deps = deps
        self.user_id = user_id
        self.session = session
        self.file_ids = list(file_ids)
        self.run_id = ""
        self.channel: RunChannel | None = None
        self.user_message: Message | None = None
        self.input_stored = False
        """Layer 1 holds the user message already (a regenerated answer): the run sends the model no new input."""
        self.assistant_message_id = ""
        self.state = RunState()
        self.interrupted = asyncio.Event()
        self._result: RunResultStreaming | None = None
        self._layer1: TokenAwareSession | None = None
        self._unsubscribe: Unsubscribe | None = None
        self._overhead_tokens = 0
        self._task: asyncio.Task[Any] | None = None
        self._setting_up = False
        self._interrupt_cancelled = False
        self._partial = False
        """The SDK dropped the last turn (an answer cut by `response.incomplete`): Layer 1 keeps its text."""
        self._retried = False
        self._cap = 0
        """The output cap sent with each model request of this run."""
        self._store_down = False
        self.abandoned = False
        self.ending = False
        """`_finish` has begun: the run records its own end (its row may already say so)."""
        """The database failed past the retries in this run: the writes left are tried once each."""

    # --- wiring

    async def listen_for_interrupts(self) -> None:
        """Subscribe before the run is visible to others, so that no interrupt can be missed."""
        self._unsubscribe = await self.deps.bus.on_interrupt(self.session.id, self._on_interrupt)

    async def stop_listening(self) -> None:
        unsubscribe, self._unsubscribe = self._unsubscribe, None
        if unsubscribe is not None:
            await unsubscribe()

    def _on_interrupt(self, run_id: str) -> None:
        if run_id == self.run_id and not self.interrupted.is_set():
            logger.info("run %s interrupted", run_id)
            self.interrupted.set()
            if self._result is not None:
                self._result.cancel("immediate")
            elif self._setting_up and self._task is not None:
                # Still gathering tools (an MCP server may keep it waiting): stop that now.
                self._interrupt_cancelled = True
                self._task.cancel()

    def abandon(self) -> None:
        """Another process ended this run (its lease expired: this process looked dead) and told its sockets: stop
        it without writing or sending anything more."""
        self.abandoned = True
        self._on_interrupt(self.run_id)

    # --- the task

    async def run(self) -> None:
        assert self.channel is not None
        assert self.user_message is not None
        self._task = asyncio.current_task()
        try:
            await self._run()
        finally:
            await self.stop_listening()
            await self.deps.buffers.end(self.run_id)
            self._drop_run_objects()

    def _drop_run_objects(self) -> None:
        """The run is over: let go of its SDK result, its Layer 1 session and its task. They refer back to this
        object (the task's coroutine, `summarize`), so holding them would leave reference cycles that only a full
        garbage collection frees (~10-30 ms, every stream paused); dropped, reference counting frees them now."""
        if self._layer1 is not None:
            self._layer1.summarize = None
        result = self._result
        if result is not None:
            cleanup = getattr(result, "_sandbox_cleanup_task", None)
            if isinstance(cleanup, asyncio.Task) and cleanup.done():
                # openai-agents 0.24: the result keeps a closure over itself for a clean-up that has run by now (a
                # later call finds it done either way); a cycle holding the run's whole SDK state (items, agent,
                # tasks) until a full collection.
                result._sandbox_cleanup = None
        self._result = None
        self._layer1 = None
        self._task = None

    async def _run(self) -> None:
        sessions = SessionService(self.deps.pool, self.deps.settings)
        finish: FinishReason = "stop"
        error: tuple[ErrorCode, str, bool] | None = None
        cancelled = False
        try:
            files = await self._set_up(sessions)
            if not self.interrupted.is_set():
                await self._stream(sessions, files)
        except asyncio.CancelledError:
            if self._interrupt_cancelled and self._task is not None and self._task.uncancel() == 0:
                pass  # an interrupt during set-up: end the run as interrupted
            else:
                cancelled = True  # the server is shutting down: end the run like an interrupt, then stop
        except MaxTurnsExceeded:
            finish = "max_turns"
        except Exception as exc:
            if self.state.cut and isinstance(exc, ModelBehaviorError):
                # The Responses API ends a cut answer with `response.incomplete`, which the SDK raises: the text so
                # far is the answer, kept in the model's context like an interrupted one.
                self._partial = True
            else:
                finish = "error"
                error = classify_error(exc)
                if await self._ended_elsewhere():
                    self.abandoned = True  # its events now clash with the end another process sent
                if error[0] == "internal":
                    logger.exception("run %s failed", self.run_id)
                else:
                    logger.warning("run %s: model error: %s", self.run_id, error[1])
        self._setting_up = False
        if cancelled or self.interrupted.is_set():
            finish, error = "interrupted", None
        elif self.state.cut and finish != "error":
            finish = "length"
        try:
            await self._finish(sessions, finish, error)
        except Exception:
            logger.exception("run %s: could not record its end", self.run_id)
        if cancelled:
            raise asyncio.CancelledError
        if finish != "interrupted" and self.user_message is not None and self.user_message.seq == 1:
            await self._auto_title(sessions)

    async def _set_up(self, sessions: SessionService) -> FileContext:
        """The assistant message row (then `assistant_start`), the file context and the Layer 1 history read: three
        independent round trips, run at once on separate pool connections, before the model request."""
        window = context_windows(self.deps.settings)(self.session.model)
        layer1 = TokenAwareSession.open(
            self.deps.pool,
            self.session.id,
            counter=self.deps.llm.counter,
            context_window=window,
            turn_seq=self.user_message.seq if self.user_message else None,
            summarize=self._summarize,
        )
        # `_finish` records the context size after the run, and waits for the input item's write (`flush`): the
        # model request waits for neither.
        layer1.record_context_tokens = False
        layer1.defer_next_write = True
        layer1.summary_overhead_tokens = self.deps.llm.counter.count_text(SUMMARY_INSTRUCTIONS) + 32
        assistant, files, prefetched = await asyncio.gather(
            sessions.append_message(
                session_id=self.session.id, role="assistant", content="", status="streaming", run_id=self.run_id
            ),
            build_file_context(
                pool=self.deps.pool,
                session_id=self.session.id,
                file_ids=self.file_ids,
                budget_tokens=int(window * FILE_BUDGET_SHARE),
                counter=self.deps.llm.counter,
            ),
            layer1.prefetch(),
            return_exceptions=True,
        )
        if isinstance(assistant, BaseException):
            raise assistant
        self._layer1 = layer1
        # The row exists: the client hears of it, and `_finish` ends it, whatever else failed.
        self.assistant_message_id = assistant.id
        layer1.store.answer_seq = assistant.seq  # what the run adds to Layer 1 belongs to this answer
        await self._emit({"type": "assistant_start", "message_id": assistant.id})
        for outcome in (files, prefetched):
            if isinstance(outcome, BaseException):
                raise outcome
        assert isinstance(files, FileContext)
        return files

    async def _stream(self, sessions: SessionService, files: FileContext) -> None:
        settings = self.deps.settings
        layer1 = self._layer1
        assert layer1 is not None
        acquire = self.deps.mcp.acquire if self.deps.mcp is not None else no_mcp
        self._setting_up = True
        async with acquire(self.session.mcp_servers) as tools, self.deps.llm.run_provider() as provider:
            agent = build_agent(settings=settings, session=self.session, files=files, tools=tools)
            self._overhead_tokens = overhead_tokens(agent, self.deps.llm.counter)
            # Instructions (file context included) and tool schemas share the window with the history.
            layer1.overhead_tokens = self._overhead_tokens
            self._cap = self._output_cap(layer1)
            agent.model_settings = dataclasses.replace(agent.model_settings, max_tokens=self._cap)
            if self.interrupted.is_set():
                return
            content: str | list[Any] = self.user_message.content if self.user_message else ""
            if self.input_stored:
                content = []
            try:
                await self._stream_once(agent, content, layer1, tools, sessions, provider)
            except openai.BadRequestError as exc:
                if not self._may_retry_plain(exc):
                    raise
                # The provider refused the request, and the history is what differs from a first turn: send it once
                # more as plain text messages (rewritten in Layer 1, so later turns send that form too).
                logger.warning(
                    "run %s: the model provider refused the history (%s); retrying once with it as plain text",
                    self.run_id,
                    provider_message(exc),
                )
                await layer1.flatten()
                await self._stream_once(agent, [], layer1, tools, sessions, provider)

    async def _stream_once(
        self,
        agent: Agent[Any],
        content: str | list[Any],
        layer1: TokenAwareSession,
        tools: McpToolsLike,
        sessions: SessionService,
        provider: ModelProvider,
    ) -> None:
        """One `Runner.run_streamed` of the agent, its events consumed; `content` is the new input (empty when the
        SDK already stored it, on a retry)."""
        result = Runner.run_streamed(
            agent,
            content,
            session=layer1,
            max_turns=self.deps.settings.max_turns,
            run_config=RunConfig(model_provider=provider, tracing_disabled=True),
        )
        self._result = result
        self._setting_up = False
        if self.interrupted.is_set():
            result.cancel("immediate")
        try:
            await self._consume(result, tools, sessions)
        finally:
            usage = result.context_wrapper.usage
            self.state.usage = TokenUsage(input_tokens=usage.input_tokens, output_tokens=usage.output_tokens)
            # `RunModelProvider.cut`: the Chat Completions answer ended with `finish_reason: "length"`.
            self.state.cut = self.state.cut or bool(getattr(provider, "cut", False))
            if not result.is_complete:
                result.cancel("immediate")

    def _output_cap(self, layer1: TokenAwareSession) -> int:
        """The most tokens the answer may take: `max_output_tokens`, never more than the window leaves after the
        instructions, tools, history (at most the budget) and the new message."""
        window = layer1.context_window
        message = self.deps.llm.counter.count_text(self.user_message.content if self.user_message else "")
        left = window - self._overhead_tokens - layer1.history_bound() - message - OUTPUT_MARGIN_TOKENS
        return max(1, min(self.deps.settings.max_output_tokens, left))

    def _may_retry_plain(self, exc: openai.BadRequestError) -> bool:
        """Whether a 400 may be the history's fault and worth one retry: nothing streamed yet, not retried before,
        and the model was sent more than the new message."""
        view = self._layer1.last_view if self._layer1 is not None else None
        if self._retried or self.interrupted.is_set() or self.state.parts or self.state.tools_started:
            return False
        self._retried = True
        return view is not None and len(view.items) > 0

    async def _consume(self, result: RunResultStreaming, tools: McpToolsLike, sessions: SessionService) -> None:
        last_checkpoint = time.monotonic()
        state = self.state
        async for event in result.stream_events():
            if self.interrupted.is_set():
                break
            mapped = map_stream_event(event)
            if mapped is None:
                continue
            if isinstance(mapped, str):
                if state.turn_start and state.turn_start == len(state.parts) and state.parts:
                    # A new model response after tool calls: its text starts a new paragraph, in the stream and the
                    # history alike, rather than running into the text before the calls.
                    mapped = PARAGRAPH_BREAK + mapped
                state.parts.append(mapped)
                await self._emit_text(mapped)
                now = time.monotonic()
                if now - last_checkpoint >= CHECKPOINT_EVERY_S:
                    last_checkpoint = now
                    await self._checkpoint(sessions)
            elif isinstance(mapped, ModelTurnStarted | ModelTurnEnded):
                state.turn_start = len(state.parts)
                if isinstance(mapped, ModelTurnEnded) and mapped.output_tokens is not None:
                    state.cut = mapped.output_tokens >= self._cap
            elif isinstance(mapped, ModelTurnCut):
                state.cut = True
            elif isinstance(mapped, ToolStarted):
                if mapped.call_id in state.open_tools:
                    continue  # announced once
                state.open_tools[mapped.call_id] = _OpenTool(name=mapped.name, arguments=mapped.arguments)
                state.tools_started += 1
                await self._emit(
                    {
                        "type": "tool_start",
                        "call_id": mapped.call_id,
                        "name": mapped.name,
                        "arguments": mapped.arguments,
                        "server": tools.server_of(mapped.name),
                    }
                )
            elif isinstance(mapped, ToolFinished):
                tool = state.open_tools.pop(mapped.call_id, None)
                if tool is None:
                    continue
                await self._close_tool(
                    sessions, mapped.call_id, tool, output=mapped.output, ok=not tools.failed(mapped.call_id)
                )

    async def _checkpoint(self, sessions: SessionService) -> None:
        """The answer so far, stored while it streams. A database that stays away past the brief retries ends the
        run (`StoreUnavailable`): it could not keep what it streams, and its end is kept until the database returns."""
        text = self.state.text
        try:
            await with_retries(
                lambda: sessions.update_message(message_id=self.assistant_message_id, content=text, status="streaming"),
                what=f"run {self.run_id}: checkpoint",
            )
        except Exception as exc:
            if is_transient(exc):
                self._store_down = True
                raise StoreUnavailable(STORE_FAILED) from exc
            raise

    async def _close_tool(
        self,
        sessions: SessionService,
        call_id: str,
        tool: _OpenTool,
        *,
        output: str,
        ok: bool,
        interrupted: bool = False,
    ) -> None:
        try:
            await with_retries(
                lambda: sessions.append_message(
                    session_id=self.session.id,
                    role="tool",
                    content=output,
                    status="interrupted" if interrupted else "complete",
                    tool=ToolCall(call_id=call_id, name=tool.name, arguments=tool.arguments, output=output, ok=ok),
                    run_id=self.run_id,
                ),
                what=f"run {self.run_id}: tool message",
            )
        finally:
            # A client never sees a tool left open, stored or not.
            await self._emit({"type": "tool_done", "call_id": call_id, "name": tool.name, "output": output, "ok": ok})

    async def _finish(
        self, sessions: SessionService, finish: FinishReason, error: tuple[ErrorCode, str, bool] | None
    ) -> None:
        """Persist the run's end, then tell the sockets. Each write is retried briefly (once the database proved
        away, the rest are tried once); whatever the database does not take, the run still ends: `error` and
        `assistant_end` (`error`) go out, and the end waits in `deps.pending` until the database takes it, so no
        row stays `streaming` and the slot is freed."""
        self.ending = True
        if self.abandoned:
            logger.warning("run %s: ended elsewhere; nothing more is written or sent", self.run_id)
            return
        state = self.state
        stored = True
        if self._layer1 is not None:
            try:
                await self._layer1.flush()
            except Exception:
                logger.exception("run %s: could not store its input in the model's context", self.run_id)
        for call_id, tool in list(state.open_tools.items()):
            try:
                await self._close_tool(
                    sessions, call_id, tool, output=INTERRUPTED_TOOL_OUTPUT, ok=False, interrupted=True
                )
            except Exception:
                logger.exception("run %s: could not store tool call %s", self.run_id, call_id)
                stored = False
        state.open_tools.clear()
        if finish == "interrupted" or self._partial:
            await self._keep_partial_answer()
        if finish in ("interrupted", "error") or self._partial:
            self._count_unfinished_turn()
        if not stored:
            finish, error = "error", error or _STORE_ERROR
        if self.assistant_message_id and not await self._store_answer(sessions, finish):
            stored = False
            finish, error = "error", error or _STORE_ERROR
        context_tokens = await self._context_tokens(finish) if not self._store_down else None
        try:
            await self._write(
                lambda: sessions.add_usage(
                    session_id=self.session.id,
                    input_tokens=state.usage.input_tokens,
                    output_tokens=state.usage.output_tokens,
                    context_tokens=context_tokens,
                ),
                what="usage",
            )
        except Exception:
            logger.exception("run %s: could not add its usage to the session", self.run_id)
        # The slot is free before `assistant_end` goes out: a client may send its next message right away.
        try:
            await self._write(lambda: self._release_slot(finish), what="run slot")
        except Exception:
            logger.exception("run %s: could not free its run slot", self.run_id)
            stored = False
        if not stored:
            self.deps.pending.add(
                UnrecordedEnd(
                    run_id=self.run_id,
                    session_id=self.session.id,
                    assistant_message_id=self.assistant_message_id or None,
                    content=state.text,
                    status=_STATUS[finish],
                    usage=state.usage,
                    run_status=_RUN_STATUS[finish],
                    finish_reason=finish,
                )
            )
        if error is not None:
            code, message, retryable = error
            await self._emit({"type": "error", "code": code, "message": message, "retryable": retryable})
        if self.assistant_message_id:
            await self._emit(
                {
                    "type": "assistant_end",
                    "message_id": self.assistant_message_id,
                    "finish_reason": finish,
                    "usage": state.usage.model_dump(),
                    "context": {
                        "tokens": context_tokens if context_tokens is not None else self.session.context.tokens,
                        "limit": context_windows(self.deps.settings)(self.session.model),
                    },
                }
            )

    async def _write(self, op: Callable[[], Awaitable[T]], *, what: str) -> T:
        """One write of the run's end: retried briefly, unless the database already proved away in this run."""
        try:
            return await with_retries(op, what=f"run {self.run_id}: {what}", delays=() if self._store_down else None)
        except Exception as exc:
            if is_transient(exc):
                self._store_down = True
            raise

    async def _store_answer(self, sessions: SessionService, finish: FinishReason) -> bool:
        """The assistant message's text, status and usage; False when the database did not take them (then at
        least its status is ended, if the database takes that)."""
        state = self.state
        try:
            await self._write(
                lambda: sessions.update_message(
                    message_id=self.assistant_message_id,
                    content=state.text,
                    status=_STATUS[finish],
                    usage=state.usage,
                    finish_reason=finish,
                ),
                what="answer",
            )
            return True
        except Exception:
            logger.exception("run %s: could not store its answer", self.run_id)
        if not self._store_down:
            with contextlib.suppress(Exception):
                await messages_db.set_status(
                    self.deps.pool, message_id=uuid.UUID(self.assistant_message_id), status="error"
                )
        return False

    async def _ended_elsewhere(self) -> bool:
        """Another process's sweep ended this run (its lease looked expired)."""
        with contextlib.suppress(Exception):
            return await runs_db.status(self.deps.pool, run_id=self.run_id) not in (None, "running")
        return False

    async def _release_slot(self, finish: FinishReason) -> None:
        await runs_db.finish(
            self.deps.pool,
            run_id=self.run_id,
            session_id=self.session.id,
            status=_RUN_STATUS[finish],
            finish_reason=finish,
            assistant_message_id=self.assistant_message_id or None,
        )

    async def _keep_partial_answer(self) -> None:
        """Layer 1 after an interrupt: what the SDK dropped (the unfinished turn: its text so far, tool calls without
        output) is stored, and every call left open gets a synthetic output."""
        if self._layer1 is None:
            return
        items: list[Any] = []
        if self._result is not None:
            items.extend(item.to_input_item() for item in self._result.new_items)
        if self.state.turn_text.strip():
            items.append(assistant_message(self.state.turn_text))
        try:
            await self._layer1.add_partial_turn(items)
        except Exception:
            logger.exception("run %s: could not keep the partial turn in the model's context", self.run_id)

    def _count_unfinished_turn(self) -> None:
        """An answer cut short never got the provider's usage for its last model call: count what was sent and what
        was streamed offline, so the session's usage is not 0/0 for tokens that were spent."""
        counter = self.deps.llm.counter
        usage = self.state.usage
        output = usage.output_tokens + counter.count_text(self.state.turn_text)
        input_tokens = usage.input_tokens
        view = self._layer1.last_view if self._layer1 is not None else None
        if view is not None and (self.state.turn_text or self._result is not None):
            message = counter.count_text(self.user_message.content if self.user_message else "")
            if input_tokens == 0:
                input_tokens = self._overhead_tokens + view.tokens + message
        self.state.usage = TokenUsage(input_tokens=input_tokens, output_tokens=output)

    async def _context_tokens(self, finish: FinishReason) -> int | None:
        """The size of what the model sees next turn (None when Layer 1 was not opened). After a finished run the
        provider's usage of its last model call makes the stored counts exact."""
        if self._layer1 is None:
            return None
        try:
            last = self._result.raw_responses[-1].usage if self._result and self._result.raw_responses else None
            if finish == "stop" and last is not None and last.input_tokens > 0:
                view = await self._layer1.record_usage(
                    input_tokens=last.input_tokens,
                    output_tokens=last.output_tokens,
                    overhead_tokens=self._overhead_tokens,
                )
            else:
                view = await self._layer1.view()
        except Exception:
            logger.exception("run %s: could not measure the context", self.run_id)
            # What the run's first model call was sent, if the SDK asked for it (`prepare` no longer writes it).
            return self._layer1.last_view.tokens if self._layer1.last_view is not None else None
        return view.tokens

    async def _summarize(self, items: list[Any]) -> str:
        window = context_windows(self.deps.settings)(self.session.model)
        return await self.deps.llm.complete(
            model=self.session.model,
            instructions=SUMMARY_INSTRUCTIONS,
            prompt=summary_prompt(items),
            max_tokens=min(SUMMARY_MAX_TOKENS, window // 4),
        )

    async def _auto_title(self, sessions: SessionService) -> None:
        """Name the session after its first exchange (the start of the first message when the model gives no
        title); a failure here never fails the run."""
        try:
            current = await sessions.get(user_id=self.user_id, session_id=self.session.id)
            if current.title or self.user_message is None:
                return
            try:
                prompt = title_prompt(self.user_message.content, self.state.text)
                async with asyncio.timeout(TITLE_TIMEOUT_S):
                    raw = await self.deps.llm.complete(
                        model=self.session.model,
                        instructions=TITLE_INSTRUCTIONS,
                        prompt=prompt,
                        max_tokens=TITLE_MAX_TOKENS,
                    )
                title = clean_title(raw)
            except Exception as exc:
                reason = (provider_message(exc) if isinstance(exc, openai.APIStatusError) else "") or repr(exc)
                logger.warning(
                    "run %s: no title from the model for session %s: %s", self.run_id, self.session.id, reason
                )
                title = ""
            title = title or fallback_title(self.user_message.content)
            if not title:
                return
            current = await sessions.get(user_id=self.user_id, session_id=self.session.id)
            if current.title:
                return
            updated = await sessions.update(
                user_id=self.user_id, session_id=self.session.id, update=SessionUpdate(title=title)
            )
            await self.deps.bus.publish(
                Envelope(
                    session_id=self.session.id, frame=encode(SessionUpdated(session=updated.model_dump(mode="json")))
                )
            )
        except Exception as exc:
            logger.warning("run %s: no title for session %s: %r", self.run_id, self.session.id, exc)

    # --- events

    async def _emit(self, body: dict[str, Any]) -> None:
        assert self.channel is not None
        await self.channel.emit(body)

    async def _emit_text(self, delta: str) -> None:
        assert self.channel is not None
        await self.channel.emit_text(delta)
