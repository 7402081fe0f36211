from __future__ import annotations

from chinwag.websocket.bus import Envelope, InProcessBus


async def test_delivers_in_order_to_each_subscriber_of_the_session() -> None:
    bus = InProcessBus()
    a: list[Envelope] = []
    b: list[Envelope] = []
    other: list[Envelope] = []
    await bus.subscribe("s1", a.append)
    unsubscribe_b = await bus.subscribe("s1", b.append)
    await bus.subscribe("s2", other.append)
    for seq in (1, 2, 3):
        await bus.publish(Envelope(session_id="s1", frame=f"f{seq}", run_id="r", seq=seq))
    assert [e.seq for e in a] == [1, 2, 3]
    assert a == b
    assert other == []
    await unsubscribe_b()
    await unsubscribe_b()
    await bus.publish(Envelope(session_id="s1", frame="f4"))
    assert len(a) == 4
    assert len(b) == 3


async def test_a_failing_handler_does_not_stop_the_others() -> None:
    bus = InProcessBus()
    got: list[str] = []

    def broken(envelope: Envelope) -> None:
        raise RuntimeError("boom")

    await bus.subscribe("s", broken)
    await bus.subscribe("s", lambda e: got.append(e.frame))
    await bus.publish(Envelope(session_id="s", frame="x"))
    assert got == ["x"]


async def test_interrupts_reach_the_session_only_and_unsubscribe_cleans_up() -> None:
    bus = InProcessBus()
    got: list[str] = []
    off = await bus.on_interrupt("s1", got.append)
    await bus.interrupt("s2", "r2")
    await bus.interrupt("s1", "r1")
    assert got == ["r1"]
    await off()
    assert bus.subscriber_count("s1") == 0
    await bus.interrupt("s1", "r1")
    assert got == ["r1"]
