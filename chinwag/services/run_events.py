"""The one function that maps an Agents SDK stream event to a chat wire event (or to nothing).

Raw SDK objects stop here: what comes out is a text delta (a `str`) or a plain dict body of `tool_start` /
`tool_done`, ready for `RunChannel`.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

import httpx2
import openai
from agents import RawResponsesStreamEvent, RunItemStreamEvent, StreamEvent, ToolCallItem, ToolCallOutputItem
from agents.exceptions import AgentsException, ModelBehaviorError

from chinwag.errors import ChinwagError
from chinwag.llm.provider import ModelNotConfigured
from chinwag.websocket.events import ErrorCode

TOOL_OUTPUT_MAX_CHARS = 100_000


@dataclass(frozen=True, slots=True)
class ToolStarted:
    call_id: str
    name: str
    arguments: str


@dataclass(frozen=True, slots=True)
class ToolFinished:
    call_id: str
    output: str


@dataclass(frozen=True, slots=True)
class ModelTurnStarted:
    """A new model response begins (the text of the previous one is complete)."""


@dataclass(frozen=True, slots=True)
class ModelTurnEnded:
    """The model response is complete: its text is now an item the SDK stores. `output_tokens` is the provider's
    count for it, when it said (an answer as long as the cap was cut, whatever its status says: llama.cpp calls
    such a response completed)."""

    output_tokens: int | None = None


@dataclass(frozen=True, slots=True)
class ModelTurnCut:
    """The model response stopped at the output cap (Responses API `response.incomplete`)."""


@dataclass(frozen=True, slots=True)
class ReasoningDelta:
    """Reasoning text the model streamed: a Responses API reasoning summary, or `reasoning_content` / `reasoning`
    deltas of an OpenAI-compatible server (the SDK turns both into reasoning events)."""

    delta: str


_REASONING_DELTAS = frozenset({"response.reasoning_summary_text.delta", "response.reasoning_text.delta"})


Mapped = str | ReasoningDelta | ToolStarted | ToolFinished | ModelTurnStarted | ModelTurnEnded | ModelTurnCut | None


def map_stream_event(event: StreamEvent) -> Mapped:
    """At most one wire-level fact per SDK event: a text delta, a tool call announced, a tool output, a new turn."""
    if isinstance(event, RawResponsesStreamEvent):
        data = event.data
        kind = data.type
        if kind == "response.output_text.delta":
            delta: str = getattr(data, "delta", "")
            return delta or None
        if kind in _REASONING_DELTAS:
            reasoning: str = getattr(data, "delta", "")
            return ReasoningDelta(reasoning) if reasoning else None
        if kind == "response.created":
            return ModelTurnStarted()
        if kind == "response.completed":
            usage = getattr(getattr(data, "response", None), "usage", None)
            output_tokens = getattr(usage, "output_tokens", None)
            return ModelTurnEnded(output_tokens=output_tokens if isinstance(output_tokens, int) else None)
        if kind == "response.incomplete":
            details = getattr(getattr(data, "response", None), "incomplete_details", None)
            if getattr(details, "reason", None) == "max_output_tokens":
                return ModelTurnCut()
        return None
    if isinstance(event, RunItemStreamEvent):
        item = event.item
        if event.name == "tool_called" and isinstance(item, ToolCallItem):
            raw = item.raw_item
            call_id = _field(raw, "call_id") or _field(raw, "id")
            name = _field(raw, "name") or "tool"
            arguments = _field(raw, "arguments")
            if call_id is None:
                return None
            return ToolStarted(call_id=call_id, name=name, arguments=arguments if arguments is not None else "{}")
        if event.name == "tool_output" and isinstance(item, ToolCallOutputItem):
            call_id = _field(item.raw_item, "call_id")
            if call_id is None:
                return None
            return ToolFinished(call_id=call_id, output=tool_output_text(item.output))
    return None


def tool_output_text(output: Any) -> str:
    """A tool's output as the text shown to users (capped): text parts joined, other parts named."""
    text = _parts_text(output)
    if text is not None:
        pass
    elif isinstance(output, str):
        text = output
    else:
        try:
            text = json.dumps(output, ensure_ascii=False, default=str)
        except (TypeError, ValueError):
            text = str(output)
    if len(text) > TOOL_OUTPUT_MAX_CHARS:
        text = text[:TOOL_OUTPUT_MAX_CHARS] + "\n[output truncated]"
    return text


def _parts_text(output: Any) -> str | None:
    """The text of SDK tool output items (`{"type": "text", "text": ...}`, one or a list), None for other outputs."""
    parts = output if isinstance(output, list) else [output]
    if not parts or not all(_part_type(p) is not None for p in parts):
        return None
    texts: list[str] = []
    for part in parts:
        kind = _part_type(part)
        if kind in ("text", "input_text", "output_text"):
            value = part.get("text") if isinstance(part, dict) else getattr(part, "text", "")
            texts.append(value if isinstance(value, str) else "")
        else:
            texts.append(f"[{str(kind).removeprefix('input_')}]")
    return "\n".join(texts)


def _part_type(part: Any) -> str | None:
    kind = part.get("type") if isinstance(part, dict) else getattr(part, "type", None)
    return kind if isinstance(kind, str) else None


def _field(raw: Any, name: str) -> str | None:
    value = raw.get(name) if isinstance(raw, dict) else getattr(raw, name, None)
    return value if isinstance(value, str) else None


PROVIDER_MESSAGE_MAX_CHARS = 300


def provider_message(exc: openai.APIStatusError) -> str:
    """What the provider said about a refused request (its `error.message`), short enough for a log line or an
    `error` frame; empty when it said nothing."""
    body = exc.body
    message: Any = None
    if isinstance(body, dict):
        inner = body.get("error", body)
        message = inner.get("message") if isinstance(inner, dict) else inner
    if not isinstance(message, str) or not message.strip():
        return ""
    text = " ".join(message.split())
    if len(text) > PROVIDER_MESSAGE_MAX_CHARS:
        text = text[: PROVIDER_MESSAGE_MAX_CHARS - 1] + "…"
    return text


def classify_error(exc: BaseException) -> tuple[ErrorCode, str, bool]:
    """(code, message for the user, retryable) of what ended a run."""
    if isinstance(exc, ModelNotConfigured):
        return "llm_error", str(exc), False
    if isinstance(exc, openai.APIStatusError):
        retryable = exc.status_code == 429 or exc.status_code >= 500
        said = provider_message(exc)
        text = f"The model provider answered {exc.status_code}" + (f": {said}" if said else ".")
        return "llm_error", text, retryable
    if isinstance(exc, openai.APITimeoutError | httpx2.TimeoutException):
        return "llm_error", "The model provider stopped sending (stall timeout): try again.", True
    if isinstance(exc, openai.APITimeoutError | openai.APIConnectionError | httpx2.TransportError):
        return "llm_error", "The model provider could not be reached or dropped the connection.", True
    if isinstance(exc, openai.APIError | ModelBehaviorError):
        return "llm_error", "The model's answer could not be used.", True
    if isinstance(exc, ChinwagError):
        return "internal", exc.detail, exc.retryable
    if isinstance(exc, AgentsException):
        return "internal", "The agent run failed.", False
    return "internal", "The run failed.", False
