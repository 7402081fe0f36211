"""Server CPU per chat message as a session grows: does a message at turn 150 cost what one at turn 10 does?

One session, messages one after another (short answers), the server's CPU read around each message from the
scheduler's per-thread counters (nanoseconds; a process's CPU times tick in 10 ms steps, too coarse for one message).
The figure for turn N is the median over the `sample` messages ending at turn N (a median, so that one message that
met a garbage collection or another program's burst does not move it)."""

from __future__ import annotations

import statistics
from dataclasses import dataclass, field
from typing import Any

from bench._stream_client import open_socket, send_message
from bench._stream_common import Child
from bench._stream_floors import set_default_reply
from bench._stream_phases import Target


@dataclass
class TurnCost:
    """Median server CPU (ms) per message at each measured turn."""

    ms_at: dict[int, float] = field(default_factory=dict)
    incomplete: int = 0

    def ratio(self, late: int, early: int) -> float:
        if early not in self.ms_at or late not in self.ms_at or self.ms_at[early] <= 0:
            return float("nan")
        return self.ms_at[late] / self.ms_at[early]


async def turn_cost(target: Target, fake: Child, *, session: int, turns: list[int], sample: int) -> TurnCost:
    """Messages 1 .. max(turns) in session number `session`; each answer 20 tokens, as fast as the fake goes."""
    await set_default_reply(fake.url, tokens=20, delay=0.0)
    ws = await open_socket(target.url_of(session))
    cost = TurnCost()
    per_message: list[float] = []
    try:
        for turn in range(1, max(turns) + 1):
            before = _cpu_s(target.server, None)
            got = await send_message(ws, f"turn {turn}: tell me more about it.", protocol=target.protocol, timeout=60)
            per_message.append(_cpu_s(target.server, before))
            cost.incomplete += not got.complete
            if turn in turns:
                window = per_message[max(0, turn - sample) : turn]
                cost.ms_at[turn] = statistics.median(window) * 1000
    finally:
        await ws.close()
    return cost


def _cpu_s(server: Child, since: dict[int, int] | float | None) -> Any:
    """With `since` None: a reading (per-thread nanoseconds, or CPU seconds where /proc has no schedstat). With a
    reading: the CPU seconds used since (a thread that ended meanwhile is left out: its last slice is lost)."""
    now = server.task_cpu_ns()
    if since is None:
        return now if now else server.cpu_s()
    if isinstance(since, dict):
        return sum(used - since.get(tid, 0) for tid, used in now.items()) / 1e9
    return server.cpu_s() - since
