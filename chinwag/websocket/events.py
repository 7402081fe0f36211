"""Wire events of `/ws/chat/{session_id}`, defined once.

Inbound frames are validated with `parse_client_frame`; outbound events are pydantic models whose JSON Schema is
published by `wire_schema()` (and `python -m chinwag.websocket.events`). The per-token path does not build models:
`text_delta_frame` splices the delta into a prebuilt template with orjson, so a delta frame's cost and size depend
on the delta alone, never on the answer so far.
"""

from __future__ import annotations

import json
import sys
from typing import Annotated, Any, Literal

import orjson
from pydantic import BaseModel, ConfigDict, Field, StrictInt, StrictStr, TypeAdapter, ValidationError

from chinwag.errors import BadRequest

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


Seq = Annotated[StrictInt, Field(ge=1, le=2_147_483_647)]


class RegenerateFrame(_Inbound):
    """Answer user message `seq` (on the active branch; default: its last user message) again: the new answer hangs
    beside the earlier ones and becomes the active branch."""

    type: Literal["regenerate"]
    seq: Seq | None = None
    client_id: Annotated[StrictStr, Field(min_length=1, max_length=MAX_CLIENT_ID_CHARS)] | None = None


class EditFrame(_Inbound):
    """A new version of user message `seq` (on the active branch): it hangs beside it, becomes the active branch,
    and a run answers it."""

    type: Literal["edit"]
    seq: Seq
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


AnyClientFrame = MessageFrame | RegenerateFrame | EditFrame | InterruptFrame | ResumeFrame | PingFrame
ClientFrame = Annotated[AnyClientFrame, Field(discriminator="type")]
_client_frames: TypeAdapter[AnyClientFrame] = TypeAdapter(ClientFrame)


def parse_client_frame(text: str) -> AnyClientFrame:
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


class _RunEvent(_Outbound):
    run_id: str
    seq: int


class UserMessageEvent(_RunEvent):
    """The persisted user `Message` (REST shape)."""

    type: Literal["user_message"] = "user_message"
    message: dict[str, Any]


class AssistantStart(_RunEvent):
    type: Literal["assistant_start"] = "assistant_start"
    message_id: str


class TextDelta(_RunEvent):
    """Text appended to the assistant message; never repeats text already sent."""

    type: Literal["text_delta"] = "text_delta"
    delta: str


class ToolStart(_RunEvent):
    type: Literal["tool_start"] = "tool_start"
    call_id: str
    name: str
    arguments: str
    server: str | None


class ToolDone(_RunEvent):
    type: Literal["tool_done"] = "tool_done"
    call_id: str
    name: str
    output: str
    ok: bool


class AssistantEnd(_RunEvent):
    type: Literal["assistant_end"] = "assistant_end"
    message_id: str
    finish_reason: FinishReason
    usage: Usage
    context: ContextSize


class SessionUpdated(_Outbound):
    """The session changed (a new title, say)."""

    type: Literal["session_updated"] = "session_updated"
    session: dict[str, Any]


class ErrorEvent(_Outbound):
    type: Literal["error"] = "error"
    code: ErrorCode
    message: str
    retryable: bool = False
    run_id: str | None = None
    seq: int | None = Field(default=None, description="set when the error is an event of a run")


ServerEvent = Annotated[
    Ready
    | Pong
    | UserMessageEvent
    | AssistantStart
    | TextDelta
    | ToolStart
    | ToolDone
    | AssistantEnd
    | SessionUpdated
    | ErrorEvent,
    Field(discriminator="type"),
]
_server_events: TypeAdapter[Any] = TypeAdapter(ServerEvent)

# Run events that the service builds as pydantic models (not text_delta): the run's id and seq are added at send.
RunEventBody = dict[str, Any]


def encode(event: BaseModel) -> str:
    """A server event as a text frame; `None` fields stay (clients rely on every field being present)."""
    return orjson.dumps(event.model_dump(mode="json")).decode()


def run_frame(run_id: str, seq: int, body: RunEventBody) -> str:
    """A run event's frame: the body (its `type` first) with `run_id` and `seq`, built once with orjson."""
    return orjson.dumps({"type": body["type"], "run_id": run_id, "seq": seq, **body}).decode()


def text_delta_frame(run_id: str, seq: int, delta: str) -> str:
    """The hot path: a `text_delta` frame spliced from a template, no model built, size independent of history."""
    return f'{{"type":"text_delta","run_id":"{run_id}","seq":{seq},"delta":{orjson.dumps(delta).decode()}}}'


def error_frame(code: ErrorCode, message: str, *, retryable: bool = False, run_id: str | None = None) -> str:
    """An error for one socket (outside a run's numbered events)."""
    body = {"type": "error", "code": code, "message": message, "retryable": retryable, "run_id": run_id}
    return orjson.dumps(body).decode()


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
