"""Layer 1 items: what the SDK stores and sends, how turns and tool-call pairs are found, how a summary reads.

Pure functions over JSON items (dicts); no database, no model.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, cast

from pydantic import BaseModel

from chinwag.db.context import ContextRow

Item = dict[str, Any]

SUMMARY_PREFIX = "Summary of the earlier conversation (older turns were condensed; their exact messages are gone):"
INTERRUPTED_OUTPUT = "interrupted"
SUMMARY_INSTRUCTIONS = (
    "You condense conversations between a user and an AI assistant. Write a concise summary of the conversation "
    "below, keeping facts, decisions, names, numbers, open questions, the user's goals and preferences, and the "
    "results of tool calls that still matter. Write it as notes for the assistant, in the conversation's language, "
    "in at most about 300 words. Answer with the summary only."
)


def to_json_item(item: Any) -> Item:
    """An SDK input item as a plain JSON-able dict that PostgreSQL `jsonb` accepts.

    Pydantic models (SDK output items) are dumped the way the SDK itself does (`exclude_unset`); NUL characters,
    which `jsonb` refuses, become U+FFFD.
    """
    if isinstance(item, BaseModel):
        item = item.model_dump(mode="json", exclude_unset=True)
    if not isinstance(item, Mapping):
        raise TypeError(f"a session item must be a mapping, not {type(item).__name__}")
    return cast(Item, _scrub(dict(item)))


def canonical(item: Item) -> Item:
    """The exact typed shape both APIs document for an item: a message always says `"type": "message"`.

    The OpenAI Responses API accepts a bare `{role, content}` message, but other servers implementing it (llama.cpp's
    `/v1/responses`) refuse an item without its type, and a session whose history holds one could never take another
    turn there. Applied to every stored item as it is read for the model, so histories written before this rule
    (and the SDK's own `{role, content}` input items) are sent in the typed shape too.
    """
    if "type" not in item and isinstance(item.get("role"), str) and "content" in item:
        return {"type": "message", **item}
    return item


def _scrub(value: Any) -> Any:
    if isinstance(value, str):
        return value.replace("\x00", "\ufffd") if "\x00" in value else value
    if isinstance(value, Mapping):
        return {str(k): _scrub(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_scrub(v) for v in value]
    if isinstance(value, BaseModel):
        return _scrub(value.model_dump(mode="json", exclude_unset=True))
    return value


def is_user_message(item: Mapping[str, Any]) -> bool:
    """A message the user typed: where a turn starts."""
    return item.get("role") == "user" and item.get("type", "message") == "message"


def call_id_of_call(item: Mapping[str, Any]) -> str | None:
    """The call id of a tool call that expects an output item (`function_call`, `computer_call`, ...)."""
    kind = item.get("type")
    call_id = item.get("call_id")
    if isinstance(kind, str) and kind.endswith("_call") and isinstance(call_id, str):
        return call_id
    return None


def call_id_of_output(item: Mapping[str, Any]) -> str | None:
    """The call id a tool output answers (`function_call_output`, ...)."""
    kind = item.get("type")
    call_id = item.get("call_id")
    if isinstance(kind, str) and kind.endswith("_call_output") and isinstance(call_id, str):
        return call_id
    return None


_CLOSABLE_CALLS = {"function_call": "function_call_output", "custom_tool_call": "custom_tool_call_output"}


def can_close(call: Mapping[str, Any]) -> bool:
    """Whether a synthetic output can close this call (function tools, custom tools); other kinds have no text
    output shape to fake."""
    return call.get("type") in _CLOSABLE_CALLS


def synthetic_output(call: Mapping[str, Any], output: str) -> Item:
    """The output item that closes `call` with the text `output`."""
    return {"type": _CLOSABLE_CALLS[str(call["type"])], "call_id": call["call_id"], "output": output}


def replayable(item: Item) -> Item:
    """An assistant message built by hand (no provider id) as the input message form
    `{"type": "message", "role": "assistant", "content": text}`, which both APIs (and the SDK's Chat Completions
    converter) accept; an output message (content parts) without its provider id is refused by the Responses API."""
    if item.get("role") == "assistant" and item.get("type", "message") == "message" and "id" not in item:
        content = item.get("content")
        if isinstance(content, list):
            content = "".join(p.get("text", "") for p in content if isinstance(p, Mapping))
        return assistant_message(content if isinstance(content, str) else "")
    return item


def assistant_message(text: str) -> Item:
    """An assistant message written by chinwag (a partial answer), in the typed input shape."""
    return {"type": "message", "role": "assistant", "content": text}


def plain_item(item: Mapping[str, Any]) -> Item | None:
    """The item as a plain text message that any OpenAI-compatible server takes (None: nothing to keep): messages
    keep their role and text, a tool call and its result become assistant notes, reasoning is dropped. The last resort
    for a history a provider refuses."""
    kind = item.get("type", "message")
    if kind == "message" and isinstance(item.get("role"), str):
        text = _content_text(item.get("content"))
        return {"type": "message", "role": item["role"], "content": text} if text else None
    if call_id_of_call(item) is not None:
        return assistant_message(f"[called the tool {item.get('name', kind)} with {item.get('arguments', '')}]")
    if call_id_of_output(item) is not None:
        return assistant_message(f"[the tool answered: {_content_text(item.get('output'))}]")
    return None


def without_id(item: Mapping[str, Any]) -> Item:
    return {k: v for k, v in item.items() if k not in ("id", "status")}


def summary_item(summary: str) -> Item:
    """The one item that stands for the summarized turns: a system message marked as a summary."""
    return {"type": "message", "role": "system", "content": f"{SUMMARY_PREFIX}\n\n{summary}"}


def is_summary_item(item: Any) -> bool:
    content = item.get("content") if isinstance(item, dict) else None
    return isinstance(content, str) and item.get("role") == "system" and content.startswith(SUMMARY_PREFIX)


def render_transcript(items: Iterable[Any]) -> str:
    """Items as plain text (`user: ...`, `assistant: ...`, `tool call ...`), the input of a summary prompt."""
    lines: list[str] = []
    for item in items:
        if not isinstance(item, dict):
            continue
        kind = item.get("type", "message")
        if kind == "message" or "role" in item:
            text = _content_text(item.get("content"))
            if is_summary_item(item):
                lines.append(f"[earlier summary]\n{text.removeprefix(SUMMARY_PREFIX).strip()}")
            elif text:
                lines.append(f"{item.get('role', 'unknown')}: {text}")
        elif call_id_of_call(item) is not None:
            lines.append(f"tool call {item.get('name', kind)}({item.get('arguments', '')})")
        elif call_id_of_output(item) is not None:
            lines.append(f"tool result: {_content_text(item.get('output'))}")
        elif kind == "reasoning":
            continue
        else:
            lines.append(f"{kind}: {json.dumps(item, ensure_ascii=False)[:2000]}")
    return "\n\n".join(lines)


def summary_prompt(items: Iterable[Any]) -> str:
    """The user prompt of a summary request; pair it with `SUMMARY_INSTRUCTIONS` as the system prompt."""
    return f"Conversation to summarize:\n\n{render_transcript(items)}"


def _content_text(content: Any) -> str:
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        parts = []
        for part in content:
            if isinstance(part, dict):
                text = part.get("text") or part.get("refusal")
                if isinstance(text, str):
                    parts.append(text)
                elif part.get("type") in ("input_image", "input_file"):
                    parts.append(f"[{part['type'].removeprefix('input_')}]")
            elif isinstance(part, str):
                parts.append(part)
        return "\n".join(parts)
    return "" if content is None else json.dumps(content, ensure_ascii=False)


@dataclass
class Turn:
    """Consecutive rows from one user message to the next (merged when a tool call's output lands later)."""

    rows: list[ContextRow] = field(default_factory=list)

    @property
    def tokens(self) -> int:
        return sum(r.tokens for r in self.rows)

    @property
    def seq(self) -> int | None:
        seqs = [r.turn_seq for r in self.rows if r.turn_seq is not None]
        return max(seqs) if seqs else None


def group_turns(rows: Sequence[ContextRow]) -> list[Turn]:
    """Split rows into whole turns: a new turn at each user message or change of `turn_seq`; then merge turns so
    that every tool call sits in the same turn as its output."""
    turns: list[Turn] = []
    for row in rows:
        if not turns or row.role == "user" or row.turn_seq != turns[-1].rows[-1].turn_seq:
            turns.append(Turn())
        turns[-1].rows.append(row)

    # (Grouping reads the facts a row carries, never its item: an old row's JSON is not decoded for it.)
    output_turn: dict[str, int] = {}
    for index, turn in enumerate(turns):
        for row in turn.rows:
            if row.output_id is not None:
                output_turn[row.output_id] = index
    if not output_turn:
        return turns  # no tool output: nothing to merge
    merged: list[Turn] = []
    index = 0
    while index < len(turns):
        group = Turn(rows=list(turns[index].rows))
        end = index
        scan = index
        while scan <= end:
            for row in turns[scan].rows:
                call_id = row.call_id
                if call_id is not None and output_turn.get(call_id, -1) > end:
                    end = output_turn[call_id]
            scan += 1
        for extra in turns[index + 1 : end + 1]:
            group.rows.extend(extra.rows)
        merged.append(group)
        index = end + 1
    return merged


def paired_items(rows: Iterable[ContextRow]) -> list[ContextRow]:
    """Rows without any tool call lacking its output or output lacking its call (never sent to a model)."""
    rows = list(rows)
    calls = {r.call_id for r in rows if r.call_id is not None}
    outputs = {r.output_id for r in rows if r.output_id is not None}
    if calls == outputs:
        return rows
    return [
        row
        for row in rows
        if (row.call_id is None or row.call_id in outputs) and (row.output_id is None or row.output_id in calls)
    ]
