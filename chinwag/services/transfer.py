"""Export a session (JSON of every branch, or Markdown of the active one) and import one (chinwag's JSON or the
OpenAI chat shape).

Exports stream: the messages are read in keyset batches of `EXPORT_BATCH` and written out batch by batch, so a
session of 100,000 messages is never held in memory at once (nor a connection held between batches). An import is
checked whole before anything is written, then written in one transaction: the session, its messages (new ids,
the same seqs and tree) and its Layer 1 items, so the model sees the imported conversation from the first run on.
"""

from __future__ import annotations

import re
import uuid
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import asyncpg
import orjson

from chinwag.config import Settings
from chinwag.db import context as context_db
from chinwag.db import sessions as sessions_db
from chinwag.db import transfer as transfer_db
from chinwag.errors import NotFound
from chinwag.schemas.sessions import INSTRUCTIONS_MAX_CHARS, Session
from chinwag.schemas.transfer import EXPORT_FORMAT, ChatImport, ChinwagExport
from chinwag.services.context_items import Item, assistant_message
from chinwag.services.message_utils import parse_id
from chinwag.services.postgres_session import ItemCounter
from chinwag.services.token_aware_session import session_context

EXPORT_BATCH = 500
_FILENAME_UNSAFE = re.compile(r"[^A-Za-z0-9._ -]+")


class ImportInvalid(ValueError):
    """An import that parsed but does not hold together; `loc` names the place (as a 422's `loc` does)."""

    def __init__(self, loc: tuple[str | int, ...], message: str) -> None:
        super().__init__(message)
        self.loc = loc
        self.message = message


@dataclass(frozen=True, slots=True)
class Export:
    """A session found, and its export as chunks to stream."""

    session: Session
    chunks: AsyncIterator[bytes]


async def _owned(pool: asyncpg.Pool, *, user_id: str, session_id: str, window: Callable[[str], int]) -> Session:
    session = await sessions_db.get_session(
        pool, user_id=parse_id(user_id, what="user"), session_id=parse_id(session_id), window=window
    )
    if session is None:
        raise NotFound("session not found")
    return session


async def export_json(pool: asyncpg.Pool, *, user_id: str, session_id: str, window: Callable[[str], int]) -> Export:
    """`{format, exported_at, session, messages, files}`: every message of every branch, in seq order."""
    session = await _owned(pool, user_id=user_id, session_id=session_id, window=window)
    return Export(session=session, chunks=_json_chunks(pool, session))


async def _json_chunks(pool: asyncpg.Pool, session: Session) -> AsyncIterator[bytes]:
    sid = uuid.UUID(session.id)
    head = {"format": EXPORT_FORMAT, "exported_at": datetime.now(UTC), "session": session.model_dump(mode="json")}
    yield orjson.dumps(head, option=orjson.OPT_UTC_Z)[:-1] + b',"messages":['
    after, first = 0, True
    while True:
        batch = await transfer_db.message_batch(
            pool, session_id=sid, after_seq=after, limit=EXPORT_BATCH, active_branch=False
        )
        if not batch:
            break
        body = b",".join(orjson.dumps(m, option=orjson.OPT_UTC_Z) for m in batch)
        yield body if first else b"," + body
        first, after = False, batch[-1]["seq"]
    files = await transfer_db.file_metadata(pool, session_id=sid)
    yield b'],"files":' + orjson.dumps(files) + b"}"


async def export_markdown(pool: asyncpg.Pool, *, user_id: str, session_id: str, window: Callable[[str], int]) -> Export:
    """The active branch as Markdown: one section per message, tool calls as fenced blocks."""
    session = await _owned(pool, user_id=user_id, session_id=session_id, window=window)
    return Export(session=session, chunks=_markdown_chunks(pool, session))


async def _markdown_chunks(pool: asyncpg.Pool, session: Session) -> AsyncIterator[bytes]:
    sid = uuid.UUID(session.id)
    yield f"# {_one_line(session.title) or 'Chat'}\n\n".encode()
    after = 0
    while True:
        batch = await transfer_db.message_batch(
            pool, session_id=sid, after_seq=after, limit=EXPORT_BATCH, active_branch=True
        )
        if not batch:
            break
        yield "".join(_markdown_message(m) for m in batch).encode()
        after = batch[-1]["seq"]


def _one_line(text: str) -> str:
    return " ".join(text.split())


def _fenced(text: str, info: str = "") -> str:
    """`text` in a code fence longer than any run of backticks inside it, so nothing in it can close the fence."""
    longest = max((len(run) for run in re.findall(r"`+", text)), default=0)
    fence = "`" * max(3, longest + 1)
    return f"{fence}{info}\n{text}\n{fence}\n\n"


def _markdown_message(message: dict[str, Any]) -> str:
    role = message["role"]
    if role == "tool":
        tool = message.get("tool") or {}
        name = _one_line(str(tool.get("name", "")))
        parts = [f"**Tool call:** `{name.replace('`', '')}`\n\n", _fenced(str(tool.get("arguments", "")), "json")]
        if tool.get("output") is not None:
            outcome = "Output" if tool.get("ok") is not False else "Output (failed)"
            parts += [f"{outcome}:\n\n", _fenced(str(tool["output"]))]
        return "".join(parts)
    heading = "User" if role == "user" else "Assistant"
    note = "" if message["status"] == "complete" else f" ({message['status']})"
    return f"## {heading}{note}\n\n{message['content']}\n\n"


def markdown_filename(title: str) -> tuple[str, str]:
    """The attachment's name: an ASCII fallback (`filename=`) and the title itself (`filename*=`), both `.md`."""
    name = _one_line(title)[:100] or "Chat"
    fallback = _FILENAME_UNSAFE.sub("_", name).strip(" ._") or "Chat"
    return f"{fallback}.md", f"{name}.md"


# --- import -------------------------------------------------------------------------------------------------------


async def import_session(
    pool: asyncpg.Pool,
    settings: Settings,
    *,
    user_id: str,
    data: ChinwagExport | ChatImport,
    counter: ItemCounter,
    window: Callable[[str], int],
) -> Session:
    """A new session of `user_id` holding the imported conversation; `ImportInvalid` naming the place when it does
    not hold together (nothing is written then)."""
    if isinstance(data, ChinwagExport):
        title, model, instructions, messages, leaf = _from_export(data)
        if model is None or model not in settings.model_ids:
            model = settings.resolved_default_model
    else:
        title, instructions, messages, leaf = _from_chat(data)
        model = settings.resolved_default_model
    items = _layer1_rows(messages, counter)
    uid = parse_id(user_id, what="user")
    async with pool.acquire() as conn, conn.transaction():
        created = await sessions_db.insert_session(
            conn, user_id=uid, title=title, model=model, instructions=instructions, mcp_servers=None, window=window
        )
        sid = uuid.UUID(created.id)
        await transfer_db.insert_messages(conn, session_id=sid, messages=messages, leaf_seq=leaf)
        await context_db.insert_items(conn, session_id=created.id, rows=items)
    view = await session_context(
        pool, user_id=str(uid), session_id=created.id, context_window=window, counter_for=lambda _m: counter
    )
    await context_db.set_context_tokens(pool, session_id=created.id, tokens=view.tokens)
    session = await sessions_db.get_session(pool, user_id=uid, session_id=sid, window=window)
    assert session is not None
    return session


def _from_export(
    data: ChinwagExport,
) -> tuple[str, str | None, str, list[transfer_db.NewMessage], int | None]:
    parents: dict[int, int | None] = {}
    for index, m in enumerate(data.messages):
        if m.seq != index + 1:
            raise ImportInvalid(
                ("body", "messages", index, "seq"), f"must be {index + 1}: seqs are 1, 2, 3, ... in order"
            )
        if m.parent_seq is not None and m.parent_seq >= m.seq:
            raise ImportInvalid(("body", "messages", index, "parent_seq"), "must be an earlier message's seq")
        if m.role == "tool" and m.tool is None:
            raise ImportInvalid(("body", "messages", index, "tool"), "a tool message needs its tool call")
        parents[m.seq] = m.parent_seq
    count = len(data.messages)
    leaf = data.session.leaf_seq
    if leaf is not None and leaf > count:
        raise ImportInvalid(("body", "session", "leaf_seq"), "must be the seq of one of the messages")
    if leaf is None and count:
        leaf = count  # the newest message, which is a leaf
    branch = _path(parents, leaf)
    messages = [
        transfer_db.NewMessage(
            seq=m.seq,
            parent_seq=m.parent_seq,
            role=m.role,
            content=m.content,
            status="interrupted" if m.status == "streaming" else m.status,
            tool=None if m.tool is None else m.tool.model_dump(),
            usage=None if m.usage is None else m.usage.model_dump(),
            finish_reason=m.finish_reason if m.role == "assistant" else None,
            created_at=m.created_at,
            on_branch=m.seq in branch,
            reasoning=m.reasoning if m.role == "assistant" else None,
        )
        for m in data.messages
    ]
    return data.session.title, data.session.model, data.session.instructions, messages, leaf


def _from_chat(data: ChatImport) -> tuple[str, str, list[transfer_db.NewMessage], int | None]:
    system = [m.content for m in data.messages if m.role == "system"]
    instructions = "\n\n".join(system)
    if len(instructions) > INSTRUCTIONS_MAX_CHARS:
        first = next(i for i, m in enumerate(data.messages) if m.role == "system")
        raise ImportInvalid(
            ("body", "messages", first, "content"),
            f"the system messages together become the instructions: at most {INSTRUCTIONS_MAX_CHARS} characters",
        )
    messages: list[transfer_db.NewMessage] = []
    for m in data.messages:
        if m.role == "system":
            continue
        seq = len(messages) + 1
        messages.append(
            transfer_db.NewMessage(
                seq=seq,
                parent_seq=seq - 1 or None,
                role=m.role,
                content=m.content,
                status="complete",
                tool=None,
                usage=None,
                finish_reason="stop" if m.role == "assistant" else None,
                created_at=None,
                on_branch=True,
            )
        )
    return data.title, instructions, messages, len(messages) or None


def _path(parents: dict[int, int | None], leaf: int | None) -> set[int]:
    """The seqs from the root to `leaf`."""
    path: set[int] = set()
    node = leaf
    while node is not None:
        path.add(node)
        node = parents[node]
    return path


def _layer1_rows(messages: list[transfer_db.NewMessage], counter: ItemCounter) -> list[context_db.Row]:
    """Layer 1 items of every branch, as runs would have stored them: a user message opens its turn; a run's tool
    calls (with their outputs) and its answer belong to its assistant message. Ancestors come before descendants
    (seq order), as in a live session."""
    by_seq = {m.seq: m for m in messages}
    children: dict[int, list[int]] = {}
    for m in messages:
        if m.parent_seq is not None:
            children.setdefault(m.parent_seq, []).append(m.seq)
    turn_of: dict[int, int | None] = {}
    rows: list[context_db.Row] = []

    def add(item: Item, turn: int | None, anchor: int) -> None:
        rows.append((item, counter.count_item(item), turn, anchor))

    for m in messages:
        parent_turn = turn_of.get(m.parent_seq) if m.parent_seq is not None else None
        turn = m.seq if m.role == "user" else parent_turn
        turn_of[m.seq] = turn
        if m.role == "user":
            add({"role": "user", "content": m.content}, m.seq, m.seq)
        elif m.role == "assistant":
            # The run's tool calls hang below its answer in Layer 2 but came before its text.
            node = m.seq
            while True:
                tools = [c for c in children.get(node, []) if by_seq[c].role == "tool"]
                if not tools:
                    break
                node = tools[0]
                tool = by_seq[node].tool or {}
                call_id = str(tool.get("call_id", "")) or f"import-{node}"
                call = {
                    "type": "function_call",
                    "call_id": call_id,
                    "name": tool.get("name", ""),
                    "arguments": tool.get("arguments", ""),
                }
                add(call, turn, m.seq)
                output = {"type": "function_call_output", "call_id": call_id, "output": str(tool.get("output") or "")}
                add(output, turn, m.seq)
            if m.content:
                add(assistant_message(m.content), turn, m.seq)
    return rows
