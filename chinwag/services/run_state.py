"""What a run has produced so far, and how its end is accounted in Layer 1: the partial turn kept after an
interrupt, the usage of an answer cut short, and the context size the next turn will see."""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import Any

from agents import RunResultStreaming

from chinwag.schemas.sessions import TokenUsage
from chinwag.services.context_items import assistant_message
from chinwag.services.postgres_session import ItemCounter
from chinwag.services.token_aware_session import TokenAwareSession
from chinwag.websocket.events import FinishReason

logger = logging.getLogger(__name__)


@dataclass
class OpenTool:
    """A tool call announced (`tool_start`) and not yet done."""

    name: str
    arguments: str


@dataclass
class RunState:
    """What the run has produced so far (in memory; checkpointed to the database)."""

    parts: list[str] = field(default_factory=list)
    """The answer's text deltas (joined when needed: `+=` on a long string would copy it per token)."""
    turn_start: int = 0
    """Index in `parts` where the current model response's text begins."""
    open_tools: dict[str, OpenTool] = field(default_factory=dict)
    usage: TokenUsage = field(default_factory=TokenUsage)
    cut: bool = False
    """The provider cut the answer (output cap or window): the run ends with `finish_reason: "length"`."""
    tools_started: int = 0
    reasoning_parts: list[str] = field(default_factory=list)
    """The reasoning the model streamed (`reasoning_delta`), kept apart from the answer."""

    @property
    def text(self) -> str:
        return "".join(self.parts)

    @property
    def reasoning(self) -> str | None:
        return "".join(self.reasoning_parts) if self.reasoning_parts else None

    @property
    def turn_text(self) -> str:
        """The text of the model response in progress (not yet an item the SDK stores)."""
        return "".join(self.parts[self.turn_start :])


async def keep_partial_turn(
    layer1: TokenAwareSession, result: RunResultStreaming | None, state: RunState, *, run_id: str
) -> None:
    """Layer 1 after an interrupt: what the SDK dropped (the unfinished turn: its text so far, tool calls without
    output) is stored, and every call left open gets a synthetic output."""
    items: list[Any] = []
    if result is not None:
        items.extend(item.to_input_item() for item in result.new_items)
    if state.turn_text.strip():
        items.append(assistant_message(state.turn_text))
    try:
        await layer1.add_partial_turn(items)
    except Exception:
        logger.exception("run %s: could not keep the partial turn in the model's context", run_id)


def unfinished_turn_usage(
    state: RunState, *, counter: ItemCounter, sent_tokens: int | None, overhead_tokens: int, message: str
) -> TokenUsage:
    """An answer cut short never got the provider's usage for its last model call: what was sent (`sent_tokens` of
    history, when the model was called) and what was streamed, counted offline, so the session's usage is not 0/0
    for tokens that were spent."""
    usage = state.usage
    output = usage.output_tokens + counter.count_text(state.turn_text)
    input_tokens = usage.input_tokens
    if sent_tokens is not None and input_tokens == 0:
        input_tokens = overhead_tokens + sent_tokens + counter.count_text(message)
    return TokenUsage(input_tokens=input_tokens, output_tokens=output)


async def next_context_tokens(
    layer1: TokenAwareSession,
    result: RunResultStreaming | None,
    finish: FinishReason,
    *,
    overhead_tokens: int,
    run_id: str,
) -> int | None:
    """The size of what the model sees next turn. After a finished run the provider's usage of its last model call
    makes the stored counts exact."""
    try:
        last = result.raw_responses[-1].usage if result and result.raw_responses else None
        if finish == "stop" and last is not None and last.input_tokens > 0:
            view = await layer1.record_usage(
                input_tokens=last.input_tokens, output_tokens=last.output_tokens, overhead_tokens=overhead_tokens
            )
        else:
            view = await layer1.view()
    except Exception:
        logger.exception("run %s: could not measure the context", run_id)
        # What the run's first model call was sent, if the SDK asked for it (`prepare` no longer writes it).
        return layer1.last_view.tokens if layer1.last_view is not None else None
    return view.tokens
