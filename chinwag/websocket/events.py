"""Wire events of `/ws/chat/{session_id}`, defined once.

Inbound frames are validated with `parse_client_frame`. Every outbound event is one pydantic model here, used both
to send it and to publish the JSON Schema (`wire_schema()`, `python -m chinwag.websocket.events`); a run's events are
built without `run_id` and `seq`, which `RunChannel` adds as it numbers them. The per-token path does not build models:
`text_delta_frame` splices the delta into a prebuilt template with orjson, so a delta frame's cost and size depend
on the delta alone, never on the answer so far.
"""

from __future__ import annotations

import functools
import json
import operator
import sys
from typing import Annotated, Any, Literal

import orjson
from pydantic import BaseModel, ConfigDict, Field, StrictInt, StrictStr, TypeAdapter, ValidationError, create_model

from chinwag.errors import BadRequest
from chinwag.schemas.messages import Message
from chinwag.schemas.sessions import Session

MAX_CLIENT_ID_CHARS = 200
MAX_FILE_IDS = 100
MAX_ID_CHARS = 100

FinishReason = Literal["stop", "length", "interrupted", "error", "max_turns"]
ErrorCode = Literal[
    "bad_request", "busy", "not_found", "rate_limited", "llm_error", "resume_unavailable", "unavailable", "internal"
]


# --- client -> server ---------------------------------------------------------------------------------------------


class _Inbound(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class MessageFrame(_Inbound):
    """Start a run with this user message. The same `client_id` again in the session starts nothing new."""

    type: Literal["message"]
    content: StrictStr
    client_id: Annotated[StrictStr, Field(min_length=1, max_length=MAX_CLIENT_ID_CHARS)] | None = None
    file_ids: Annotated[
        list[Annotated[StrictStr, Field(min_length=1, max_length=MAX_ID_CHARS)]], Field(max_length=MAX_FILE_IDS)
    ] = Field(default_factory=list)


class InterruptFrame(_Inbound):
    """Stop the session's active run."""

    type: Literal["interrupt"]


class ResumeFrame(_Inbound):
    """Replay the run's events after `after_seq`, then continue live."""

    type: Literal["resume"]
    run_id: Annotated[StrictStr, Field(min_length=1, max_length=MAX_ID_CHARS)]
    after_seq: Annotated[StrictInt, Field(ge=0)]


class PingFrame(_Inbound):
    """Answered by `pong`."""

    type: Literal["ping"]


ClientFrame = Annotated[MessageFrame | InterruptFrame | ResumeFrame | PingFrame, Field(discriminator="type")]
_client_frames: TypeAdapter[MessageFrame | InterruptFrame | ResumeFrame | PingFrame] = TypeAdapter(ClientFrame)


def parse_client_frame(text: str) -> MessageFrame | InterruptFrame | ResumeFrame | PingFrame:
    """One inbound text frame, or `BadRequest` saying what is wrong with it."""
    try:
        data = orjson.loads(text)
    except orjson.JSONDecodeError:
        raise BadRequest("frame is not valid JSON") from None
    if not isinstance(data, dict):
        raise BadRequest("frame must be a JSON object")
    if not isinstance(data.get("type"), str):
        raise BadRequest("frame needs a string field 'type'")
    try:
        return _client_frames.validate_python(data)
    except ValidationError as exc:
        err = exc.errors()[0]
        where = ".".join(str(p) for p in err["loc"])
        raise BadRequest(f"{where}: {err['msg']}" if where else err["msg"]) from None


def check_content(content: str, *, max_chars: int) -> None:
    """The rules on a message's text: not blank, no NUL, no unpaired surrogate, at most `max_chars`."""
    if not content.strip():
        raise BadRequest("content is empty")
    if len(content) > max_chars:
        raise BadRequest(f"content is longer than {max_chars} characters")
    if "\x00" in content:
        raise BadRequest("content contains a NUL character")
    try:
        content.encode("utf-8")
    except UnicodeEncodeError:
        raise BadRequest("content contains an unpaired surrogate") from None


# --- server -> client ---------------------------------------------------------------------------------------------


class _Outbound(BaseModel):
    model_config = ConfigDict(frozen=True)


class ActiveRun(_Outbound):
    run_id: str
    last_seq: int


class Ready(_Outbound):
    """First frame after a successful connect."""

    type: Literal["ready"] = "ready"
    session_id: str
    active_run: ActiveRun | None


class Pong(_Outbound):
    type: Literal["pong"] = "pong"


class Usage(_Outbound):
    input_tokens: int = 0
    output_tokens: int = 0


class ContextSize(_Outbound):
    tokens: int = 0
    limit: int = 0


class RunEvent(_Outbound):
    """The fields of one run event. `run_id` and `seq` are the channel's to add (`RunChannel.emit`): each event is
    built without them, and its published frame shape (`run_frame_model`) has them as required fields."""

    type: str


class UserMessageEvent(RunEvent):
    """The persisted user `Message` (its REST shape)."""

    type: Literal["user_message"] = "user_message"
    message: Message


class AssistantStart(RunEvent):
    type: Literal["assistant_start"] = "assistant_start"
    message_id: str


class TextDelta(RunEvent):
    """Text appended to the assistant message; never repeats text already sent. Sent by `text_delta_frame`, not
    as a model (the hot path)."""

    type: Literal["text_delta"] = "text_delta"
    delta: str


class ReasoningDeltaEvent(RunEvent):
    """Reasoning the model streams before (or between) its text, shown apart from the answer. Sent by
    `text_delta_frame`, not as a model (the hot path)."""

    type: Literal["reasoning_delta"] = "reasoning_delta"
    delta: str


class ToolStart(RunEvent):
    type: Literal["tool_start"] = "tool_start"
    call_id: str
    name: str
    arguments: str = Field(description="the call's arguments as JSON text")
    server: str | None = Field(description="the MCP server of the tool; null for chinwag's own (file) tools")


class ToolDone(RunEvent):
    type: Literal["tool_done"] = "tool_done"
    call_id: str
    name: str
    output: str
    ok: bool = Field(description="false on an error, a timeout or an interrupt")


class AssistantEnd(RunEvent):
    type: Literal["assistant_end"] = "assistant_end"
    message_id: str
    finish_reason: FinishReason
    usage: Usage
    context: ContextSize


class RunError(RunEvent):
    """An error that ends a run (sent before its `assistant_end`)."""

    type: Literal["error"] = "error"
    code: ErrorCode
    message: str
    retryable: bool = False


RUN_EVENTS: tuple[type[RunEvent], ...] = (
    UserMessageEvent,
    AssistantStart,
    TextDelta,
    ReasoningDeltaEvent,
    ToolStart,
    ToolDone,
    AssistantEnd,
)


def run_frame_model(event: type[RunEvent]) -> type[BaseModel]:
    """The frame a run event travels in: its fields, then the run's `run_id` and the event's `seq`."""
    return create_model(
        event.__name__.removesuffix("Event") + "Frame",
        __base__=event,
        __doc__=event.__doc__,
        run_id=(str, ...),
        seq=(int, Field(ge=1, description="1, 2, 3, ... with no gap inside the run")),
    )


class SessionUpdated(_Outbound):
    """The session changed (a new title, say)."""

    type: Literal["session_updated"] = "session_updated"
    session: Session


class ErrorEvent(_Outbound):
    """An error: to one socket (a refused frame; no `run_id` or `seq`), or as an event of a run (both set)."""

    type: Literal["error"] = "error"
    code: ErrorCode
    message: str
    retryable: bool = False
    run_id: str | None = None
    seq: int | None = Field(default=None, description="set when the error is an event of a run")


_run_frames = tuple(run_frame_model(event) for event in RUN_EVENTS)
_server_union: Any = functools.reduce(operator.or_, (Ready, Pong, *_run_frames, SessionUpdated, ErrorEvent))
ServerEvent = Annotated[_server_union, Field(discriminator="type")]
_server_events: TypeAdapter[Any] = TypeAdapter(ServerEvent)


def encode(event: BaseModel) -> str:
    """A server event as a text frame; `None` fields stay (clients rely on every field being present)."""
    return orjson.dumps(event.model_dump(mode="json")).decode()


def run_frame(run_id: str, seq: int, event: RunEvent) -> str:
    """A run event's frame: its `type`, `run_id` and `seq` first, then its fields, encoded once with orjson."""
    return orjson.dumps({"type": event.type, "run_id": run_id, "seq": seq, **event.model_dump(mode="json")}).decode()


def text_delta_frame(run_id: str, seq: int, delta: str, *, kind: str = "text_delta") -> str:
    """The hot path: a `text_delta` (or `reasoning_delta`) frame spliced from a template, no model built, size
    independent of history."""
    return f'{{"type":"{kind}","run_id":"{run_id}","seq":{seq},"delta":{orjson.dumps(delta).decode()}}}'


def error_frame(code: ErrorCode, message: str, *, retryable: bool = False, run_id: str | None = None) -> str:
    """An error for one socket (outside a run's numbered events)."""
    return encode(ErrorEvent(code=code, message=message, retryable=retryable, run_id=run_id))


def validate_server_frame(text: str) -> Any:
    """Parse an outbound frame against the schema (tests and clients use this to check what the server sends)."""
    return _server_events.validate_json(text)


def wire_schema() -> dict[str, Any]:
    """The JSON Schema of both directions: `client_to_server` and `server_to_client`."""
    return {
        "$schema": "https://json-schema.org/draft/2020-12/schema",
        "title": "chinwag WebSocket chat protocol",
        "client_to_server": _client_frames.json_schema(),
        "server_to_client": _server_events.json_schema(mode="serialization"),
    }


def main() -> None:
    json.dump(wire_schema(), sys.stdout, indent=2)
    sys.stdout.write("\n")


if __name__ == "__main__":
    main()
