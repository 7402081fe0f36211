"""What the fake OpenAI server answers: one `Reply` per request, built with `say`, `call` and `fail`.

```python
fake.script(
    say("Hello there, how can I help?", delay=0.01),            # text, one token per word, 10 ms apart
    call("get_weather", {"city": "Paris"}, text="Checking."),   # text, then a tool call
    fail(429, retry_after=1),                                    # an HTTP error
    say("partial answer that breaks", drop_after=2),             # connection dropped after 2 chunks
    say("slow", stall_before=5),                                 # nothing at all for 5 s
    say("half an answer then", error_after=3),                   # an error event in the stream after 3 chunks
)
```

Replies are plain frozen dataclasses, so `dataclasses.replace(reply, delay=0.02)` works, and `Reply.from_json` reads
the same fields from JSON (the control API of the out-of-process server).
"""

from __future__ import annotations

import dataclasses
import re
from dataclasses import dataclass, field
from typing import Any

import orjson

_WORD = re.compile(r"\s*\S+|\s+")
_ARGUMENT_PIECE = 8


@dataclass(frozen=True)
class ToolCall:
    """A function call the fake model makes; `arguments` is JSON text. `call_id` None: the server numbers it."""

    name: str
    arguments: str = "{}"
    call_id: str | None = None


@dataclass(frozen=True)
class Reply:
    """One scripted model answer.

    Streamed output is a sequence of *chunks*: the `reasoning` one chunk per word (a reasoning summary on the
    Responses API; `reasoning_content` deltas on chat completions, as vLLM and Ollama send it), then the text split
    into tokens (`tokens` pieces of about equal length, or one per word when None), then each tool call's arguments
    in small pieces. `delay` is slept before each chunk, `stall` once after `stall_at` chunks, `stall_before` before
    anything is sent (even headers). `drop_after` closes the connection after that many chunks without finishing
    the response; `error_after` ends the stream after that many chunks with the error OpenAI sends mid-stream (chat:
    a `data: {"error": ...}` chunk; responses: a `response.failed` event), with `error_message`. `status` answers an
    HTTP error instead (with `Retry-After` when `retry_after` is set). `echo` answers the text of the last user
    message. `input_tokens`/`output_tokens` override the usage the fake reports (by default: about 4 characters per
    input token, one output token per text or reasoning token plus one per 4 characters of tool-call arguments).
    """

    text: str = ""
    tokens: int | None = None
    reasoning: str = ""
    delay: float = 0.0
    tool_calls: tuple[ToolCall, ...] = ()
    status: int | None = None
    retry_after: float | None = None
    error_message: str | None = None
    drop_after: int | None = None
    error_after: int | None = None
    stall_before: float = 0.0
    stall_at: int | None = None
    stall: float = 0.0
    echo: bool = False
    input_tokens: int | None = None
    output_tokens: int | None = None
    finish_reason: str | None = None
    recorded: str | None = None
    """The file name of an SSE body recorded from a real server (in `tests/fakes/recorded/`), replayed as it is
    instead of anything scripted here."""
    """"length": the answer ends as cut by the output cap (chat: `finish_reason: "length"`; responses: a
    `response.incomplete` event with reason `max_output_tokens`); None: "stop" or "tool_calls" as usual."""

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Reply:
        """A reply from its JSON form: the field names above; `tool_calls` items are `{name, arguments, call_id?}`
        where `arguments` may be an object or JSON text."""
        if not isinstance(data, dict):
            raise ValueError("a reply must be a JSON object")
        unknown = set(data) - set(_JSON_TYPES)
        if unknown:
            raise ValueError(f"unknown reply fields: {sorted(unknown)}")
        for name, value in data.items():
            expected = _JSON_TYPES[name]
            if (isinstance(value, bool) and bool not in expected) or not isinstance(value, expected):
                raise ValueError(f"reply field {name!r} has the wrong type: {value!r}")
        values = dict(data)
        values["tool_calls"] = tuple(
            ToolCall(name=c["name"], arguments=_arguments_json(c.get("arguments", {})), call_id=c.get("call_id"))
            for c in data.get("tool_calls", [])
        )
        return cls(**values)

    def to_json(self) -> dict[str, Any]:
        data = dataclasses.asdict(self)
        data["tool_calls"] = [dataclasses.asdict(c) for c in self.tool_calls]
        return data


@dataclass
class RecordedRequest:
    """A request the fake received: its path, JSON body, headers (names lowercased) and query string."""

    path: str
    body: dict[str, Any]
    headers: dict[str, str] = field(default_factory=dict)
    query: str = ""
    client_port: int | None = None
    """The port of the connection it came on: the same port twice is one kept-alive connection."""

    def to_json(self) -> dict[str, Any]:
        return {
            "path": self.path,
            "body": self.body,
            "headers": self.headers,
            "query": self.query,
            "client_port": self.client_port,
        }

    @property
    def last_user_text(self) -> str:
        """The text of the last user message (chat `messages` or responses `input`), "" if there is none."""
        items: Any = self.body.get("messages") if "messages" in self.body else self.body.get("input")
        if isinstance(items, str):
            return items
        for item in reversed(items or []):
            if isinstance(item, dict) and item.get("role") == "user":
                return _content_text(item.get("content"))
        return ""


_NUMBER = (int, float)
_OPTIONAL_INT = (int, type(None))
_JSON_TYPES: dict[str, tuple[type, ...]] = {
    "finish_reason": (str, type(None)),
    "recorded": (str, type(None)),
    "text": (str,),
    "tokens": _OPTIONAL_INT,
    "reasoning": (str,),
    "delay": _NUMBER,
    "tool_calls": (list,),
    "status": _OPTIONAL_INT,
    "retry_after": (*_NUMBER, type(None)),
    "error_message": (str, type(None)),
    "drop_after": _OPTIONAL_INT,
    "error_after": _OPTIONAL_INT,
    "stall_before": _NUMBER,
    "stall_at": _OPTIONAL_INT,
    "stall": _NUMBER,
    "echo": (bool,),
    "input_tokens": _OPTIONAL_INT,
    "output_tokens": _OPTIONAL_INT,
}


def say(
    text: str,
    *,
    tokens: int | None = None,
    delay: float = 0.0,
    **options: Any,
) -> Reply:
    """A text answer, streamed as `tokens` chunks (default: one per word), `delay` seconds before each."""
    return Reply(text=text, tokens=tokens, delay=delay, **options)


def call(name: str, arguments: dict[str, Any] | str | None = None, *, text: str = "", **options: Any) -> Reply:
    """One tool call (optionally after some text). For several calls use `calls`."""
    return calls(ToolCall(name=name, arguments=_arguments_json(arguments or {})), text=text, **options)


def calls(*tool_calls: ToolCall, text: str = "", **options: Any) -> Reply:
    """Several tool calls in one answer (optionally after some text)."""
    return Reply(text=text, tool_calls=tuple(tool_calls), **options)


def fail(status: int, *, retry_after: float | None = None, message: str | None = None, **options: Any) -> Reply:
    """An HTTP error answer, e.g. `fail(429, retry_after=1)` or `fail(500)`."""
    return Reply(status=status, retry_after=retry_after, error_message=message, **options)


def echo(**options: Any) -> Reply:
    """Answer the last user message's text back, one token per word."""
    return Reply(echo=True, **options)


def split_tokens(text: str, count: int | None) -> list[str]:
    """`text` in `count` pieces of about equal length, or one piece per word (with its leading space) when None."""
    if not text:
        return []
    if count is None:
        return _WORD.findall(text)
    count = max(1, min(count, len(text)))
    size, extra = divmod(len(text), count)
    pieces, start = [], 0
    for i in range(count):
        end = start + size + (1 if i < extra else 0)
        pieces.append(text[start:end])
        start = end
    return pieces


def split_arguments(arguments: str) -> list[str]:
    """Tool-call arguments in the small pieces a real model streams them in."""
    if not arguments:
        return [""]
    return [arguments[i : i + _ARGUMENT_PIECE] for i in range(0, len(arguments), _ARGUMENT_PIECE)]


def _arguments_json(arguments: dict[str, Any] | str) -> str:
    if isinstance(arguments, str):
        return arguments
    return orjson.dumps(arguments).decode()


def _content_text(content: Any) -> str:
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        return "".join(str(part.get("text", "")) for part in content if isinstance(part, dict) and "text" in part)
    return ""
