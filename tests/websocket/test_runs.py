from __future__ import annotations

import asyncio

import orjson
import pytest

from chinwag.websocket.bus import Envelope, InProcessBus
from chinwag.websocket.events import AssistantStart
from chinwag.websocket.runs import MemoryRunBuffers, RunChannel, TaskSupervisor


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


async def test_channel_numbers_events_and_buffers_before_publishing() -> None:
    bus = InProcessBus()
    buffers = MemoryRunBuffers()
    seen_in_buffer: list[int | None] = []

    published: list[Envelope] = []

    def on_event(envelope: Envelope) -> None:
        published.append(envelope)
        # The frame is already readable from the buffer when it is published.
        seen_in_buffer.append(len(buffers._runs["r1"].frames))

    await bus.subscribe("s1", on_event)
    await buffers.open("r1", "s1")
    channel = RunChannel(run_id="r1", session_id="s1", buffers=buffers, bus=bus)
    assert await channel.emit(AssistantStart(message_id="m")) == 1
    assert await channel.emit_text("he") == 2
    assert await channel.emit_text("llo") == 3
    assert [e.seq for e in published] == [1, 2, 3]
    assert seen_in_buffer == [1, 2, 3]
    frames = [orjson.loads(e.frame) for e in published]
    assert frames[0] == {"type": "assistant_start", "run_id": "r1", "seq": 1, "message_id": "m"}
    assert "".join(f.get("delta", "") for f in frames) == "hello"
    assert await buffers.read_after("r1", session_id="s1", after_seq=1, limit=10) == [
        (2, published[1].frame),
        (3, published[2].frame),
    ]
    assert await buffers.read_after("r1", session_id="s1", after_seq=1, limit=1) == [(2, published[1].frame)]
    assert await buffers.read_after("r1", session_id="s1", after_seq=3, limit=10) == []
    assert await buffers.read_after("r1", session_id="other", after_seq=0, limit=10) is None
    assert await buffers.read_after("nope", session_id="s1", after_seq=0, limit=10) is None


async def test_buffers_are_kept_for_the_retention_after_the_end_then_dropped() -> None:
    clock = Clock()
    buffers = MemoryRunBuffers(retention_s=300, clock=clock)
    await buffers.open("r1", "s1")
    await buffers.append("r1", 1, "a")
    clock.now += 10_000  # a running run never expires
    assert await buffers.last_seq("r1") == 1
    await buffers.end("r1")
    clock.now += 299
    assert await buffers.read_after("r1", session_id="s1", after_seq=0, limit=5) == [(1, "a")]
    clock.now += 2
    assert await buffers.read_after("r1", session_id="s1", after_seq=0, limit=5) is None
    assert await buffers.last_seq("r1") is None


async def test_expired_runs_are_dropped_when_new_ones_open() -> None:
    clock = Clock()
    buffers = MemoryRunBuffers(retention_s=5, clock=clock)
    for i in range(3):
        await buffers.open(f"r{i}", "s")
        await buffers.end(f"r{i}")
    clock.now += 6
    await buffers.open("new", "s")
    assert len(buffers) == 1


async def test_append_refuses_a_gap() -> None:
    buffers = MemoryRunBuffers()
    await buffers.open("r", "s")
    await buffers.append("r", 1, "a")
    with pytest.raises(ValueError, match="seq 3"):
        await buffers.append("r", 3, "c")


async def test_supervisor_cancels_and_awaits_tasks_letting_them_clean_up() -> None:
    supervisor = TaskSupervisor()
    cleaned: list[str] = []
    started = asyncio.Event()

    async def run() -> None:
        try:
            started.set()
            await asyncio.sleep(3600)
        finally:
            await asyncio.sleep(0.01)
            cleaned.append("run")

    supervisor.spawn(run(), name="run")
    await started.wait()
    assert len(supervisor) == 1
    await supervisor.aclose(grace_s=5)
    assert cleaned == ["run"]
    assert len(supervisor) == 0

    async def nothing() -> None:
        return None

    with pytest.raises(RuntimeError):
        supervisor.spawn(nothing(), name="late")


async def test_supervisor_logs_a_failed_task(caplog: pytest.LogCaptureFixture) -> None:
    supervisor = TaskSupervisor()

    async def fail() -> None:
        raise RuntimeError("kaboom")

    task = supervisor.spawn(fail(), name="failing-run")
    with pytest.raises(RuntimeError):
        await task
    await asyncio.sleep(0)
    assert "failing-run failed" in caplog.text
    assert len(supervisor) == 0
