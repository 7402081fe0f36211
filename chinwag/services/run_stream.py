"""A run's stream: the Agents SDK's events of one `Runner.run_streamed` turned into wire events and the run's state.

Each SDK event becomes at most one wire event (`run_events.map_stream_event`). Text and reasoning go out as they
come and are kept in `RunState`; the answer is checkpointed to its message at most about once a second, never per
token. A tool call is announced once (`tool_start`); when its output comes it is stored as a `tool` message, then
its `tool_done` goes out.
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass

from agents import RunResultStreaming

from chinwag.observability.observer import RunObservation
from chinwag.schemas.messages import ToolCall
from chinwag.services.agent_builder import McpToolsLike
from chinwag.services.run_events import (
    ModelTurnCut,
    ModelTurnEnded,
    ModelTurnStarted,
    ReasoningDelta,
    ToolFinished,
    ToolStarted,
    map_stream_event,
)
from chinwag.services.run_state import OpenTool, RunState
from chinwag.services.run_writer import RunWriter
from chinwag.websocket.events import ToolDone, ToolStart
from chinwag.websocket.runs import RunChannel

CHECKPOINT_EVERY_S = 1.0
PARAGRAPH_BREAK = "\n\n"


async def close_tool(
    writer: RunWriter,
    channel: RunChannel,
    call_id: str,
    tool: OpenTool,
    *,
    output: str,
    ok: bool,
    interrupted: bool = False,
) -> None:
    """Store the call as a `tool` message, then send its `tool_done` (sent even when the store fails: a client
    never sees a tool left open)."""
    call = ToolCall(call_id=call_id, name=tool.name, arguments=tool.arguments, output=output, ok=ok)
    try:
        await writer.tool_message(call, interrupted=interrupted)
    finally:
        await channel.emit(ToolDone(call_id=call_id, name=tool.name, output=output, ok=ok))


@dataclass(kw_only=True, slots=True)
class RunStream:
    """Consumes one SDK run's events into `state` and `channel` (see the module's docstring); stops at the next
    event once `interrupted` is set."""

    state: RunState
    channel: RunChannel
    writer: RunWriter
    answer_id: str
    tools: McpToolsLike
    interrupted: asyncio.Event
    observed: RunObservation | None
    output_cap: int
    """The cap sent with each model request: a response that used all of it was cut."""

    async def consume(self, result: RunResultStreaming) -> None:
        state, channel = self.state, self.channel
        last_checkpoint = time.monotonic()
        async for event in result.stream_events():
            if self.interrupted.is_set():
                break
            mapped = map_stream_event(event)
            if mapped is None:
                continue
            if isinstance(mapped, ReasoningDelta):
                state.reasoning_parts.append(mapped.delta)
                await channel.emit_reasoning(mapped.delta)
            elif isinstance(mapped, str):
                if state.turn_start and state.turn_start == len(state.parts) and state.parts:
                    # A new model response after tool calls: its text starts a new paragraph, in the stream and the
                    # history alike, rather than running into the text before the calls.
                    mapped = PARAGRAPH_BREAK + mapped
                if not state.parts and self.observed is not None:
                    self.observed.first_text()
                state.parts.append(mapped)
                await channel.emit_text(mapped)
                now = time.monotonic()
                if now - last_checkpoint >= CHECKPOINT_EVERY_S:
                    last_checkpoint = now
                    await self.writer.checkpoint(self.answer_id, state.text, reasoning=state.reasoning)
            elif isinstance(mapped, ModelTurnStarted | ModelTurnEnded):
                state.turn_start = len(state.parts)
                if isinstance(mapped, ModelTurnEnded) and mapped.output_tokens is not None:
                    state.cut = mapped.output_tokens >= self.output_cap
            elif isinstance(mapped, ModelTurnCut):
                state.cut = True
            elif isinstance(mapped, ToolStarted):
                await self._tool_started(mapped)
            elif isinstance(mapped, ToolFinished):
                tool = state.open_tools.pop(mapped.call_id, None)
                if tool is not None:
                    ok = not self.tools.failed(mapped.call_id)
                    await close_tool(self.writer, channel, mapped.call_id, tool, output=mapped.output, ok=ok)

    async def _tool_started(self, started: ToolStarted) -> None:
        state = self.state
        if started.call_id in state.open_tools:
            return  # announced once
        state.open_tools[started.call_id] = OpenTool(name=started.name, arguments=started.arguments)
        state.tools_started += 1
        await self.channel.emit(
            ToolStart(
                call_id=started.call_id,
                name=started.name,
                arguments=started.arguments,
                server=self.tools.server_of(started.name),
            )
        )
