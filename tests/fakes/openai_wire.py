"""The bytes the fake OpenAI server sends: chat completions and responses, streamed (SSE) or whole.

Everything a reply streams is built before the first byte goes out, as `Wire(head, chunks, tail)`: `head` is sent
at once, then each chunk after the reply's pace, then `tail`. The per-token path is a prebuilt `bytes` and a send.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any

import orjson

from tests.fakes.openai_script import ToolCall, split_arguments


@dataclass(frozen=True)
class Wire:
    """A streamed answer: `head` right away, `chunks` (each a model token's worth) at the reply's pace, `tail`."""

    head: bytes
    chunks: list[bytes]
    tail: bytes

    def events_through(self, count: int) -> int:
        """How many SSE events `head` and the first `count` chunks hold (each ends with a blank line; JSON data never
        holds one)."""
        sent = self.head + b"".join(self.chunks[:count])
        return sent.count(b"\n\n")


@dataclass(frozen=True)
class Answer:
    """What the fake model says to one request, with ids already assigned."""

    model: str
    response_id: str
    message_id: str
    tokens: list[str]
    tool_calls: list[tuple[str, str, ToolCall]]  # (item id, call id, call)
    input_tokens: int
    output_tokens: int
    reasoning: list[str] = field(default_factory=list)  # reasoning summary tokens, streamed before the text
    finish_reason: str | None = None  # "length": cut by the output cap

    @property
    def text(self) -> str:
        return "".join(self.tokens)

    @property
    def reasoning_text(self) -> str:
        return "".join(self.reasoning)

    @property
    def reasoning_id(self) -> str:
        return self.message_id.replace("msg_", "rs_", 1)


class _Events:
    """Collects SSE events; chunk events start a new chunk, others join the next one (or the tail)."""

    def __init__(self) -> None:
        self.head: list[bytes] = []
        self.chunks: list[bytes] = []
        self.pending: list[bytes] = []
        self.started = False

    def add(self, data: bytes, *, chunk: bool = False) -> None:
        if chunk:
            self.started = True
            self.chunks.append(b"".join([*self.pending, data]))
            self.pending.clear()
        elif self.started:
            self.pending.append(data)
        else:
            self.head.append(data)

    def wire(self) -> Wire:
        return Wire(head=b"".join(self.head), chunks=self.chunks, tail=b"".join(self.pending))


# Chat completions ------------------------------------------------------------------------------------------------


def chat_usage(answer: Answer) -> dict[str, Any]:
    return {
        "prompt_tokens": answer.input_tokens,
        "completion_tokens": answer.output_tokens,
        "total_tokens": answer.input_tokens + answer.output_tokens,
        "prompt_tokens_details": {"cached_tokens": 0, "audio_tokens": 0},
        "completion_tokens_details": {
            "reasoning_tokens": len(answer.reasoning),
            "audio_tokens": 0,
            "accepted_prediction_tokens": 0,
            "rejected_prediction_tokens": 0,
        },
    }


def _finish_reason(answer: Answer) -> str:
    if answer.finish_reason is not None:
        return answer.finish_reason
    return "tool_calls" if answer.tool_calls else "stop"


def chat_stream(answer: Answer, *, include_usage: bool) -> Wire:
    """`chat.completion.chunk` events exactly as OpenAI streams them, ending with `data: [DONE]`."""
    created = int(time.time())
    prefix = (
        b'data: {"id":"'
        + answer.response_id.encode()
        + b'","object":"chat.completion.chunk","created":'
        + str(created).encode()
        + b',"model":'
        + orjson.dumps(answer.model)
        + b',"system_fingerprint":null,"choices":[{"index":0,"delta":'
    )
    suffix = b',"logprobs":null,"finish_reason":null}]' + (b',"usage":null' if include_usage else b"") + b"}\n\n"
    events = _Events()
    events.add(prefix + b'{"role":"assistant","content":"","refusal":null}' + suffix)
    for token in answer.reasoning:
        # As vLLM, DeepSeek and Ollama stream reasoning; the Agents SDK turns it into a reasoning item.
        events.add(prefix + b'{"reasoning_content":' + orjson.dumps(token) + b"}" + suffix, chunk=True)
    for token in answer.tokens:
        events.add(prefix + b'{"content":' + orjson.dumps(token) + b"}" + suffix, chunk=True)
    for index, (_item_id, call_id, tool_call) in enumerate(answer.tool_calls):
        start = {
            "tool_calls": [
                {
                    "index": index,
                    "id": call_id,
                    "type": "function",
                    "function": {"name": tool_call.name, "arguments": ""},
                }
            ]
        }
        events.add(prefix + orjson.dumps(start) + suffix)
        for piece in split_arguments(tool_call.arguments):
            delta = {"tool_calls": [{"index": index, "function": {"arguments": piece}}]}
            events.add(prefix + orjson.dumps(delta) + suffix, chunk=True)
    final = prefix + b'{},"logprobs":null,"finish_reason":"' + _finish_reason(answer).encode() + b'"}]'
    events.add(final + (b',"usage":null' if include_usage else b"") + b"}\n\n")
    if include_usage:
        usage_chunk = {
            "id": answer.response_id,
            "object": "chat.completion.chunk",
            "created": created,
            "model": answer.model,
            "system_fingerprint": None,
            "choices": [],
            "usage": chat_usage(answer),
        }
        events.add(b"data: " + orjson.dumps(usage_chunk) + b"\n\n")
    events.add(b"data: [DONE]\n\n")
    return events.wire()


def chat_completion(answer: Answer) -> dict[str, Any]:
    """A whole (non-streamed) `chat.completion` object."""
    message: dict[str, Any] = {
        "role": "assistant",
        "content": answer.text or None,
        "refusal": None,
        "annotations": [],
    }
    if answer.reasoning:
        message["reasoning_content"] = answer.reasoning_text
    if answer.tool_calls:
        message["tool_calls"] = [
            {"id": call_id, "type": "function", "function": {"name": c.name, "arguments": c.arguments}}
            for _item_id, call_id, c in answer.tool_calls
        ]
    return {
        "id": answer.response_id,
        "object": "chat.completion",
        "created": int(time.time()),
        "model": answer.model,
        "system_fingerprint": None,
        "choices": [{"index": 0, "message": message, "logprobs": None, "finish_reason": _finish_reason(answer)}],
        "usage": chat_usage(answer),
    }


# Responses -------------------------------------------------------------------------------------------------------


def _message_item(answer: Answer, *, done: bool) -> dict[str, Any]:
    content = [_text_part(answer.text)] if done else []
    return {
        "id": answer.message_id,
        "type": "message",
        "status": "completed" if done else "in_progress",
        "role": "assistant",
        "content": content,
    }


def _summary_part(text: str) -> dict[str, Any]:
    return {"type": "summary_text", "text": text}


def _text_part(text: str) -> dict[str, Any]:
    return {"type": "output_text", "text": text, "annotations": [], "logprobs": []}


def _call_item(item_id: str, call_id: str, tool_call: ToolCall, *, done: bool) -> dict[str, Any]:
    return {
        "id": item_id,
        "type": "function_call",
        "status": "completed" if done else "in_progress",
        "call_id": call_id,
        "name": tool_call.name,
        "arguments": tool_call.arguments if done else "",
    }


def _reasoning_item(answer: Answer, *, done: bool) -> dict[str, Any]:
    summary = [{"type": "summary_text", "text": answer.reasoning_text}] if done else []
    return {"id": answer.reasoning_id, "type": "reasoning", "summary": summary}


def _output(answer: Answer) -> list[dict[str, Any]]:
    output = [_reasoning_item(answer, done=True)] if answer.reasoning else []
    output += [_message_item(answer, done=True)] if answer.tokens else []
    output += [_call_item(i, c, t, done=True) for i, c, t in answer.tool_calls]
    return output


def response_object(answer: Answer, request: dict[str, Any], *, done: bool) -> dict[str, Any]:
    """A `response` object: in progress (empty output) or completed (output and usage)."""
    usage = {
        "input_tokens": answer.input_tokens,
        "input_tokens_details": {"cached_tokens": 0, "cache_write_tokens": 0},
        "output_tokens": answer.output_tokens,
        "output_tokens_details": {"reasoning_tokens": len(answer.reasoning)},
        "total_tokens": answer.input_tokens + answer.output_tokens,
    }
    return {
        "id": answer.response_id,
        "object": "response",
        "created_at": int(time.time()),
        "status": "completed" if done else "in_progress",
        "background": False,
        "error": None,
        "incomplete_details": None,
        "instructions": request.get("instructions"),
        "max_output_tokens": request.get("max_output_tokens"),
        "model": answer.model,
        "output": _output(answer) if done else [],
        "parallel_tool_calls": request.get("parallel_tool_calls", True),
        "previous_response_id": request.get("previous_response_id"),
        "reasoning": {"effort": None, "summary": None},
        "store": request.get("store", False),
        "temperature": request.get("temperature", 1.0),
        "text": {"format": {"type": "text"}},
        "tool_choice": request.get("tool_choice", "auto"),
        "tools": request.get("tools", []),
        "top_p": request.get("top_p", 1.0),
        "truncation": "disabled",
        "usage": usage if done else None,
        "user": None,
        "metadata": {},
    }


class _ResponseEvents(_Events):
    def __init__(self) -> None:
        super().__init__()
        self.sequence = 0

    def event(self, kind: str, payload: dict[str, Any], *, chunk: bool = False) -> None:
        body = orjson.dumps({"type": kind, "sequence_number": self.sequence, **payload})
        self.sequence += 1
        self.add(b"event: " + kind.encode() + b"\ndata: " + body + b"\n\n", chunk=chunk)


def responses_stream(answer: Answer, request: dict[str, Any]) -> Wire:
    """The Responses API event sequence: created, in_progress, output items with their deltas, completed."""
    events = _ResponseEvents()
    events.event("response.created", {"response": response_object(answer, request, done=False)})
    events.event("response.in_progress", {"response": response_object(answer, request, done=False)})
    index = 0
    if answer.reasoning:
        summary = {"item_id": answer.reasoning_id, "output_index": index, "summary_index": 0}
        events.event("response.output_item.added", {"output_index": index, "item": _reasoning_item(answer, done=False)})
        events.event("response.reasoning_summary_part.added", {**summary, "part": _summary_part("")})
        for token in answer.reasoning:
            events.event("response.reasoning_summary_text.delta", {**summary, "delta": token}, chunk=True)
        events.event("response.reasoning_summary_text.done", {**summary, "text": answer.reasoning_text})
        events.event("response.reasoning_summary_part.done", {**summary, "part": _summary_part(answer.reasoning_text)})
        events.event("response.output_item.done", {"output_index": index, "item": _reasoning_item(answer, done=True)})
        index += 1
    if answer.tokens:
        where = {"item_id": answer.message_id, "output_index": index, "content_index": 0}
        events.event("response.output_item.added", {"output_index": index, "item": _message_item(answer, done=False)})
        events.event("response.content_part.added", {**where, "part": _text_part("")})
        delta_head = b'event: response.output_text.delta\ndata: {"type":"response.output_text.delta","sequence_number":'
        delta_where = (
            b',"item_id":"'
            + answer.message_id.encode()
            + b'","output_index":'
            + str(index).encode()
            + b',"content_index":0,"delta":'
        )
        for token in answer.tokens:
            data = delta_head + str(events.sequence).encode() + delta_where + orjson.dumps(token)
            events.add(data + b',"logprobs":[]}\n\n', chunk=True)
            events.sequence += 1
        events.event("response.output_text.done", {**where, "text": answer.text, "logprobs": []})
        events.event("response.content_part.done", {**where, "part": _text_part(answer.text)})
        events.event("response.output_item.done", {"output_index": index, "item": _message_item(answer, done=True)})
        index += 1
    for item_id, call_id, tool_call in answer.tool_calls:
        events.event(
            "response.output_item.added",
            {"output_index": index, "item": _call_item(item_id, call_id, tool_call, done=False)},
        )
        for piece in split_arguments(tool_call.arguments):
            events.event(
                "response.function_call_arguments.delta",
                {"item_id": item_id, "output_index": index, "delta": piece},
                chunk=True,
            )
        events.event(
            "response.function_call_arguments.done",
            {"item_id": item_id, "output_index": index, "name": tool_call.name, "arguments": tool_call.arguments},
        )
        events.event(
            "response.output_item.done",
            {"output_index": index, "item": _call_item(item_id, call_id, tool_call, done=True)},
        )
        index += 1
    final = response_object(answer, request, done=True)
    if answer.finish_reason == "length":
        final["status"] = "incomplete"
        final["incomplete_details"] = {"reason": "max_output_tokens"}
        events.event("response.incomplete", {"response": final})
    else:
        events.event("response.completed", {"response": final})
    return events.wire()


def chat_stream_error(message: str | None) -> bytes:
    """The error chunk OpenAI sends when a chat completion fails mid-stream (the client raises `APIError`)."""
    return b"data: " + orjson.dumps(error_body(500, message or "The model failed mid-stream.")) + b"\n\n"


def responses_failed(answer: Answer, request: dict[str, Any], *, sequence: int, message: str | None) -> bytes:
    """The `response.failed` event that ends a Responses stream on a model error."""
    response = response_object(answer, request, done=False)
    response["status"] = "failed"
    response["error"] = {"code": "server_error", "message": message or "The model failed mid-stream."}
    event = {"type": "response.failed", "sequence_number": sequence, "response": response}
    return b"event: response.failed\ndata: " + orjson.dumps(event) + b"\n\n"


def error_body(status: int, message: str | None) -> dict[str, Any]:
    """An OpenAI-shaped error body."""
    kinds = {
        400: ("invalid_request_error", "invalid_request"),
        401: ("invalid_request_error", "invalid_api_key"),
        404: ("invalid_request_error", "model_not_found"),
        429: ("requests", "rate_limit_exceeded"),
    }
    kind, code = kinds.get(status, ("server_error", "server_error"))
    return {"error": {"message": message or f"fake error {status}", "type": kind, "param": None, "code": code}}
