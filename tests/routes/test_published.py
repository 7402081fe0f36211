"""The published contract: the OpenAPI document (auth, errors, ids, examples), the socket's JSON Schema checked
against the real frames of a run, and the AsyncAPI document."""

from __future__ import annotations

import json
import warnings
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from jsonschema import Draft202012Validator

from tests.conftest import ServerFactory, UserFactory
from tests.fakes.openai_script import call, say
from tests.fakes.openai_server import FakeOpenAI
from tests.mcp.support import fake_stdio
from tests.routes.chat_support import Chat, connect, new_session

ERROR_REF = "#/components/schemas/ErrorBody"


@pytest.fixture
async def fake() -> AsyncIterator[FakeOpenAI]:
    async with FakeOpenAI.start() as server:
        yield server


def operations(doc: dict[str, Any]) -> list[tuple[str, str, dict[str, Any]]]:
    return [(method, path, op) for path, ops in doc["paths"].items() for method, op in ops.items()]


async def test_openapi_declares_auth_errors_ids_tags_and_examples(root_client: httpx.AsyncClient) -> None:
    doc = (await root_client.get("/openapi.json")).json()
    schemes = doc["components"]["securitySchemes"]
    assert [s["scheme"] for s in schemes.values()] == ["bearer"]
    ids = []
    for method, path, op in operations(doc):
        where = f"{method.upper()} {path}"
        ids.append(op["operationId"])
        assert op.get("tags"), where
        assert op.get("summary") or op.get("description"), where
        if op.get("security"):
            assert "401" in op["responses"], where
        for status, answer in op["responses"].items():
            if status.startswith(("4", "5")) and status != "422" and path.startswith("/api/"):
                schema = answer["content"]["application/json"]["schema"]
                assert schema == {"$ref": ERROR_REF}, (where, status)
    # Readable ids (the function's name, no path or method mangled in), each once.
    assert len(ids) == len(set(ids))
    assert not [i for i in ids if "api_v1" in i or i.endswith(("_get", "_post"))]
    assert {"register", "login", "list_sessions", "create_session", "list_messages"} <= set(ids)
    schemas = doc["components"]["schemas"]
    for name in ("RegisterRequest", "LoginRequest", "SessionCreate", "SessionUpdate", "Session", "Tokens", "User"):
        assert schemas[name].get("examples"), name
    assert doc["components"]["schemas"]["ErrorBody"]["required"] == ["detail", "code"]


async def test_the_docs_pages_name_only_local_assets(root_client: httpx.AsyncClient) -> None:
    for page in ("/docs", "/redoc"):
        answer = await root_client.get(page)
        assert answer.status_code == 200
        assert "cdn." not in answer.text
        assert "fonts.googleapis" not in answer.text
        assert "script-src 'self' 'unsafe-inline'" in answer.headers["content-security-policy"]
    for name in ("swagger-ui-bundle.js", "swagger-ui.css", "redoc.standalone.js"):
        asset = await root_client.get(f"/docs/assets/{name}")
        assert asset.status_code == 200
        assert len(asset.content) > 10_000
    missing = await root_client.get("/docs/assets/..%2Fcore.py")
    assert missing.status_code == 404


async def test_real_frames_of_a_run_follow_the_published_schema(
    fake: FakeOpenAI, server_factory: ServerFactory, user_factory: UserFactory, tmp_path: Path
) -> None:
    config = tmp_path / "mcp.json"
    config.write_text(json.dumps({"mcpServers": {"testtools": fake_stdio(pool_size=1, timeout_s=30)}}))
    server = await server_factory(openai_base_url=fake.base_url, mcp_config=config)
    user = await user_factory(server)
    chat = Chat.on(server, user, await new_session(server, user))
    async with httpx.AsyncClient(base_url=server.url, timeout=60) as c:
        answer = await c.get("/api/v1/schema/websocket")
    assert answer.status_code == 200
    assert answer.headers["content-type"].startswith("application/schema+json")
    schema = answer.json()
    Draft202012Validator.check_schema(schema)
    defs = schema["$defs"]
    server_frames = Draft202012Validator({**schema, "$ref": "#/$defs/ServerFrame"})
    client_frames = Draft202012Validator({**schema, "$ref": "#/$defs/ClientFrame"})

    fake.script(call("echo", {"text": "hi"}, text="Echoing."), say("It said hi."))
    sent = [{"type": "ping"}, {"type": "message", "content": "echo hi", "client_id": "c-1"}]
    async with connect(chat) as sock:
        frames = [sock.ready]
        await sock.send(sent[0])
        frames.append(await sock.recv())
        await sock.send(sent[1])
        frames += await sock.until("assistant_end", timeout=30)
        await sock.send({"type": "interrupt"})  # nothing to interrupt: an error frame
        frames.append(await sock.recv())
    kinds = {f["type"] for f in frames}
    assert {"ready", "pong", "user_message", "assistant_start", "text_delta", "tool_start", "tool_done"} <= kinds
    assert {"assistant_end", "error"} <= kinds
    for frame in frames:
        errors = [e.message for e in server_frames.iter_errors(frame)]
        assert not errors, (frame, errors)
    client_sent: list[dict[str, Any]] = [
        *sent,
        {"type": "interrupt"},
        {"type": "resume", "run_id": "r", "after_seq": 0},
    ]
    for sent_frame in client_sent:
        assert client_frames.is_valid(sent_frame), sent_frame
    # The nested message is typed: a user_message with a broken message is not valid.
    user_message = next(f for f in frames if f["type"] == "user_message")
    assert not server_frames.is_valid({**user_message, "message": {"id": 1}})
    assert "Message" in defs
    assert "Session" in defs
    assert not client_frames.is_valid({"type": "message"})  # no content
    assert not server_frames.is_valid({"type": "nope"})


async def test_asyncapi_document_is_valid_asyncapi_3(root_client: httpx.AsyncClient) -> None:
    doc = (await root_client.get("/asyncapi.json")).json()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # the model's own field names shadow pydantic's
        from asyncapi3 import AsyncAPI3

    AsyncAPI3.model_validate(doc)  # the AsyncAPI 3.0 object model: raises on any misplaced or mistyped field
    assert doc["asyncapi"] == "3.0.0"
    assert doc["channels"]["chat"]["address"] == "/ws/chat/{session_id}"

    def resolve(ref: str) -> Any:
        node: Any = doc
        for part in ref.removeprefix("#/").split("/"):
            node = node[part]
        return node

    def refs(node: Any) -> list[str]:
        if isinstance(node, dict):
            return [v for k, v in node.items() if k == "$ref"] + [r for v in node.values() for r in refs(v)]
        if isinstance(node, list):
            return [r for v in node for r in refs(v)]
        return []

    for ref in refs(doc):
        assert ref.startswith("#/"), ref
        resolve(ref)  # every reference resolves inside the document
    names = {m["name"] for m in doc["components"]["messages"].values()}
    assert names == {
        "message", "regenerate", "edit", "interrupt", "resume", "ping", "ready", "pong", "user_message",
        "assistant_start", "text_delta", "reasoning_delta", "tool_start", "tool_done", "assistant_end",
        "session_updated", "error",
    }  # fmt: skip
    actions = {op["action"] for op in doc["operations"].values()}
    assert actions == {"send", "receive"}
