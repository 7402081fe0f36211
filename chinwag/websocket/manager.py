"""Sockets per session: each socket has its own bounded send queue and sender, so one slow or dead socket never
holds up the others; a socket that cannot keep up is closed (1013) and its client resumes.

A frame for a socket with nothing queued is written at once, in the task that sends it (the run's), instead of
waking the socket's sender task: a streamed token costs one task switch fewer. Only when the socket's buffer is full
(the write would wait) does the sender task take over that write and what queues behind it, so the order stays.

Which run events a socket gets: every event of a run that starts while it is open (from seq 1). A socket that opens
in the middle of a run learns of it from `ready.active_run {run_id, last_seq}`; if it sends `resume` within
`RESUME_GRACE_S` it gets the events after its `after_seq`, otherwise the run's events after `last_seq` follow by
themselves (held until then, so that a resume can still put the missed ones first). Each socket gets each seq of a
run at most once, in order.
"""

from __future__ import annotations

import asyncio
import collections
import logging
from collections.abc import Callable, Coroutine, Generator
from dataclasses import dataclass, field
from typing import Any, Protocol

from chinwag.websocket.bus import RECHECK_CREDENTIALS, Bus, Envelope, Unsubscribe
from chinwag.websocket.runs import RunBuffers

logger = logging.getLogger(__name__)

SEND_QUEUE_FRAMES = 4096
RESUME_GRACE_S = 2.0
REPLAY_BATCH = 32
CLOSE_TOO_SLOW = 1013


class FrameSink(Protocol):
    """What a connection writes to: Starlette's `WebSocket` has these."""

    async def send_text(self, data: str) -> None: ...

    async def close(self, code: int = 1000, reason: str | None = None) -> None: ...


class ResumeUnavailable(Exception):
    """The run's events are no longer kept (or the run is unknown)."""


@dataclass
class _Follow:
    """A socket's position in one run."""

    last_seq: int
    replaying: bool = False
    held: list[Envelope] = field(default_factory=list)
    pending: asyncio.TimerHandle | None = None
    """Set while the socket joined mid-run and may still resume it (nothing of the run was sent yet)."""


class _UnfinishedWrite:
    """A write begun in the caller's task that had to wait for the socket; awaiting this finishes it in the
    awaiting task (the coroutine is driven on from where it stopped, the future it waits on handed to that task)."""

    def __init__(self, write: Coroutine[Any, Any, None], waiting_on: Any) -> None:
        self._write = write
        self._waiting_on = waiting_on

    def __await__(self) -> Generator[Any, Any, None]:
        write, waiting_on = self._write, self._waiting_on
        while True:
            try:
                sent = yield waiting_on
            except BaseException as exc:  # the awaiting task was cancelled: pass it into the write
                try:
                    waiting_on = write.throw(exc)
                except StopIteration:
                    return
            else:
                try:
                    waiting_on = write.send(sent)
                except StopIteration:
                    return


class Connection:
    """One socket: a queue of frames to send, drained by `run_sender()`; `send()` never blocks. While the sender
    runs, a frame sent with nothing queued is written straight away (see the module's docstring)."""

    def __init__(self, sink: FrameSink, *, max_queue: int = SEND_QUEUE_FRAMES) -> None:
        self.sink = sink
        self.max_queue = max_queue
        self.closed = False
        self.too_slow = False
        self._queue: collections.deque[str] = collections.deque()
        self._ready = asyncio.Event()
        self._room = asyncio.Event()
        self._room.set()
        self._runs: dict[str, _Follow] = {}
        self._on_kick: Callable[[], None] | None = None
        self._on_recheck: Callable[[], None] | None = None
        self._direct = False
        """True while `run_sender` runs: before it starts, frames queue behind `ready` (`send_first`)."""
        self._writing = False
        """A write is under way (the sender's, or one it took over): new frames queue behind it."""
        self._unfinished: _UnfinishedWrite | None = None
        self._failure: Exception | None = None
        self._final_close: tuple[int, str] | None = None
        self.ended = asyncio.Event()
        """Set once `finish()` has sent what was queued and closed the socket."""

    # --- sending ---

    def send(self, frame: str) -> None:
        """Send a frame now if nothing is queued, else queue it; if the queue is full the socket is too slow and is
        closed."""
        if self.closed:
            return
        if self._direct and not self._writing and not self._queue:
            self._write_now(frame)
            return
        if len(self._queue) >= self.max_queue:
            self._kick()
            return
        self._queue.append(frame)
        self._ready.set()
        if len(self._queue) >= self.max_queue:
            self._room.clear()

    def _write_now(self, frame: str) -> None:
        write = self.sink.send_text(frame)
        try:
            waiting_on = write.send(None)
        except StopIteration:
            return  # written: the usual case
        except Exception as exc:
            # The peer is gone: the sender task raises it, as if its own write had failed.
            self._failure = exc
            self.close()
            return
        self._writing = True
        self._unfinished = _UnfinishedWrite(write, waiting_on)
        self._ready.set()

    def send_first(self, frame: str) -> None:
        """Put a frame before everything queued (`ready`, which must be the first frame of a socket)."""
        self._queue.appendleft(frame)
        self._ready.set()

    async def send_waiting(self, frame: str) -> None:
        """Queue a frame, waiting for room (replay: its own pace, never a reason to drop the socket)."""
        while len(self._queue) >= self.max_queue // 2 and not self.closed:
            self._room.clear()
            await self._room.wait()
        self.send(frame)

    def on_recheck(self, callback: Callable[[], None]) -> None:
        """`callback` runs when the bus asks every socket of the session to check its credential again."""
        self._on_recheck = callback

    def on_kick(self, callback: Callable[[], None]) -> None:
        """`callback` runs when the socket is dropped for being too slow (the route cancels its handler)."""
        self._on_kick = callback

    def _kick(self) -> None:
        if self.closed:
            return
        logger.info("closing a socket that cannot keep up (%d frames queued)", len(self._queue))
        self.too_slow = True
        self.close()
        if self._on_kick is not None:
            self._on_kick()

    def close(self) -> None:
        for follow in self._runs.values():
            if follow.pending is not None:
                follow.pending.cancel()
                follow.pending = None
        self.closed = True
        self._queue.clear()
        self._ready.set()
        self._room.set()

    def finish(self, code: int, reason: str) -> None:
        """Send what is queued, then close the socket with `code` (a restart: 1012); nothing is queued after."""
        if self.closed:
            self.ended.set()
            return
        self._final_close = (code, reason)
        self.closed = True
        self._ready.set()

    async def run_sender(self) -> None:
        """Write queued frames until the connection closes (a failed write raises here, whichever task began it);
        after `finish()`, what was queued is sent, then the socket is closed with its code. Run it next to the
        receive loop."""
        self._direct = True
        try:
            while True:
                await self._ready.wait()
                if self._failure is not None:
                    raise self._failure
                self._writing = True
                try:
                    unfinished, self._unfinished = self._unfinished, None
                    if unfinished is not None:
                        await unfinished
                    while self._queue:
                        frame = self._queue.popleft()
                        if len(self._queue) < self.max_queue // 2:
                            self._room.set()
                        await self.sink.send_text(frame)
                finally:
                    self._writing = False
                if self.closed:
                    if self._final_close is not None:
                        await self.sink.close(*self._final_close)
                    return
                self._ready.clear()
        finally:
            self._direct = False
            if self._final_close is not None:
                self.ended.set()

    # --- run events ---

    def deliver(self, envelope: Envelope) -> None:
        """A frame from the bus: session frames go out as they are; run frames follow the rules above."""
        if envelope.run_id is None:
            if envelope.frame == RECHECK_CREDENTIALS:
                if self._on_recheck is not None:
                    self._on_recheck()
                return
            self.send(envelope.frame)
            return
        follow = self._runs.get(envelope.run_id)
        if follow is None:
            if envelope.seq != 1:
                return  # the run began before this socket: it follows only after `resume`
            follow = self._follow(envelope.run_id, 0)
        if follow.replaying:
            follow.held.append(envelope)
            return
        if envelope.seq > follow.last_seq:
            follow.last_seq = envelope.seq
            self.send(envelope.frame)

    def follows(self, run_id: str) -> bool:
        return run_id in self._runs

    def await_resume(self, run_id: str, *, last_seq: int, grace_s: float = RESUME_GRACE_S) -> None:
        """The socket opened while this run was going (`last_seq` told in `ready`): hold its live frames until the
        client resumes it, or, after `grace_s`, send them from `last_seq + 1` on."""
        follow = self._follow(run_id, last_seq)
        follow.replaying = True
        follow.pending = asyncio.get_running_loop().call_later(grace_s, self._release, run_id)

    def _release(self, run_id: str) -> None:
        follow = self._runs.get(run_id)
        if follow is None or follow.pending is None:
            return
        follow.pending = None
        follow.replaying = False
        held, follow.held = follow.held, []
        for envelope in held:
            self.deliver(envelope)

    def _follow(self, run_id: str, after_seq: int) -> _Follow:
        # One run per session at a time: positions in older runs are no longer needed.
        if run_id not in self._runs and len(self._runs) >= 4:
            self._runs.pop(next(iter(self._runs)))
        follow = self._runs[run_id] = _Follow(last_seq=after_seq)
        return follow

    async def resume(self, buffers: RunBuffers, *, session_id: str, run_id: str, after_seq: int) -> int:
        """Replay the run's frames after `after_seq`, then follow it live with no gap and no duplicate.

        Live frames arriving meanwhile are held, and released after the replay: any frame published before the
        hold began was appended to the buffer first, so the replay reads it. Returns the number of frames sent.
        """
        first = await buffers.read_after(run_id, session_id=session_id, after_seq=after_seq, limit=REPLAY_BATCH)
        if first is None:
            raise ResumeUnavailable(run_id)
        follow = self._runs.get(run_id)
        if follow is None:
            follow = self._follow(run_id, after_seq)
        elif follow.pending is not None:
            # Joined mid-run and nothing of it sent yet: start where the client says.
            follow.pending.cancel()
            follow.pending = None
            follow.last_seq = after_seq
        else:
            # Frames this socket was already sent are not sent again; a client that has more skips ahead.
            follow.last_seq = max(follow.last_seq, after_seq)
        follow.replaying = True
        sent = 0
        try:
            batch: list[tuple[int, str]] | None = first
            while batch:
                for seq, frame in batch:
                    if seq > follow.last_seq:
                        follow.last_seq = seq
                        await self.send_waiting(frame)
                        sent += 1
                await asyncio.sleep(0)  # let other sockets and the run itself go on
                batch = await buffers.read_after(
                    run_id, session_id=session_id, after_seq=follow.last_seq, limit=REPLAY_BATCH
                )
        finally:
            follow.replaying = False
            held, follow.held = follow.held, []
            for envelope in held:
                self.deliver(envelope)
        return sent


class ConnectionManager:
    """Rooms of connections per session, fed from the bus (one subscription per session with sockets here)."""

    def __init__(self, bus: Bus) -> None:
        self._bus = bus
        self._rooms: dict[str, set[Connection]] = {}
        self._subscriptions: dict[str, Unsubscribe] = {}
        self._live: dict[str, asyncio.Event] = {}
        self._per_user: collections.Counter[str] = collections.Counter()

    def claim_user_slot(self, user_id: str, *, limit: int) -> bool:
        """Count one more open socket of this user in this process; False (nothing counted) past `limit`."""
        if self._per_user[user_id] >= limit:
            return False
        self._per_user[user_id] += 1
        return True

    def release_user_slot(self, user_id: str) -> None:
        self._per_user[user_id] -= 1
        if self._per_user[user_id] <= 0:
            del self._per_user[user_id]

    async def join(self, session_id: str, conn: Connection) -> None:
        """Add the socket to its session's room; returns once events published from now on reach it."""
        room = self._rooms.get(session_id)
        if room is not None:
            room.add(conn)
            await self._live[session_id].wait()  # the first socket's join may still be subscribing
            if self._rooms.get(session_id) is not room:
                raise RuntimeError(f"could not subscribe to the events of session {session_id}")
            return
        room = self._rooms[session_id] = {conn}
        live = self._live[session_id] = asyncio.Event()
        try:
            unsubscribe = await self._bus.subscribe(session_id, self._fan_out)
        except BaseException:
            self._rooms.pop(session_id, None)
            self._live.pop(session_id, None)
            raise
        finally:
            live.set()
        if self._rooms.get(session_id) is room:
            self._subscriptions[session_id] = unsubscribe
        else:  # everyone left while it was subscribing
            await unsubscribe()

    async def leave(self, session_id: str, conn: Connection) -> None:
        room = self._rooms.get(session_id)
        if room is None:
            return
        room.discard(conn)
        if not room:
            del self._rooms[session_id]
            self._live.pop(session_id, None)
            unsubscribe = self._subscriptions.pop(session_id, None)
            if unsubscribe is not None:
                await unsubscribe()

    async def close_all(self, code: int, reason: str, flush_s: float) -> int:
        """Close every socket of this process with `code` once what is queued for it is sent (waiting at most
        `flush_s` for them all); returns how many there were."""
        conns = [conn for room in self._rooms.values() for conn in room]
        for conn in conns:
            conn.finish(code, reason)
        waiters = [asyncio.create_task(conn.ended.wait()) for conn in conns]
        try:
            if waiters:
                await asyncio.wait(waiters, timeout=flush_s)
        finally:
            for waiter in waiters:
                waiter.cancel()
        return len(conns)

    def room_size(self, session_id: str) -> int:
        return len(self._rooms.get(session_id, ()))

    def _fan_out(self, envelope: Envelope) -> None:
        for conn in tuple(self._rooms.get(envelope.session_id, ())):
            conn.deliver(envelope)
