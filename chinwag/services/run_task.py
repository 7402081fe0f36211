"""One chat run, from `assistant_start` to `assistant_end`: the task the server owns (not the socket).

It builds the agent, streams `Runner.run_streamed` (its events become wire events and the run's state in
`run_stream.py`), and at the end persists the assistant message, the tool messages, usage and context size BEFORE it
sends `assistant_end` (`RunWriter`). An interrupt (from any socket, through the bus) cancels
the SDK run at once; the partial text is kept as `interrupted`, every open tool gets `tool_done ok:false`, and
Layer 1 gets the partial answer (a tool call without output is never sent to a model: Layer 1 pairs them).

`ChatService._start` makes a run with everything it needs (its channel, user and assistant messages, interrupts, the
reads begun with the claim) only once the run slot is claimed; the run then owns them until its end.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
from typing import Any, NamedTuple

import openai
from agents import Agent, MaxTurnsExceeded, RunConfig, Runner, RunResultStreaming
from agents.exceptions import ModelBehaviorError
from agents.models.interface import ModelProvider

from chinwag.observability.context import run_id_var
from chinwag.observability.observer import RunObservation
from chinwag.schemas.messages import Message
from chinwag.schemas.sessions import Session, TokenUsage
from chinwag.services.agent_builder import (
    McpToolsLike,
    RunDeps,
    build_agent,
    no_mcp,
    overhead_tokens,
)
from chinwag.services.postgres_session import PostgresSession
from chinwag.services.run_events import (
    classify_error,
    provider_message,
)
from chinwag.services.run_inputs import History, RunInputs, settle
from chinwag.services.run_state import (
    RunState,
    keep_partial_turn,
    next_context_tokens,
    unfinished_turn_usage,
)
from chinwag.services.run_stream import RunStream, close_tool
from chinwag.services.run_writer import RunWriter
from chinwag.services.session_service import SessionService
from chinwag.services.titles import name_session
from chinwag.services.token_aware_session import (
    SUMMARY_INSTRUCTIONS,
    SUMMARY_MAX_TOKENS,
    TokenAwareSession,
    summary_prompt,
)
from chinwag.websocket.bus import RunInterrupts
from chinwag.websocket.events import (
    AssistantEnd,
    AssistantStart,
    ContextSize,
    ErrorCode,
    FinishReason,
    RunError,
    Usage,
)
from chinwag.websocket.runs import RunChannel

logger = logging.getLogger(__name__)

OUTPUT_MARGIN_TOKENS = 16
"""Kept free besides the answer: offline counts differ a little from the provider's."""
INTERRUPTED_TOOL_OUTPUT = "interrupted"
SUMMARY_OVERHEAD_MARGIN = 32
_STORE_ERROR: tuple[ErrorCode, str, bool] = ("internal", "The answer could not be saved.", True)


class _Prepared(NamedTuple):
    """What the run reads before its model request: its inputs (files, images), its Layer 1 storage, and the read
    of its Layer 1 history, still in flight while the agent is built."""

    inputs: RunInputs
    store: PostgresSession
    history: asyncio.Future[History]


class ChatRun:
    """One run of a session. `interrupt` may come from anywhere (the bus handler); `run()` is the task."""

    def __init__(
        self,
        deps: RunDeps,
        *,
        user_id: str,
        session: Session,
        user_message: Message,
        answer: Message,
        channel: RunChannel,
        interrupts: RunInterrupts,
        inputs: asyncio.Task[RunInputs],
        session_versions: tuple[str, str] | None = None,
        input_stored: bool = False,
    ) -> None:
        self.deps = deps
        self.user_id = user_id
        self.session = session
        self.user_message = user_message
        self.channel = channel
        self.run_id = channel.run_id
        self._inputs = inputs
        """The reads `ChatService._start` began with the claim (`run_inputs.py`): the run awaits and settles them."""
        self._session_versions = session_versions
        """The session row's versions before and after the claim of the run's slot (`RunInputs.current_history`)."""
        self._history: asyncio.Future[History] | None = None
        self.input_stored = input_stored
        """Layer 1 holds the user message already (a regenerated answer): the run sends the model no new input."""
        self.window = deps.llm.catalog.context_window(session.model)
        self.sessions = SessionService(deps.pool, deps.settings, window=deps.llm.catalog.context_window)
        self.writer = RunWriter(deps, self.sessions, run_id=self.run_id, session_id=session.id)
        self.state = RunState()
        self.answer = answer
        """The assistant message, made with the run's slot (empty, `streaming`): the run fills and ends it."""
        self.assistant_message_id = answer.id
        self.interrupted = asyncio.Event()
        self.abandoned = False
        self.ending = False
        """`_finish` has begun: the run records its own end (its row may already say so)."""
        self._interrupts = interrupts
        self._result: RunResultStreaming | None = None
        self._layer1: TokenAwareSession | None = None
        self._overhead_tokens = 0
        self._cap = 0
        """The output cap sent with each model request of this run."""
        self._task: asyncio.Task[Any] | None = None
        self._setting_up = False
        self._interrupt_cancelled = False
        self._partial = False
        """The SDK dropped the last turn (an answer cut by `response.incomplete`): Layer 1 keeps its text."""
        self._retried = False
        self._observed: RunObservation | None = None
        interrupts.attach(self._on_interrupt)

    # --- interrupts

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
        self._task = asyncio.current_task()
        run_id_var.set(self.run_id)  # this task's log lines name the run
        try:
            with self.deps.observer.run(
                run_id=self.run_id, session_id=self.session.id, model=self.session.model
            ) as self._observed:
                await self._run()
        finally:
            await settle(self._inputs)
            if self._history is not None:
                await settle(self._history)
            await self._interrupts.close()
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
        finish: FinishReason = "stop"
        error: tuple[ErrorCode, str, bool] | None = None
        cancelled = False
        try:
            prepared = await self._set_up()
            if not self.interrupted.is_set():
                await self._stream(prepared)
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
                finish, error = "error", classify_error(exc)
                if await self.writer.ended_elsewhere():
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
            await self._finish(finish, error)
        except Exception:
            logger.exception("run %s: could not record its end", self.run_id)
        if cancelled:
            raise asyncio.CancelledError
        if finish != "interrupted" and self.user_message.seq == 1:
            await name_session(
                self.deps,
                self.sessions,
                user_id=self.user_id,
                session_id=self.session.id,
                model=self.session.model,
                question=self.user_message.content,
                answer=self.state.text,
            )

    async def _set_up(self) -> _Prepared:
        """`assistant_start` (its row exists already), then the run's inputs, read since the claim. The Layer 1
        history read with them is used if it is still current; otherwise it is read again, and the agent is built
        while that read is in flight."""
        await self.channel.emit(AssistantStart(message_id=self.answer.id))
        store = PostgresSession(
            self.deps.pool, self.session.id, counter=self.deps.llm.counter, turn_seq=self.user_message.seq
        )
        store.answer_seq = self.answer.seq  # what the run adds to Layer 1 belongs to this answer
        inputs = await self._inputs
        history = inputs.current_history(self._session_versions)
        if history is not None:
            self._history = asyncio.get_running_loop().create_future()
            self._history.set_result(history)
        else:
            self._history = asyncio.create_task(store.unsummarized(), name=f"run-history-{self.run_id}")
        return _Prepared(inputs=inputs, store=store, history=self._history)

    async def _stream(self, prepared: _Prepared) -> None:
        acquire = self.deps.mcp.acquire if self.deps.mcp is not None else no_mcp
        counter = self.deps.llm.counter
        self._setting_up = True
        async with acquire(self.session.mcp_servers) as tools, self.deps.llm.run_provider() as provider:
            inputs = prepared.inputs
            agent = build_agent(settings=self.deps.settings, session=self.session, files=inputs.files, tools=tools)
            # Instructions (file context included) and tool schemas share the window with the history.
            self._overhead_tokens = overhead_tokens(agent, counter)
            layer1 = self._layer1 = TokenAwareSession.for_run(
                prepared.store,
                context_window=self.window,
                history=await prepared.history,
                overhead_tokens=self._overhead_tokens,
                summarize=self._summarize,
                summary_overhead_tokens=counter.count_text(SUMMARY_INSTRUCTIONS) + SUMMARY_OVERHEAD_MARGIN,
                images=inputs.images,
                history_cache=self.deps.llm.history_cache,
            )
            new_input = self._new_input(inputs.image_parts)
            self._cap = self._output_cap(layer1, new_input)
            agent.model_settings = dataclasses.replace(agent.model_settings, max_tokens=self._cap)
            if self.interrupted.is_set():
                return
            try:
                await self._stream_once(agent, new_input, tools, provider)
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
                await self._stream_once(agent, [], tools, provider)

    async def _stream_once(
        self, agent: Agent[Any], content: str | list[Any], tools: McpToolsLike, provider: ModelProvider
    ) -> None:
        """One `Runner.run_streamed` of the agent, its events consumed; `content` is the new input (empty when the
        SDK already stored it, on a retry)."""
        result = Runner.run_streamed(
            agent,
            content,
            session=self._layer1,
            max_turns=self.deps.settings.max_turns,
            run_config=RunConfig(model_provider=provider, tracing_disabled=True),
        )
        self._result = result
        self._setting_up = False
        if self.interrupted.is_set():
            result.cancel("immediate")
        try:
            await RunStream(
                state=self.state,
                channel=self.channel,
                writer=self.writer,
                answer_id=self.assistant_message_id,
                tools=tools,
                interrupted=self.interrupted,
                observed=self._observed,
                output_cap=self._cap,
            ).consume(result)
        finally:
            usage = result.context_wrapper.usage
            self.state.usage = TokenUsage(input_tokens=usage.input_tokens, output_tokens=usage.output_tokens)
            # `RunModelProvider.cut`: the Chat Completions answer ended with `finish_reason: "length"`.
            self.state.cut = self.state.cut or bool(getattr(provider, "cut", False))
            if not result.is_complete:
                result.cancel("immediate")

    def _new_input(self, image_parts: list[dict[str, Any]]) -> str | list[Any]:
        """The user message as the model gets it: its text, with its images when it names image files; nothing when
        Layer 1 holds it already (a regenerated answer)."""
        if self.input_stored:
            return []
        if not image_parts:
            return self.user_message.content
        text = {"type": "input_text", "text": self.user_message.content}
        return [{"type": "message", "role": "user", "content": [text, *image_parts]}]

    def _output_cap(self, layer1: TokenAwareSession, new_input: str | list[Any]) -> int:
        """The most tokens the answer may take: the server's `max_output_tokens` (or the session's, if lower), never
        more than the window leaves after the instructions, tools, history (at most the budget) and the new
        message."""
        counter = self.deps.llm.counter
        message = (
            counter.count_text(new_input)
            if isinstance(new_input, str)
            else sum(counter.count_item(item) for item in new_input)
        )
        left = self.window - self._overhead_tokens - layer1.history_bound() - message - OUTPUT_MARGIN_TOKENS
        cap = self.deps.settings.max_output_tokens
        if self.session.settings.max_output_tokens is not None:
            cap = min(cap, self.session.settings.max_output_tokens)
        return max(1, min(cap, left))

    def _may_retry_plain(self, exc: openai.BadRequestError) -> bool:
        """Whether a 400 may be the history's fault and worth one retry: nothing streamed yet, not retried before,
        and the model was sent more than the new message."""
        view = self._layer1.last_view if self._layer1 is not None else None
        if self._retried or self.interrupted.is_set() or self.state.parts or self.state.tools_started:
            return False
        self._retried = True
        return view is not None and len(view.sources) > 0

    # --- the end

    async def _finish(self, finish: FinishReason, error: tuple[ErrorCode, str, bool] | None) -> None:
        """Persist the run's end, then tell the sockets. Whatever the database does not take, the run still ends:
        `error` and `assistant_end` (`error`) go out, and the end waits in `deps.pending` until the database takes
        it, so no row stays `streaming` and the slot is freed."""
        self.ending = True
        if self._observed is not None:
            self._observed.finish(finish)
            self._observed.usage(self.state.usage.input_tokens, self.state.usage.output_tokens)
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
                await close_tool(
                    self.writer, self.channel, call_id, tool, output=INTERRUPTED_TOOL_OUTPUT, ok=False, interrupted=True
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
        if not await self.writer.answer(
            self.assistant_message_id, text=state.text, finish=finish, usage=state.usage, reasoning=state.reasoning
        ):
            stored = False
            finish, error = "error", error or _STORE_ERROR
        context_tokens = await self._context_tokens(finish) if not self.writer.down else None
        await self.writer.usage(state.usage, context_tokens=context_tokens)
        # The slot is free before `assistant_end` goes out: a client may send its next message right away.
        if not await self.writer.release_slot(finish, assistant_message_id=self.assistant_message_id):
            stored = False
        if not stored:
            self.writer.keep_for_later(
                assistant_message_id=self.assistant_message_id, text=state.text, finish=finish, usage=state.usage
            )
        if error is not None:
            code, message, retryable = error
            await self.channel.emit(RunError(code=code, message=message, retryable=retryable))
        tokens = context_tokens if context_tokens is not None else self.session.context.tokens
        await self.channel.emit(
            AssistantEnd(
                message_id=self.assistant_message_id,
                finish_reason=finish,
                usage=Usage(**state.usage.model_dump()),
                context=ContextSize(tokens=tokens, limit=self.window),
            )
        )

    async def _keep_partial_answer(self) -> None:
        if self._layer1 is not None:
            await keep_partial_turn(self._layer1, self._result, self.state, run_id=self.run_id)

    def _count_unfinished_turn(self) -> None:
        view = self._layer1.last_view if self._layer1 is not None else None
        self.state.usage = unfinished_turn_usage(
            self.state,
            counter=self.deps.llm.counter,
            sent_tokens=view.tokens
            if view is not None and (self.state.turn_text or self._result is not None)
            else None,
            overhead_tokens=self._overhead_tokens,
            message=self.user_message.content,
        )

    async def _context_tokens(self, finish: FinishReason) -> int | None:
        if self._layer1 is None:
            return None
        return await next_context_tokens(
            self._layer1, self._result, finish, overhead_tokens=self._overhead_tokens, run_id=self.run_id
        )

    async def _summarize(self, items: list[Any]) -> str:
        return await self.deps.llm.complete(
            model=self.session.model,
            instructions=SUMMARY_INSTRUCTIONS,
            prompt=summary_prompt(items),
            max_tokens=min(SUMMARY_MAX_TOKENS, self.window // 4),
        )
