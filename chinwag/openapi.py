"""What the OpenAPI document says beyond the routes themselves: readable operation ids and the tags' texts."""

from __future__ import annotations

from fastapi.routing import APIRoute

OPENAPI_TAGS = [
    {"name": "auth", "description": "Sign-up, sign-in, tokens (access + rotating refresh), API keys, your account."},
    {"name": "admin", "description": "Accounts, for administrators: list, create, change role, disable, delete."},
    {"name": "sessions", "description": "Chats: create, list (pinned first), rename, pin, model, delete; context."},
    {"name": "messages", "description": "A session's history, paged by `seq`."},
    {"name": "files", "description": "Files attached to a session: upload, list, download, delete."},
    {"name": "search", "description": "Full-text search over your own messages."},
    {"name": "config", "description": "What a client needs to know before signing in (no auth)."},
    {"name": "schema", "description": "Machine-readable description of the chat WebSocket (JSON Schema)."},
    {"name": "health", "description": "Liveness and readiness, for load balancers (no auth, no prefix)."},
]


def operation_id(route: APIRoute) -> str:
    """The route function's name (`list_sessions`, `create_api_key`): what client generators turn into method
    names. Two routes with one name would make FastAPI warn, and the test suite fail on it."""
    return route.name
