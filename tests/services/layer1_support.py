"""Helpers shared by the Layer 1 tests: a predictable token counter and a user with a session in the database."""

from __future__ import annotations

import uuid
from typing import Any

import asyncpg


class WordCounter:
    """Counts words: predictable enough to size tiny windows by hand. Each item costs its words plus 2."""

    def count_text(self, text: str) -> int:
        return len(text.split())

    def count_item(self, item: Any) -> int:
        return 2 + sum(self.count_text(s) for s in _strings(item))

    def count_items(self, items: list[Any]) -> int:
        return sum(self.count_item(i) for i in items)


def _strings(value: Any) -> list[str]:
    if isinstance(value, str):
        return [value]
    if isinstance(value, dict):
        # Keys and type tags are formatting, not content.
        return [s for k, v in value.items() if k not in ("type", "role", "id", "status") for s in _strings(v)]
    if isinstance(value, list):
        return [s for v in value for s in _strings(v)]
    return []


async def make_session(db: asyncpg.Connection, *, model: str = "test-model") -> tuple[str, str]:
    """A user and one session of theirs; returns `(user_id, session_id)`."""
    user_id = await db.fetchval(
        "INSERT INTO users (email, password_hash, display_name) VALUES ($1, 'x', 'Test') RETURNING id",
        f"{uuid.uuid4().hex[:10]}@example.com",
    )
    session_id = await db.fetchval("INSERT INTO sessions (user_id, model) VALUES ($1, $2) RETURNING id", user_id, model)
    return str(user_id), str(session_id)


def user(text: str) -> dict[str, Any]:
    """A user message in the typed shape the model is sent (Layer 1 adds `"type": "message"` when it reads)."""
    return {"type": "message", "role": "user", "content": text}


def new_input(text: str) -> dict[str, Any]:
    """The run's new user message as the SDK itself appends it after the history (the bare `{role, content}`)."""
    return {"role": "user", "content": text}


def assistant(text: str) -> dict[str, Any]:
    """An assistant message as the SDK stores it (output messages carry the provider's id)."""
    return {
        "id": "msg_1",
        "type": "message",
        "role": "assistant",
        "status": "completed",
        "content": [{"type": "output_text", "text": text, "annotations": []}],
    }


def call(call_id: str, name: str = "lookup", arguments: str = "{}") -> dict[str, Any]:
    return {"type": "function_call", "call_id": call_id, "name": name, "arguments": arguments}


def output(call_id: str, text: str) -> dict[str, Any]:
    return {"type": "function_call_output", "call_id": call_id, "output": text}


def words(n: int, word: str = "word") -> str:
    return " ".join([word] * n)
