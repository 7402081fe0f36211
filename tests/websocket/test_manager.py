from __future__ import annotations

import asyncio
import collections
import contextlib
from collections.abc import AsyncIterator, Callable

import pytest

from chinwag.websocket.bus import RECHECK_CREDENTIALS, Envelope, InProcessBus, Unsubscribe
from chinwag.websocket.manager import Connection, ConnectionManager, ResumeUnavailable
from chinwag.websocket.runs import MemoryRunBuffers, RunChannel


class Sink:
    """Records frames like a socket would; `stall` makes every send hang (a dead peer with full buffers)."""

    def __init__(self, *, stall: bool = False) -> None:
        self.frames: list[str] = []
        self.stall = stall
        self.closed: int | None = None

    async def send_text(self, data: str) -> None:
        if self.stall:
            await asyncio.Event().wait()
        self.frames.append(data)
        await asyncio.sleep(0)

    async def close(self, code: int = 1000, reason: str | None = None) -> None:
        self.closed = code


@contextlib.asynccontextmanager
async def connected(manager: ConnectionManager, session_id: str, sink: Sink, **kw: int) -> AsyncIterator[Connection]:
    conn = Connection(sink, **kw)
    await manager.join(session_id, conn)
    task = asyncio.create_task(conn.run_sender())
    try:
        yield conn
    finally:
        await manager.leave(session_id, conn)
        conn.close()
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task


async def settle() -> None:
    """Let the senders drain their queues."""
    for _ in range(500):
        await asyncio.sleep(0)


async def test_every_socket_of_the_session_gets_each_event_once_in_order() -> None:
    bus = InProcessBus()
    manager = ConnectionManager(bus)
    buffers = MemoryRunBuffers()
    a, b, other = Sink(), Sink(), Sink()
    async with connected(manager, "s1", a), connected(manager, "s1", b), connected(manager, "s2", other):
        await buffers.open("r1", "s1")
        channel = RunChannel(run_id="r1", session_id="s1", buffers=buffers, bus=bus)
        for i in range(50):
            await channel.emit_text(f"t{i}")
        await bus.publish(Envelope(session_id="s1", frame='{"type":"session_updated"}'))
        await settle()
        assert len(a.frames) == 51
        assert a.frames == b.frames
        assert other.frames == []
    assert manager.room_size("s1") == 0
    assert bus.subscriber_count("s1") == 0


async def test_a_stalled_socket_is_dropped_without_holding_up_the_others() -> None:
    bus = InProcessBus()
    manager = ConnectionManager(bus)
    buffers = MemoryRunBuffers()
    kicked: list[bool] = []
    fast, stalled = Sink(), Sink(stall=True)
    async with connected(manager, "s", fast, max_queue=16), connected(manager, "s", stalled, max_queue=16) as slow:
        slow.on_kick(lambda: kicked.append(True))
        await buffers.open("r", "s")
        channel = RunChannel(run_id="r", session_id="s", buffers=buffers, bus=bus)
        for i in range(100):
            await channel.emit_text(f"{i}")
            await asyncio.sleep(0)
        await settle()
        assert len(fast.frames) == 100
        assert slow.too_slow
        assert slow.closed
        assert kicked == [True]


def deltas(frames: list[str]) -> list[str]:
    return [f.split('"delta":')[1] for f in frames]


def seqs(frames: list[str]) -> list[int]:
    return [int(f.split('"seq":')[1].split(",")[0]) for f in frames]


async def test_a_socket_that_joins_mid_run_without_await_resume_gets_nothing_of_it() -> None:
    bus = InProcessBus()
    manager = ConnectionManager(bus)
    buffers = MemoryRunBuffers()
    await buffers.open("r", "s")
    channel = RunChannel(run_id="r", session_id="s", buffers=buffers, bus=bus)
    await channel.emit_text("a")
    late = Sink()
    async with connected(manager, "s", late) as conn:
        await channel.emit_text("b")
        await settle()
        assert late.frames == []
        sent = await conn.resume(buffers, session_id="s", run_id="r", after_seq=1)
        assert sent == 1
        await channel.emit_text("c")
        await settle()
        assert deltas(late.frames) == ['"b"}', '"c"}']


async def test_a_mid_run_joiner_that_resumes_in_time_gets_everything_after_its_seq_in_order() -> None:
    bus = InProcessBus()
    manager = ConnectionManager(bus)
    buffers = MemoryRunBuffers()
    await buffers.open("r", "s")
    channel = RunChannel(run_id="r", session_id="s", buffers=buffers, bus=bus)
    for word in "abcde":
        await channel.emit_text(word)
    sink = Sink()
    async with connected(manager, "s", sink) as conn:
        conn.await_resume("r", last_seq=5, grace_s=5)
        await channel.emit_text("f")  # live, while the client has not resumed yet: held
        await settle()
        assert sink.frames == []
        await conn.resume(buffers, session_id="s", run_id="r", after_seq=2)
        await channel.emit_text("g")
        await settle()
    assert seqs(sink.frames) == [3, 4, 5, 6, 7]


async def test_a_mid_run_joiner_that_does_not_resume_follows_from_ready_last_seq() -> None:
    bus = InProcessBus()
    manager = ConnectionManager(bus)
    buffers = MemoryRunBuffers()
    await buffers.open("r", "s")
    channel = RunChannel(run_id="r", session_id="s", buffers=buffers, bus=bus)
    for word in "abc":
        await channel.emit_text(word)
    sink = Sink()
    async with connected(manager, "s", sink) as conn:
        conn.await_resume("r", last_seq=3, grace_s=0.05)
        await channel.emit_text("d")
        await asyncio.sleep(0.1)
        await channel.emit_text("e")
        await settle()
        assert seqs(sink.frames) == [4, 5]
        # A late resume sends only what this socket has not had.
        await conn.resume(buffers, session_id="s", run_id="r", after_seq=0)
        await settle()
        assert seqs(sink.frames) == [4, 5]


async def test_resume_racing_a_live_run_has_no_gap_and_no_duplicate() -> None:
    bus = InProcessBus()
    manager = ConnectionManager(bus)
    buffers = MemoryRunBuffers()
    await buffers.open("r", "s")
    channel = RunChannel(run_id="r", session_id="s", buffers=buffers, bus=bus)
    for i in range(500):
        await channel.emit_text(f"{i},")

    async def keep_emitting() -> None:
        for i in range(500, 1000):
            await channel.emit_text(f"{i},")
            if i % 7 == 0:
                await asyncio.sleep(0)

    sink = Sink()
    async with connected(manager, "s", sink, max_queue=64) as conn:
        producer = asyncio.create_task(keep_emitting())
        await conn.resume(buffers, session_id="s", run_id="r", after_seq=100)
        await producer
        await settle()
        for _ in range(100):
            if len(sink.frames) >= 900:
                break
            await asyncio.sleep(0.01)
    assert seqs(sink.frames) == list(range(101, 1001))
    assert not conn.too_slow


async def test_resume_of_an_unknown_or_foreign_run_is_unavailable() -> None:
    bus = InProcessBus()
    manager = ConnectionManager(bus)
    buffers = MemoryRunBuffers()
    await buffers.open("r", "s")
    async with connected(manager, "other", Sink()) as conn:
        with pytest.raises(ResumeUnavailable):
            await conn.resume(buffers, session_id="other", run_id="r", after_seq=0)
        with pytest.raises(ResumeUnavailable):
            await conn.resume(buffers, session_id="other", run_id="missing", after_seq=0)


class SlowBus(InProcessBus):
    """Subscribing takes a while, as it does over the network."""

    async def subscribe(self, session_id: str, handler: Callable[[Envelope], None]) -> Unsubscribe:
        await asyncio.sleep(0.02)
        return await super().subscribe(session_id, handler)


async def test_joins_return_once_the_room_hears_events_and_the_last_leave_unsubscribes() -> None:
    bus = SlowBus()
    manager = ConnectionManager(bus)
    a, b = Connection(Sink()), Connection(Sink())
    await asyncio.gather(manager.join("s", a), manager.join("s", b))
    assert bus.subscriber_count("s") == 1
    await bus.publish(Envelope(session_id="s", frame="x"))
    assert a._queue == b._queue == collections.deque(["x"])
    await manager.leave("s", a)
    assert bus.subscriber_count("s") == 1
    await manager.leave("s", b)
    assert bus.subscriber_count("s") == 0
    # Everyone gone while the first join still subscribes: the subscription is dropped.
    c = Connection(Sink())
    joining = asyncio.create_task(manager.join("s", c))
    await asyncio.sleep(0)
    await manager.leave("s", c)
    await joining
    assert bus.subscriber_count("s") == 0
    assert manager.room_size("s") == 0


async def test_a_recheck_request_reaches_each_socket_of_the_session_and_no_client() -> None:
    bus = InProcessBus()
    manager = ConnectionManager(bus)
    a, b, other = Sink(), Sink(), Sink()
    rechecks: collections.Counter[str] = collections.Counter()
    async with (
        connected(manager, "s1", a) as ca,
        connected(manager, "s1", b) as cb,
        connected(manager, "s2", other) as co,
    ):

        def counter(name: str) -> Callable[[], None]:
            return lambda: rechecks.update([name])

        for name, conn in (("a", ca), ("b", cb), ("other", co)):
            conn.on_recheck(counter(name))
        await bus.publish(Envelope(session_id="s1", frame=RECHECK_CREDENTIALS))
        await bus.publish(Envelope(session_id="s1", frame='{"type":"pong"}'))
        await settle()
    assert rechecks == {"a": 1, "b": 1}
    assert a.frames == b.frames == ['{"type":"pong"}']
    assert other.frames == []


class WireSink:
    """Like uvicorn's socket: a write finishes at once unless the transport's buffer is full (`paused`), then it
    waits until writing resumes; `broken` makes every write fail (the peer is gone)."""

    def __init__(self) -> None:
        self.frames: list[str] = []
        self.writable = asyncio.Event()
        self.writable.set()
        self.broken = False
        self.writers: list[asyncio.Task[object] | None] = []

    async def send_text(self, data: str) -> None:
        await self.writable.wait()
        if self.broken:
            raise ConnectionResetError("peer gone")
        self.writers.append(asyncio.current_task())
        self.frames.append(data)

    async def close(self, code: int = 1000, reason: str | None = None) -> None:
        pass


async def test_a_frame_to_an_idle_socket_is_written_at_once_in_the_senders_task() -> None:
    sink = WireSink()
    conn = Connection(sink)
    conn.send("ready")  # before the sender runs: queued
    assert sink.frames == []
    sender = asyncio.create_task(conn.run_sender())
    await settle()
    assert sink.frames == ["ready"]
    conn.send("a")
    assert sink.frames == ["ready", "a"]  # no task switch needed
    assert sink.writers[-1] is asyncio.current_task()
    conn.close()
    await sender


async def test_a_write_that_must_wait_is_finished_by_the_sender_and_order_is_kept() -> None:
    sink = WireSink()
    conn = Connection(sink)
    sender = asyncio.create_task(conn.run_sender())
    await settle()
    sink.writable.clear()  # the socket's buffer is full
    conn.send("a")
    conn.send("b")
    conn.send("c")
    await settle()
    assert sink.frames == []
    sink.writable.set()
    await settle()
    assert sink.frames == ["a", "b", "c"]
    assert all(writer is sender for writer in sink.writers)
    conn.send("d")  # idle again: written at once
    assert sink.frames[-1] == "d"
    conn.close()
    await sender


async def test_a_direct_write_to_a_gone_peer_ends_the_sender_with_the_error() -> None:
    sink = WireSink()
    conn = Connection(sink)
    sender = asyncio.create_task(conn.run_sender())
    await settle()
    sink.broken = True
    conn.send("a")  # the caller (a run) is not the one to fail
    assert conn.closed
    with pytest.raises(ConnectionResetError):
        await sender


async def test_cancelling_the_sender_mid_write_cancels_the_write_it_took_over() -> None:
    sink = WireSink()
    conn = Connection(sink)
    sender = asyncio.create_task(conn.run_sender())
    await settle()
    sink.writable.clear()
    conn.send("a")
    await settle()
    sender.cancel()
    with pytest.raises(asyncio.CancelledError):
        await sender
    sink.writable.set()
    await settle()
    assert sink.frames == []
