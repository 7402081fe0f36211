"""The runs of a dead process, ended by a live one: every socket of the run, on any host, hears the end.

The sweep (or a restarted process, for its own previous life) has marked them interrupted in PostgreSQL. Here the
run's buffer (shared through Redis) tells what its sockets saw: the full text streamed (the database holds the last
checkpoint, up to a second older), and the tools started but never done. The answer gets that text, each open tool
a `tool_done` (`ok: false`) and a tool message, and the run an `assistant_end` (`interrupted`), numbered after the
last event of the buffer and published on the bus like any run event.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import uuid
from typing import Any

import orjson

from chinwag.db import messages as messages_db
from chinwag.db.runs import DeadRun
from chinwag.schemas.messages import ToolCall
from chinwag.services.agent_builder import RunDeps
from chinwag.websocket.events import AssistantEnd, ContextSize, ToolDone, Usage
from chinwag.websocket.runs import RunChannel

logger = logging.getLogger(__name__)

PAGE = 1000
INTERRUPTED_OUTPUT = "interrupted"


async def tell_dead_runs(deps: RunDeps, dead: list[DeadRun]) -> None:
    """End each run for its sockets; one that fails is logged and never stops the others."""
    for run in dead:
        try:
            await _tell(deps, run)
        except Exception:
            logger.exception("run %s of a dead process: its sockets could not be told", run.run_id)


async def _tell(deps: RunDeps, run: DeadRun) -> None:
    # A process that only looked dead (frozen, cut off from the database) may still be appending events: ours
    # would then clash with its numbering. It stops at its next heartbeat (`ChatRun.abandon`); try until then.
    deadline = asyncio.get_running_loop().time() + 3 * deps.settings.run_heartbeat_s
    while True:
        try:
            await _tell_once(deps, run)
            return
        except Exception as exc:
            if asyncio.get_running_loop().time() > deadline:
                raise
            logger.info("run %s: its process still sends events (%s); trying again", run.run_id, exc)
            await asyncio.sleep(min(0.5, deps.settings.run_heartbeat_s))


async def _tell_once(deps: RunDeps, run: DeadRun) -> None:
    last = await deps.buffers.last_seq(run.run_id)
    if last is None:
        logger.info("run %s of a dead process: no events kept, nobody to tell", run.run_id)
        return
    frames = await _frames(deps, run)
    if frames is not None and frames:
        last = max(last, _seq_of(frames[-1], last))
    open_tools: dict[str, dict[str, Any]] = {}
    parts: list[str] = []
    for frame in frames or ():
        kind = frame.get("type")
        if kind == "text_delta":
            parts.append(frame["delta"])
        elif kind == "tool_start":
            open_tools[frame["call_id"]] = frame
        elif kind == "tool_done":
            open_tools.pop(frame["call_id"], None)
    text = "".join(parts)
    channel = RunChannel(run_id=run.run_id, session_id=run.session_id, buffers=deps.buffers, bus=deps.bus)
    channel.seq = last
    for call_id, start in open_tools.items():
        name, arguments = str(start.get("name", "")), str(start.get("arguments", ""))
        await channel.emit(ToolDone(call_id=call_id, name=name, output=INTERRUPTED_OUTPUT, ok=False))
        with contextlib.suppress(LookupError):  # the session is gone
            await messages_db.append_message(
                deps.pool,
                session_id=uuid.UUID(run.session_id),
                role="tool",
                content=INTERRUPTED_OUTPUT,
                status="interrupted",
                tool=ToolCall(call_id=call_id, name=name, arguments=arguments, output=INTERRUPTED_OUTPUT, ok=False),
                run_id=uuid.UUID(run.run_id),
            )
    if run.assistant_message_id is not None:
        if frames is not None and text:
            # What the sockets saw, which the last checkpoint may lag behind.
            await messages_db.update_message(
                deps.pool, message_id=uuid.UUID(run.assistant_message_id), content=text, status="interrupted"
            )
        await channel.emit(
            AssistantEnd(
                message_id=run.assistant_message_id,
                finish_reason="interrupted",
                usage=Usage(),
                context=ContextSize(
                    tokens=run.context_tokens, limit=deps.llm.catalog.context_window(run.model) if run.model else 0
                ),
            )
        )
    await deps.buffers.end(run.run_id)
    logger.warning("run %s of a dead process ended; its sockets were told", run.run_id)


def _seq_of(frame: dict[str, Any], default: int) -> int:
    seq = frame.get("seq")
    return seq if isinstance(seq, int) else default


async def _frames(deps: RunDeps, run: DeadRun) -> list[dict[str, Any]] | None:
    """Every frame the buffer holds for the run (None if it was trimmed or is gone)."""
    frames: list[dict[str, Any]] = []
    after = 0
    while True:
        page = await deps.buffers.read_after(run.run_id, session_id=run.session_id, after_seq=after, limit=PAGE)
        if page is None:
            return None
        frames.extend(orjson.loads(frame) for _, frame in page)
        if len(page) < PAGE:
            return frames
        after = page[-1][0]
