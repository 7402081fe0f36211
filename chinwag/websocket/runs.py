"""Runs as the socket layer sees them: numbered events, buffers kept for resume, and the tasks that own the runs.

- `RunBuffers` (seam) keeps each run's frames by `seq` while it runs and `retention_s` after its end, for `resume`.
  `MemoryRunBuffers` serves one worker; a Redis implementation (streams) serves many.
- `RunChannel` numbers a run's events 1, 2, 3, ... and, for each, appends it to the buffer BEFORE publishing it on
  the bus. Resume relies on that order: whatever a socket missed live is already in the buffer.
- `TaskSupervisor` owns run tasks: they belong to the server, not to a socket, and are awaited (and logged) at
  shutdown.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable, Coroutine
from dataclasses import dataclass, field
from typing import Any, Protocol

from chinwag.websocket.bus import Bus, Envelope
from chinwag.websocket.events import RunEvent, run_frame, text_delta_frame

logger = logging.getLogger(__name__)

RUN_RETENTION_S = 300.0


class RunBuffers(Protocol):
    """Each run's frames by seq, readable for `retention_s` after the run ends."""

    async def open(self, run_id: str, session_id: str) -> None: ...

    async def append(self, run_id: str, seq: int, frame: str) -> None: ...

    async def end(self, run_id: str) -> None: ...

    async def read_after(
        self, run_id: str, *, session_id: str, after_seq: int, limit: int
    ) -> list[tuple[int, str]] | None:
        """Up to `limit` frames with seq > `after_seq`, oldest first; `None` when the run is unknown, expired or
        of another session."""
        ...

    async def last_seq(self, run_id: str) -> int | None: ...


@dataclass
class _Buffer:
    session_id: str
    frames: list[str] = field(default_factory=list)
    ended_at: float | None = None


class MemoryRunBuffers:
    """`RunBuffers` in this process's memory. Expired runs are dropped as new ones open (no background task)."""

    def __init__(self, *, retention_s: float = RUN_RETENTION_S, clock: Callable[[], float] = time.monotonic) -> None:
        self.retention_s = retention_s
        self._clock = clock
        self._runs: dict[str, _Buffer] = {}

    async def open(self, run_id: str, session_id: str) -> None:
        self._expire()
        self._runs[run_id] = _Buffer(session_id=session_id)

    async def append(self, run_id: str, seq: int, frame: str) -> None:
        buf = self._runs[run_id]
        if seq != len(buf.frames) + 1:
            raise ValueError(f"run {run_id}: seq {seq} after {len(buf.frames)}")
        buf.frames.append(frame)

    async def end(self, run_id: str) -> None:
        buf = self._runs.get(run_id)
        if buf is not None and buf.ended_at is None:
            buf.ended_at = self._clock()

    async def read_after(
        self, run_id: str, *, session_id: str, after_seq: int, limit: int
    ) -> list[tuple[int, str]] | None:
        buf = self._live(run_id)
        if buf is None or buf.session_id != session_id:
            return None
        start = max(after_seq, 0)
        return [(start + i + 1, f) for i, f in enumerate(buf.frames[start : start + limit])]

    async def last_seq(self, run_id: str) -> int | None:
        buf = self._live(run_id)
        return None if buf is None else len(buf.frames)

    def _live(self, run_id: str) -> _Buffer | None:
        buf = self._runs.get(run_id)
        if buf is not None and buf.ended_at is not None and self._clock() - buf.ended_at > self.retention_s:
            del self._runs[run_id]
            return None
        return buf

    def _expire(self) -> None:
        now = self._clock()
        for run_id in [
            r for r, b in self._runs.items() if b.ended_at is not None and now - b.ended_at > self.retention_s
        ]:
            del self._runs[run_id]

    def __len__(self) -> int:
        return len(self._runs)


class RunChannel:
    """Numbers one run's events and sends each to the buffer, then the bus."""

    def __init__(self, *, run_id: str, session_id: str, buffers: RunBuffers, bus: Bus) -> None:
        self.run_id = run_id
        self.session_id = session_id
        self.seq = 0
        self._buffers = buffers
        self._bus = bus

    async def emit(self, event: RunEvent) -> int:
        """Send a run event, numbered next; returns its seq."""
        self.seq += 1
        await self._send(self.seq, run_frame(self.run_id, self.seq, event))
        return self.seq

    async def emit_text(self, delta: str) -> int:
        self.seq += 1
        await self._send(self.seq, text_delta_frame(self.run_id, self.seq, delta))
        return self.seq

    async def emit_reasoning(self, delta: str) -> int:
        self.seq += 1
        await self._send(self.seq, text_delta_frame(self.run_id, self.seq, delta, kind="reasoning_delta"))
        return self.seq

    async def _send(self, seq: int, frame: str) -> None:
        await self._buffers.append(self.run_id, seq, frame)
        await self._bus.publish(Envelope(session_id=self.session_id, frame=frame, run_id=self.run_id, seq=seq))


class TaskSupervisor:
    """Owns background tasks (runs): keeps a reference, logs failures, and cancels and awaits them at shutdown."""

    def __init__(self) -> None:
        self._tasks: set[asyncio.Task[None]] = set()
        self._closing = False

    @property
    def closing(self) -> bool:
        """Shutdown has begun: no new task is taken."""
        return self._closing

    def spawn(self, coro: Coroutine[Any, Any, None], *, name: str) -> asyncio.Task[None]:
        if self._closing:
            coro.close()
            raise RuntimeError("the server is shutting down")
        task = asyncio.create_task(coro, name=name)
        self._tasks.add(task)
        task.add_done_callback(self._done)
        return task

    def _done(self, task: asyncio.Task[None]) -> None:
        self._tasks.discard(task)
        if not task.cancelled() and (exc := task.exception()) is not None:
            logger.error("task %s failed", task.get_name(), exc_info=exc)

    def __len__(self) -> int:
        return len(self._tasks)

    async def aclose(self, *, grace_s: float = 10.0) -> None:
        """Cancel every task and wait for them to finish their clean-up (each persists what it has)."""
        self._closing = True
        tasks = list(self._tasks)
        for task in tasks:
            task.cancel()
        if tasks:
            logger.info("stopping %d run(s)", len(tasks))
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(grace_s):
                    await asyncio.gather(*tasks, return_exceptions=True)
        for task in tasks:
            if not task.done():
                logger.error("task %s did not stop within %.0f s", task.get_name(), grace_s)
