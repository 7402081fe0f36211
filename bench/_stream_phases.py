"""The measurements of the streaming bench, each against a server speaking chinwag's socket protocol or the relay's.

Every phase is bounded in count and time, and talks only to 127.0.0.1.
"""

from __future__ import annotations

import asyncio
import gc
import random
import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import asyncpg
import httpx
import psutil
from websockets.asyncio.client import ClientConnection

from bench._stream_client import Delivered, Protocol, open_socket, send_message
from bench._stream_common import Child, CpuWatch, percentile
from bench._stream_floors import set_default_reply

TOKEN_INTERVAL_S = 0.02  # 50 tokens/s
LAG_TARGET_MS = 10.0


@dataclass
class Target:
    """Where a phase sends its clients: a server, its WebSocket URL per session, and how it reads messages."""

    name: str
    server: Child
    protocol: Protocol
    url_of: Callable[[int], str]  # a socket URL for the i-th session


# CPU per delivered text_delta --------------------------------------------------------------------------------------


@dataclass
class CpuResult:
    """Server CPU over answers of two lengths: per delivered delta, and split into a fixed cost per run plus a
    marginal cost per delta (a straight line through the two points)."""

    streams: int
    short: tuple[float, int]  # (CPU seconds, deltas delivered) with short answers
    long: tuple[float, int]  # the same with long answers
    frame_sizes: list[tuple[int, int]] = field(default_factory=list)
    incomplete: int = 0

    @property
    def us_per_delta(self) -> float:
        cpu, deltas = self.long
        return cpu / max(deltas, 1) * 1e6

    @property
    def marginal_us(self) -> float:
        (cpu1, d1), (cpu2, d2) = self.short, self.long
        return (cpu2 - cpu1) / max(d2 - d1, 1) * 1e6

    @property
    def per_run_ms(self) -> float:
        cpu1, d1 = self.short
        return (cpu1 - self.marginal_us / 1e6 * d1) / self.streams * 1e3


async def cpu_per_delta(target: Target, fake: Child, *, streams: int, tokens: int, first: int = 0) -> CpuResult:
    """Server CPU per delivered text_delta: `streams` answers at once, as fast as the fake goes, first of
    `tokens // 10` tokens, then of `tokens` tokens (on other sessions, so that both start from the same history).
    Sessions `first` to `first + 2 * streams - 1` are used."""
    sockets = [await open_socket(target.url_of(first + i)) for i in range(2 * streams)]
    try:
        await set_default_reply(fake.url, tokens=20, delay=0.0)
        await send_message(sockets[0], "warm-up", protocol=target.protocol, timeout=60)
        await send_message(sockets[streams], "warm-up", protocol=target.protocol, timeout=60)
        short = await _answers(target, fake, sockets[:streams], tokens=max(1, tokens // 10))
        long = await _answers(target, fake, sockets[streams:], tokens=tokens, sizes=True)
    finally:
        await _close_all(sockets)
    return CpuResult(
        streams=streams,
        short=(short[0], sum(r.deltas for r in short[1])),
        long=(long[0], sum(r.deltas for r in long[1])),
        frame_sizes=long[1][0].frame_sizes,
        incomplete=sum(not r.complete for r in [*short[1], *long[1]]),
    )


async def _answers(
    target: Target, fake: Child, sockets: list[ClientConnection], *, tokens: int, sizes: bool = False
) -> tuple[float, list[Delivered]]:
    await set_default_reply(fake.url, tokens=tokens, delay=0.0)
    gc.collect()
    cpu0 = target.server.cpu_s()
    results = await asyncio.gather(
        *(
            send_message(ws, f"cpu {i}", protocol=target.protocol, timeout=120, sizes=sizes and i == 0)
            for i, ws in enumerate(sockets)
        )
    )
    return target.server.cpu_s() - cpu0, list(results)


@dataclass
class CpuSummary:
    """The medians of several `CpuResult` rounds (taken in turns with the floors, so that load from other programs
    lands on each alike)."""

    rounds: list[CpuResult]

    def _median(self, values: list[float]) -> float:
        return statistics.median(values) if values else float("nan")

    @property
    def us_per_delta(self) -> float:
        return self._median([r.us_per_delta for r in self.rounds])

    @property
    def per_run_ms(self) -> float:
        return self._median([r.per_run_ms for r in self.rounds])

    @property
    def marginal_us(self) -> float:
        return self._median([r.marginal_us for r in self.rounds])

    @property
    def incomplete(self) -> int:
        return sum(r.incomplete for r in self.rounds)

    @property
    def frame_sizes(self) -> list[tuple[int, int]]:
        return self.rounds[0].frame_sizes if self.rounds else []


# Latency chinwag adds ----------------------------------------------------------------------------------------------


@dataclass
class LatencyResult:
    first_token_ms: list[float] = field(default_factory=list)  # the fake sends token 1 -> the client has it
    to_model_ms: list[float] = field(default_factory=list)  # the client sends `message` -> the fake has the request
    incomplete: int = 0

    def add(self, other: LatencyResult) -> None:
        self.first_token_ms.extend(other.first_token_ms)
        self.to_model_ms.extend(other.to_model_ms)
        self.incomplete += other.incomplete


async def latency(target: Target, fake: Child, *, messages: int, sessions: int) -> LatencyResult:
    """Messages one after another (round robin over `sessions`), each a short answer."""
    await set_default_reply(fake.url, tokens=5, delay=0.005)
    sockets = [await open_socket(target.url_of(i)) for i in range(sessions)]
    first: list[float] = []
    sent: dict[str, int] = {}
    incomplete = 0
    try:
        for ws in sockets:
            await send_message(ws, "warm-up", protocol=target.protocol, timeout=30)
        async with httpx.AsyncClient(base_url=fake.url, timeout=10) as http:
            await http.post("/_bench/reset")
            for i in range(messages):
                content = f"latency probe {i} {random.random():.6f}"
                got = await send_message(sockets[i % sessions], content, protocol=target.protocol, timeout=30)
                sent[content] = got.sent_us
                if got.first_lag_us is not None:
                    first.append(got.first_lag_us / 1000)
                incomplete += not got.complete
            arrivals = (await http.get("/_bench/arrivals")).json()
    finally:
        await _close_all(sockets)
    to_model = [(a["at_us"] - sent[a["last_user"]]) / 1000 for a in arrivals if a["stream"] and a["last_user"] in sent]
    return LatencyResult(first_token_ms=first, to_model_ms=to_model, incomplete=incomplete)


# Concurrent streams at 50 tokens/s ---------------------------------------------------------------------------------


@dataclass
class StepResult:
    streams: int
    lags_ms: list[float]
    incomplete: int
    cpu_share: dict[str, float]
    timer_late_ms: list[float] = field(default_factory=list)  # how late a 10 ms timer fired in this process
    steady_lags_ms: list[float] = field(default_factory=list)  # lags while no run started or ended
    server_cpu_s: float = 0.0
    deltas: int = 0

    @property
    def us_per_delta(self) -> float:
        """Server CPU per delivered delta at this pace (each token its own read, parse and send: no batching)."""
        return self.server_cpu_s / self.deltas * 1e6 if self.deltas else float("nan")

    @property
    def steady_p99(self) -> float:
        return percentile(self.steady_lags_ms, 99)

    @property
    def timer_p99(self) -> float:
        return percentile(self.timer_late_ms, 99)

    @property
    def p50(self) -> float:
        return percentile(self.lags_ms, 50)

    @property
    def p99(self) -> float:
        return percentile(self.lags_ms, 99)

    @property
    def held(self) -> bool:
        return self.incomplete == 0 and bool(self.lags_ms) and self.p99 < LAG_TARGET_MS


async def concurrent_step(
    target: Target, fake: Child, bench_ps: psutil.Process, *, streams: int, tokens: int, ramp_s: float = 1.0
) -> StepResult:
    """`streams` answers at 50 tokens/s at once (started over `ramp_s`); the lag of every token but each first."""
    await set_default_reply(fake.url, tokens=tokens, delay=TOKEN_INTERVAL_S)
    sockets = await _open_many(target, streams)
    watch = CpuWatch(server=target.server.ps, fake=fake.ps, bench=bench_ps)
    gc.collect()

    async def one(i: int, ws: ClientConnection) -> Delivered:
        await asyncio.sleep(ramp_s * i / streams)
        return await send_message(ws, f"stream {i}", protocol=target.protocol, timeout=tokens * 0.1 + 30)

    late: list[float] = []
    probe = asyncio.create_task(_timer_lateness(late))
    try:
        watch.start()
        results = await asyncio.gather(*(one(i, ws) for i, ws in enumerate(sockets)))
        watch.stop()
    finally:
        probe.cancel()
        await asyncio.gather(probe, return_exceptions=True)
        await _close_all(sockets)
    lags = [lag / 1000 for r in results for lag in r.lags_us[1:]]
    # Steady state: after the last run's first token, before the first run's end (no run starting or finishing).
    all_started = max((r.received_us[0] for r in results if r.received_us), default=0)
    first_end = min((r.ended_us for r in results if r.ended_us), default=0) - 100_000
    steady = [
        lag / 1000
        for r in results
        for lag, at in zip(r.lags_us, r.received_us, strict=True)
        if all_started < at < first_end
    ]
    return StepResult(
        streams=streams,
        lags_ms=lags,
        incomplete=sum(not r.complete or r.deltas < tokens for r in results),
        cpu_share={name: watch.share(name) for name in watch.processes},
        timer_late_ms=late,
        steady_lags_ms=steady,
        server_cpu_s=watch.used["server"],
        deltas=sum(r.deltas for r in results),
    )


async def _timer_lateness(late: list[float], interval: float = 0.01) -> None:
    """How late a timer fires in this (lightly loaded) process: the machine's own scheduling delay, a floor under
    any token lag measured here."""
    while True:
        due = time.perf_counter() + interval
        await asyncio.sleep(interval)
        late.append((time.perf_counter() - due) * 1000)


async def concurrent_steps(
    targets: list[Target], fake: Child, bench_ps: psutil.Process, *, counts: list[int], tokens: int
) -> dict[str, list[StepResult]]:
    """Step each target up through `counts`, the targets in turns at each count, until a step misses the lag target
    (that step is the last one reported for that target)."""
    steps: dict[str, list[StepResult]] = {t.name: [] for t in targets}
    for count in counts:
        active = [t for t in targets if all(s.held for s in steps[t.name])]
        if not active:
            break
        for target in active:
            steps[target.name].append(await concurrent_step(target, fake, bench_ps, streams=count, tokens=tokens))
    return steps


# Memory per idle socket --------------------------------------------------------------------------------------------


@dataclass
class SocketMemory:
    sockets: int
    rss_before: int
    rss_after: int

    @property
    def per_socket_kb(self) -> float:
        return (self.rss_after - self.rss_before) / self.sockets / 1024


async def idle_socket_memory(
    target: Target,
    *,
    sockets: int,
    sessions: int,
    compression: str | None = None,
    pushed: int = 0,
    settle_s: float = 1.0,
) -> SocketMemory:
    """Server RSS growth with `sockets` idle sockets open (spread over `sessions`), each past its `ready` (and, on
    the bare push server, past `pushed` text_delta frames: compression state is only touched when used)."""
    await asyncio.sleep(settle_s)
    before = target.server.rss()
    conns: list[ClientConnection] = []
    try:
        for start in range(0, sockets, 50):
            batch = range(start, min(start + 50, sockets))
            conns.extend(
                await asyncio.gather(
                    *(open_socket(target.url_of(i % sessions), compression=compression) for i in batch)
                )
            )
        if pushed:
            for start in range(0, len(conns), 200):
                await asyncio.gather(*(_drain_push(ws, pushed) for ws in conns[start : start + 200]))
        await asyncio.sleep(settle_s)
        after = target.server.rss()
    finally:
        await _close_all(conns)
    return SocketMemory(sockets=len(conns), rss_before=before, rss_after=after)


# Database commits --------------------------------------------------------------------------------------------------

STATS_FLUSH_S = 11.0  # PostgreSQL backends flush their counters within 10 s of going idle


@dataclass
class CommitResult:
    messages: int
    per_message: float  # xact_commit per message
    updates_per_message: float  # row updates of `messages` per message
    long_tokens: int
    long_seconds: float
    long_commits: int
    long_updates: int

    @property
    def commits_per_s(self) -> float:
        """Commits per second of streaming, beyond what a short message costs."""
        return (self.long_commits - self.per_message) / self.long_seconds if self.long_seconds > 0 else float("nan")

    @property
    def checkpoints_per_s(self) -> float:
        """Updates of the assistant message per second of streaming, beyond what a short message makes."""
        extra = self.long_updates - self.updates_per_message
        return extra / self.long_seconds if self.long_seconds > 0 else float("nan")


class CommitCounter:
    """`pg_stat_database.xact_commit` of one database and the row updates of its `messages` table, read from a
    connection of our own (its own commits are taken off)."""

    def __init__(self, conn: asyncpg.Connection, database: str) -> None:
        self.conn = conn
        self.database = database
        self.reads = 0

    async def read(self) -> tuple[int, int]:
        row = await self.conn.fetchrow(
            "SELECT (SELECT xact_commit FROM pg_stat_database WHERE datname = $1) AS commits,"
            " (SELECT coalesce(sum(n_tup_upd), 0) FROM pg_stat_user_tables WHERE relname = 'messages') AS updates",
            self.database,
        )
        own = self.reads
        self.reads += 1
        assert row is not None
        return int(row["commits"] or 0) - own, int(row["updates"] or 0)


async def commits(
    target: Target, fake: Child, counter: CommitCounter, *, messages: int, long_tokens: int, quiet_since: float
) -> CommitResult:
    """Commits per message (short answers), then during one long answer at 50 tokens/s. Waits for PostgreSQL to
    publish its counters before each reading."""
    await set_default_reply(fake.url, tokens=5, delay=0.0)
    ws = await open_socket(target.url_of(0))
    try:
        await asyncio.sleep(max(0.0, quiet_since + STATS_FLUSH_S - time.monotonic()))
        c0, u0 = await counter.read()
        for i in range(messages):
            await send_message(ws, f"commit probe {i}", protocol=target.protocol, timeout=30)
        await asyncio.sleep(STATS_FLUSH_S)
        c1, u1 = await counter.read()
        await set_default_reply(fake.url, tokens=long_tokens, delay=TOKEN_INTERVAL_S)
        started = time.monotonic()
        got = await send_message(ws, "a long answer", protocol=target.protocol, timeout=long_tokens * 0.1 + 30)
        seconds = time.monotonic() - started
        await asyncio.sleep(STATS_FLUSH_S)
        c2, u2 = await counter.read()
    finally:
        await ws.close()
    return CommitResult(
        messages=messages,
        per_message=(c1 - c0) / messages,
        updates_per_message=(u1 - u0) / messages,
        long_tokens=got.deltas,
        long_seconds=seconds,
        long_commits=c2 - c1,
        long_updates=u2 - u1,
    )


# -------------------------------------------------------------------------------------------------------------------


async def _drain_push(ws: ClientConnection, frames: int) -> None:
    await ws.send(str(frames))
    while await ws.recv() != '{"type":"done"}':
        pass


async def _open_many(target: Target, count: int) -> list[ClientConnection]:
    conns: list[ClientConnection] = []
    for start in range(0, count, 50):
        batch = range(start, min(start + 50, count))
        conns.extend(await asyncio.gather(*(open_socket(target.url_of(i)) for i in batch)))
    return conns


async def _close_all(conns: list[ClientConnection]) -> None:
    for start in range(0, len(conns), 200):
        await asyncio.gather(*(ws.close() for ws in conns[start : start + 200]), return_exceptions=True)


def frame_growth(sizes: list[tuple[int, int]]) -> tuple[int, int, int]:
    """(first frame size, last frame size, the spread of sizes once the digits of `seq` are taken off)."""
    if not sizes:
        return 0, 0, -1
    bare = [size - len(str(seq)) for seq, size in sizes]
    return sizes[0][1], sizes[-1][1], max(bare) - min(bare)
