from __future__ import annotations

import json

import orjson
import pytest

from chinwag.errors import BadRequest
from chinwag.websocket.events import (
    AssistantEnd,
    ContextSize,
    InterruptFrame,
    MessageFrame,
    PingFrame,
    ResumeFrame,
    Usage,
    check_content,
    encode,
    parse_client_frame,
    run_frame,
    text_delta_frame,
    validate_server_frame,
    wire_schema,
)


def test_parses_each_client_frame() -> None:
    msg = parse_client_frame('{"type": "message", "content": "hi", "client_id": "c1", "file_ids": ["f"]}')
    assert msg == MessageFrame(type="message", content="hi", client_id="c1", file_ids=["f"])
    assert parse_client_frame('{"type": "message", "content": "hi"}') == MessageFrame(type="message", content="hi")
    assert parse_client_frame('{"type": "interrupt"}') == InterruptFrame(type="interrupt")
    assert parse_client_frame('{"type": "resume", "run_id": "r", "after_seq": 3}') == ResumeFrame(
        type="resume", run_id="r", after_seq=3
    )
    assert parse_client_frame('{"type": "ping"}') == PingFrame(type="ping")


@pytest.mark.parametrize(
    "text",
    [
        "not json",
        "[1, 2]",
        '"message"',
        "{}",
        '{"type": 5}',
        '{"type": "nope"}',
        '{"type": "message"}',
        '{"type": "message", "content": 5}',
        '{"type": "message", "content": "x", "extra": 1}',
        '{"type": "message", "content": "x", "client_id": ""}',
        '{"type": "message", "content": "x", "client_id": "' + "c" * 201 + '"}',
        '{"type": "message", "content": "x", "file_ids": "f"}',
        '{"type": "message", "content": "x", "file_ids": [1]}',
        '{"type": "resume", "run_id": "r"}',
        '{"type": "resume", "run_id": "r", "after_seq": "3"}',
        '{"type": "resume", "run_id": "r", "after_seq": -1}',
        '{"type": "resume", "run_id": "r", "after_seq": 1.5}',
        '{"type": "ping", "x": 1}',
    ],
)
def test_rejects_bad_frames(text: str) -> None:
    with pytest.raises(BadRequest):
        parse_client_frame(text)


@pytest.mark.parametrize("content", ["", "   \n\t", "a\x00b", "x" * 11, "bad \ud800 surrogate"])
def test_rejects_bad_content(content: str) -> None:
    with pytest.raises(BadRequest):
        check_content(content, max_chars=10)


def test_accepts_ordinary_content() -> None:
    check_content("héllo 👋", max_chars=10)
    check_content("x" * 10, max_chars=10)


def test_text_delta_frame_is_valid_and_escaped() -> None:
    frame = text_delta_frame("run-1", 7, 'quote " newline \n emoji 👋')
    assert json.loads(frame) == {
        "type": "text_delta",
        "run_id": "run-1",
        "seq": 7,
        "delta": 'quote " newline \n emoji 👋',
    }
    assert validate_server_frame(frame).delta == 'quote " newline \n emoji 👋'


def test_run_frames_validate_against_the_schema() -> None:
    event = AssistantEnd(message_id="m", finish_reason="stop", usage=Usage(input_tokens=3), context=ContextSize())
    frame = run_frame("r", 9, event)
    parsed = orjson.loads(frame)
    assert list(parsed)[:3] == ["type", "run_id", "seq"]
    assert parsed["seq"] == 9
    assert validate_server_frame(frame).finish_reason == "stop"


def test_encode_keeps_null_fields() -> None:
    from chinwag.websocket.events import ErrorEvent

    assert orjson.loads(encode(ErrorEvent(code="busy", message="m"))) == {
        "type": "error",
        "code": "busy",
        "message": "m",
        "retryable": False,
        "run_id": None,
        "seq": None,
    }


def test_schema_names_every_frame() -> None:
    schema = json.dumps(wire_schema())
    for name in ("message", "interrupt", "resume", "ping", "ready", "pong", "user_message", "assistant_start"):
        assert f'"{name}"' in schema
    for name in ("text_delta", "tool_start", "tool_done", "assistant_end", "session_updated", "error"):
        assert f'"{name}"' in schema
