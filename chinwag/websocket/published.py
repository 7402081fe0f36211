"""The chat socket's published description: one JSON Schema (2020-12) of every frame in both directions, and an
AsyncAPI 3 document built on it. Both are made from the same pydantic models that parse and encode the frames
(`chinwag.websocket.events`), so they cannot drift from what the server does.

The schema is one self-contained document: every definition under `$defs`, `#/$defs/ClientFrame` (what a client
sends) and `#/$defs/ServerFrame` (what the server sends) each a `oneOf` on `type`; the document itself accepts
either. The message of `user_message` and the session of `session_updated` are the REST API's `Message` and
`Session`, typed here even where the wire model keeps them as plain objects.
"""

from __future__ import annotations

import copy
import functools
from typing import Any

from pydantic import TypeAdapter

from chinwag import __version__
from chinwag.schemas.messages import Message
from chinwag.schemas.sessions import Session
from chinwag.websocket.events import wire_schema

SCHEMA_PATH = "/api/v1/schema/websocket"
SOCKET_PATH = "/ws/chat/{session_id}"
# A frame's nested REST shape, by (frame definition, property).
_NESTED = {("UserMessageEvent", "message"): "Message", ("SessionUpdated", "session"): "Session"}


def _rename_refs(node: Any, old: str, new: str) -> Any:
    if isinstance(node, dict):
        return {k: (new if k == "$ref" and v == old else _rename_refs(v, old, new)) for k, v in node.items()}
    if isinstance(node, list):
        return [_rename_refs(v, old, new) for v in node]
    return node


def _lift(schema: dict[str, Any], defs: dict[str, Any], *, into: str) -> None:
    """Move `schema`'s `$defs` into `defs` and the rest into `defs[into]`, refs still `#/$defs/...`. A definition
    whose name is taken by a different one is kept under `{into}{name}` (the wire's and the REST API's
    `ContextSize` differ: one has defaults, the other requires both fields)."""
    body = copy.deepcopy(schema)
    own = body.pop("$defs", {})
    for name in list(own):
        if name in defs and defs[name] != own[name]:
            new = f"{into}{name}"
            own = _rename_refs(own, f"#/$defs/{name}", f"#/$defs/{new}")
            own[new] = own.pop(name)
            body = _rename_refs(body, f"#/$defs/{name}", f"#/$defs/{new}")
    for name, definition in own.items():
        defs.setdefault(name, definition)
    defs[into] = body


@functools.cache
def websocket_schema() -> dict[str, Any]:
    """The JSON Schema 2020-12 document of every socket frame (computed once: it is the code's, not the data's)."""
    wire = wire_schema()
    defs: dict[str, Any] = {}
    _lift(wire["client_to_server"], defs, into="ClientFrame")
    _lift(wire["server_to_client"], defs, into="ServerFrame")
    for model, name in ((Message, "Message"), (Session, "Session")):
        _lift(TypeAdapter(model).json_schema(mode="serialization", ref_template="#/$defs/{model}"), defs, into=name)
    for (frame, prop), name in _NESTED.items():
        properties = defs.get(frame, {}).get("properties", {})
        current = properties.get(prop)
        if isinstance(current, dict) and "$ref" not in current and current.get("type") == "object":
            properties[prop] = {"$ref": f"#/$defs/{name}", "description": current.get("description", "")}
    return {
        "$schema": "https://json-schema.org/draft/2020-12/schema",
        "$id": SCHEMA_PATH,
        "title": "chinwag chat WebSocket frames",
        "description": (
            f"Every JSON text frame of {SOCKET_PATH}. A client sends a ClientFrame, the server sends ServerFrames; "
            "both are objects told apart by `type`."
        ),
        "$defs": defs,
        "anyOf": [{"$ref": "#/$defs/ClientFrame"}, {"$ref": "#/$defs/ServerFrame"}],
    }


def _frame_names(kind: str) -> list[str]:
    """The definitions a `oneOf` of `ClientFrame`/`ServerFrame` lists."""
    union = websocket_schema()["$defs"][kind]
    return [option["$ref"].rsplit("/", 1)[-1] for option in union["oneOf"]]


def _to_components(node: Any) -> Any:
    """A schema as AsyncAPI's Schema Object has it: `#/$defs/X` refs made `#/components/schemas/X`, and a
    `discriminator` only the property's name (OpenAPI's object form, with its mapping, is not AsyncAPI's)."""
    if isinstance(node, dict):
        out: dict[str, Any] = {}
        for k, v in node.items():
            if k == "$ref" and isinstance(v, str):
                out[k] = v.replace("#/$defs/", "#/components/schemas/")
            elif k == "discriminator" and isinstance(v, dict):
                out[k] = v.get("propertyName", "type")
            else:
                out[k] = _to_components(v)
        return out
    if isinstance(node, list):
        return [_to_components(v) for v in node]
    return node


def _type_of(definition: dict[str, Any]) -> str | None:
    const = definition.get("properties", {}).get("type", {}).get("const")
    return const if isinstance(const, str) else None


@functools.cache
def asyncapi_document() -> dict[str, Any]:
    """An AsyncAPI 3.0 document of the chat socket: one channel, a message per frame type, two operations."""
    schema = websocket_schema()
    components = {name: _to_components(d) for name, d in schema["$defs"].items()}
    messages: dict[str, Any] = {}
    sent: list[str] = []
    received: list[str] = []
    for kind, bucket in (("ClientFrame", sent), ("ServerFrame", received)):
        for name in _frame_names(kind):
            definition = schema["$defs"][name]
            frame_type = _type_of(definition) or name
            messages[name] = {
                "name": frame_type,
                "title": frame_type,
                "summary": (definition.get("description") or frame_type).split("\n", 1)[0],
                "contentType": "application/json",
                "payload": {"$ref": f"#/components/schemas/{name}"},
            }
            bucket.append(name)
    return {
        "asyncapi": "3.0.0",
        "info": {
            "title": "chinwag chat WebSocket",
            "version": __version__,
            "description": (
                "Streaming chat over one WebSocket per session. Authenticate with `?token=` (an access token or an "
                "API key); the first frame is `ready`. The JSON Schema of every frame is served at "
                f"{SCHEMA_PATH}."
            ),
        },
        "defaultContentType": "application/json",
        "channels": {
            "chat": {
                "address": SOCKET_PATH,
                "title": "A session's chat socket",
                "parameters": {"session_id": {"description": "The session's id (from POST /api/v1/sessions)."}},
                "bindings": {
                    "ws": {
                        "query": {
                            "type": "object",
                            "properties": {"token": {"type": "string", "description": "Access token or API key."}},
                            "required": ["token"],
                        }
                    }
                },
                "messages": {name: {"$ref": f"#/components/messages/{name}"} for name in messages},
            }
        },
        "operations": {
            "sendFrame": {
                "action": "receive",
                "title": "What a client sends",
                "summary": "The server receives these frames from a client.",
                "channel": {"$ref": "#/channels/chat"},
                "messages": [{"$ref": f"#/channels/chat/messages/{name}"} for name in sent],
            },
            "receiveFrame": {
                "action": "send",
                "title": "What the server sends",
                "summary": "The server sends these frames to every socket of the session.",
                "channel": {"$ref": "#/channels/chat"},
                "messages": [{"$ref": f"#/channels/chat/messages/{name}"} for name in received],
            },
        },
        "components": {"schemas": components, "messages": messages},
    }
