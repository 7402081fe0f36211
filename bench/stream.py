"""The streaming benchmark (issue "Agent chat over WebSocket"): `python -m bench.stream`.

One run on one machine, one table per model API (`--apis`, default both chat completions and Responses), each
chinwag figure beside its floor:

- the fake model server (`bench._stream_fake`, tokens stamped with their send time) in its own process;
- chinwag (`python -m chinwag serve`) in its own process, on a scratch database created beside
  `CHINWAG_BENCH_DATABASE_URL` (default postgresql://postgres@127.0.0.1:5432/test) and dropped afterwards;
- the floors: the Agents SDK alone in this process, and `bench._stream_bare` in its own process (a bare Starlette
  WebSocket push, and an SDK-to-WebSocket relay without a database);
- the clients in this process.

Everything talks to 127.0.0.1 only, every loop is bounded, and every child process is stopped on exit.
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import tempfile
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import asyncpg
import psutil
import uvloop

from bench._stream_chinwag import database_name, scratch_database, sign_in, start_chinwag
from bench._stream_common import Child, Children, children, free_port, percentile, raise_nofile
from bench._stream_floors import push_cpu_per_frame, sdk_cpu_per_delta
from bench._stream_phases import (
    CommitCounter,
    CommitResult,
    CpuSummary,
    LatencyResult,
    SocketMemory,
    StepResult,
    Target,
    commits,
    concurrent_steps,
    cpu_per_delta,
    frame_growth,
    idle_socket_memory,
    latency,
)
from bench._stream_turns import TurnCost, turn_cost

CPU_TARGET_SHARE_OF_SDK = 0.5
CPU_ROUNDS = 3
LATENCY_ROUNDS = 4
STREAMS_TARGET_OVER_RELAY = 2.0
TURN_TARGET_RATIO = 1.2
TO_MODEL_TARGET_MS = (5.0, 12.0)
APIS = ("chat_completions", "responses")


@dataclass
class Options:
    cpu_streams: int
    cpu_tokens: int
    steps: list[int]
    step_tokens: int
    latency_messages: int
    sockets: int
    commit_messages: int
    long_tokens: int
    apis: list[str]
    turns: list[int]
    turn_sample: int


@dataclass
class Results:
    machine: str
    started: str
    load: str
    api: str = "chat_completions"
    turn: TurnCost | None = None
    sdk_us: float = float("nan")
    push_us: float = float("nan")
    cpu: CpuSummary | None = None
    relay_cpu: CpuSummary | None = None
    steps: list[StepResult] | None = None
    relay_steps: list[StepResult] | None = None
    lat: LatencyResult | None = None
    relay_lat: LatencyResult | None = None
    mem: SocketMemory | None = None
    bare_mem: SocketMemory | None = None
    deflate_mem: SocketMemory | None = None
    commit: CommitResult | None = None


def machine() -> str:
    model = platform.processor() or "unknown CPU"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return f"{os.cpu_count()} CPUs (nproc {len(os.sched_getaffinity(0))}), {model}, Python {platform.python_version()}"


def load_average() -> str:
    one, five, _ = os.getloadavg()
    return f"{one:.1f} / {five:.1f}"


async def run(opts: Options, log_dir: Path) -> list[Results]:
    """The whole bench once per API; the phases that do not depend on the API ((e), (f)) with the first only."""
    raise_nofile(max(16_384, opts.sockets * 2 + 1024))
    every: list[Results] = []
    with children(log_dir) as kids:
        port = free_port()
        fake = kids.start("fake", ["-m", "bench._stream_fake", "--port", str(port)], port=port, ready_path="/v1/models")
        for index, llm_api in enumerate(opts.apis):
            every.append(await _run_api(opts, log_dir, kids, fake, llm_api=llm_api, first=index == 0))
    return every


async def _run_api(opts: Options, log_dir: Path, kids: Children, fake: Child, *, llm_api: str, first: bool) -> Results:
    results = Results(
        machine=machine(),
        started=datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC"),
        load=load_average(),
        api=llm_api,
    )
    _say(f"--- {llm_api}")
    bare = _start_bare(kids, fake.url, api=llm_api)
    try:
        async with scratch_database() as dsn:
            server = start_chinwag(kids, database_url=dsn, fake=fake, data_dir=log_dir / f"data-{llm_api}", api=llm_api)
            try:
                api = await sign_in(server)
                count = max([*opts.steps, 2 * opts.cpu_streams * (CPU_ROUNDS + 1), 100]) + 1
                sessions = await api.create_sessions(count)
                chinwag = Target("chinwag", server, "chinwag", lambda i: api.ws_url(sessions[i % len(sessions)]))
                relay = Target("relay", bare, "relay", lambda i: f"ws://127.0.0.1:{bare.port}/ws/relay")
                _say("warm-up")
                await cpu_per_delta(chinwag, fake, streams=1, tokens=20)
                await cpu_per_delta(relay, fake, streams=1, tokens=20)
                if first:
                    await _memory(results, kids, opts, chinwag, bare, fake)
                await _cpu(results, opts, chinwag, relay, bare, fake)
                await _latency(results, opts, chinwag, relay, fake)
                if opts.turns:
                    _say(f"(g) CPU per message at turns {opts.turns} of one session")
                    results.turn = await turn_cost(
                        chinwag, fake, session=count - 1, turns=opts.turns, sample=opts.turn_sample
                    )
                _say(f"(c) concurrent streams at 50 tokens/s: {opts.steps}, chinwag and relay in turns")
                steps = await concurrent_steps(
                    [chinwag, relay], fake, psutil.Process(), counts=opts.steps, tokens=opts.step_tokens
                )
                results.steps, results.relay_steps = steps["chinwag"], steps["relay"]
                if first:
                    _say("(f) database commits (waits for PostgreSQL to publish its counters)")
                    conn = await asyncpg.connect(dsn, timeout=10)
                    try:
                        results.commit = await commits(
                            chinwag,
                            fake,
                            CommitCounter(conn, database_name(dsn)),
                            messages=opts.commit_messages,
                            long_tokens=opts.long_tokens,
                            quiet_since=time.monotonic(),
                        )
                    finally:
                        await conn.close()
            except BaseException:
                _say(f"failed; chinwag's log ends with:\n{server.tail(30)}")
                raise
            finally:
                kids.stop(server)
    finally:
        kids.stop(bare)
    results.load += f" -> {load_average()}"
    return results


async def _memory(results: Results, kids: Children, opts: Options, chinwag: Target, bare: Child, fake: Child) -> None:
    """(e) first, while the servers are fresh: idle sockets on chinwag, on the bare push server, and on a bare push
    server offering permessage-deflate."""
    _say(f"(e) {opts.sockets} idle sockets: chinwag, bare, bare with deflate")
    results.mem = await idle_socket_memory(chinwag, sockets=opts.sockets, sessions=100)
    push = Target("bare", bare, "relay", lambda i: f"ws://127.0.0.1:{bare.port}/ws/push")
    results.bare_mem = await idle_socket_memory(push, sockets=opts.sockets, sessions=1, pushed=20)
    deflating = _start_bare(kids, fake.url, deflate=True, name="bare-deflate")
    try:
        deflate_push = Target("deflate", deflating, "relay", lambda i: f"ws://127.0.0.1:{deflating.port}/ws/push")
        results.deflate_mem = await idle_socket_memory(
            deflate_push, sockets=opts.sockets, sessions=1, compression="deflate", pushed=20
        )
    finally:
        kids.stop(deflating)


async def _cpu(results: Results, opts: Options, chinwag: Target, relay: Target, bare: Child, fake: Child) -> None:
    """(a, b) in turns, so that load from other programs lands on each alike; medians are reported."""
    _say(f"(a, b) CPU per text_delta: chinwag, SDK alone, bare push, relay; {CPU_ROUNDS} rounds")
    ours, relays, sdk, push = [], [], [], []
    streams, tokens = opts.cpu_streams, opts.cpu_tokens
    for i in range(CPU_ROUNDS):
        ours.append(await cpu_per_delta(chinwag, fake, streams=streams, tokens=tokens, first=(i + 1) * 2 * streams))
        sdk.append((await sdk_cpu_per_delta(fake.url, streams=streams, tokens=tokens, api=results.api))[0])
        push.append((await push_cpu_per_frame(bare, sockets=streams, frames=tokens))[0])
        relays.append(await cpu_per_delta(relay, fake, streams=streams, tokens=tokens))
    results.cpu, results.relay_cpu = CpuSummary(ours), CpuSummary(relays)
    results.sdk_us, results.push_us = statistics.median(sdk), statistics.median(push)


async def _latency(results: Results, opts: Options, chinwag: Target, relay: Target, fake: Child) -> None:
    """(d) in turns: a quarter of the messages at a time on each."""
    _say(f"(d) latency: {opts.latency_messages} messages each, chinwag and relay in turns")
    results.lat, results.relay_lat = LatencyResult(), LatencyResult()
    part = max(1, opts.latency_messages // LATENCY_ROUNDS)
    for _ in range(LATENCY_ROUNDS):
        results.lat.add(await latency(chinwag, fake, messages=part, sessions=10))
        results.relay_lat.add(await latency(relay, fake, messages=part, sessions=10))


def _start_bare(
    kids: Children, fake_url: str, *, deflate: bool = False, name: str = "bare", api: str = "chat_completions"
) -> Child:
    port = free_port()
    args = ["-m", "bench._stream_bare", "--port", str(port), *(["--deflate"] if deflate else [])]
    env = {"OPENAI_BASE_URL": fake_url + "/v1", "OPENAI_API_KEY": "bench-placeholder", "BENCH_LLM_API": api}
    return kids.start(name, args, port=port, env=env, ready_path="/health")


def _say(text: str) -> None:
    print(f"[{datetime.now(UTC):%H:%M:%S}] {text}", flush=True)


# The table ---------------------------------------------------------------------------------------------------------


def _ms(values: list[float]) -> str:
    if not values:
        return "no samples"
    return f"{percentile(values, 50):.2f} / {percentile(values, 99):.2f} ms (n={len(values)})"


def _held(steps: list[StepResult] | None) -> tuple[int, str]:
    """The largest count that held, and what the first failing step showed."""
    if not steps:
        return 0, "not measured"
    held = max((s.streams for s in steps if s.held), default=0)
    failed = next((s for s in steps if not s.held), None)
    if failed is None:
        return held, "every step held"
    share = ", ".join(f"{name} {value:.0%}" for name, value in failed.cpu_share.items())
    return held, (
        f"at {failed.streams}: p99 {failed.p99:.1f} ms, {failed.incomplete} incomplete; CPU of a core: {share}"
    )


def _capacity(us_per_delta: float) -> float:
    """Streams at 50 tokens/s that one core carries at that CPU cost per delta."""
    return 1e6 / (us_per_delta * 50) if us_per_delta > 0 else float("nan")


def _paced(steps: list[StepResult] | None) -> StepResult | None:
    """The step with the most streams (its CPU per delta is the best measured at 50 tokens/s)."""
    return max(steps, key=lambda s: s.streams) if steps else None


def _cpu_line(cpu: CpuSummary) -> str:
    return f"{cpu.us_per_delta:.1f} us = {cpu.per_run_ms:.1f} ms per run + {cpu.marginal_us:.1f} us per delta" + (
        f" ({cpu.incomplete} incomplete)" if cpu.incomplete else ""
    )


def _step_line(step: StepResult) -> str:
    share = "/".join(f"{value:.0%}" for value in step.cpu_share.values())
    return (
        f"p50 {step.p50:.2f} / p99 {step.p99:.2f} ms (p99 {step.steady_p99:.2f} ms while no run starts or ends),"
        f" CPU srv/fake/bench {share} ({step.us_per_delta:.0f} us per delta), a 10 ms timer's p99 lateness"
        f" {step.timer_p99:.1f} ms"
    ) + (f", {step.incomplete} incomplete" if step.incomplete else "")


def table(r: Results, opts: Options) -> str:
    rows: list[tuple[str, str, str, str, str]] = []
    if r.cpu is not None:
        budget = r.sdk_us * CPU_TARGET_SHARE_OF_SDK
        relay = f"; SDK + WebSocket relay (no DB) {_cpu_line(r.relay_cpu)}" if r.relay_cpu else ""
        rows.append(
            (
                f"(a, b) server CPU per text_delta ({opts.cpu_streams} answers of {opts.cpu_tokens} tokens at once;"
                f" median of {CPU_ROUNDS} rounds)",
                _cpu_line(r.cpu),
                f"SDK alone {r.sdk_us:.1f} us; bare WebSocket push {r.push_us:.1f} us{relay}",
                f"<= {CPU_TARGET_SHARE_OF_SDK}x SDK alone = {budget:.0f} us",
                _verdict(r.cpu.us_per_delta <= budget, f"{r.cpu.us_per_delta / r.sdk_us:.2f}x the SDK alone"),
            )
        )
    held, broke = _held(r.steps)
    relay_held, relay_broke = _held(r.relay_steps)
    ratio = held / relay_held if relay_held else float("nan")
    rows.append(
        (
            "(c) streams at 50 tokens/s held with p99 lag < 10 ms",
            f"{held} ({broke})",
            f"relay {relay_held} ({relay_broke})",
            f">= {STREAMS_TARGET_OVER_RELAY:g}x the relay",
            _verdict(ratio >= STREAMS_TARGET_OVER_RELAY, f"{ratio:.2f}x the relay"),
        )
    )
    paced, relay_paced = _paced(r.steps), _paced(r.relay_steps)
    if paced is not None and relay_paced is not None:
        capacity, relay_capacity = _capacity(paced.us_per_delta), _capacity(relay_paced.us_per_delta)
        rows.append(
            (
                "(c) server CPU per text_delta at 50 tokens/s (largest step), and the streams one core carries at that"
                " cost",
                f"{paced.us_per_delta:.0f} us at {paced.streams} streams: {capacity:.0f} streams",
                f"relay {relay_paced.us_per_delta:.0f} us at {relay_paced.streams}: {relay_capacity:.0f} streams",
                f">= {STREAMS_TARGET_OVER_RELAY:g}x the relay",
                _verdict(
                    capacity >= STREAMS_TARGET_OVER_RELAY * relay_capacity,
                    f"{capacity / relay_capacity:.2f}x by CPU alone: paced tokens arrive one per read",
                ),
            )
        )
    if r.turn is not None and len(opts.turns) >= 2:
        early, late = min(opts.turns), max(opts.turns)
        at_turns = ", ".join(f"turn {t}: {ms:.1f} ms" for t, ms in sorted(r.turn.ms_at.items()))
        turn_ratio = r.turn.ratio(late, early)
        rows.append(
            (
                f"(g) server CPU per message as the session grows (median of the {opts.turn_sample} messages up to each"
                " turn; 20-token answers)",
                at_turns + (f" ({r.turn.incomplete} incomplete)" if r.turn.incomplete else ""),
                "-",
                f"turn {late} <= {TURN_TARGET_RATIO}x turn {early}",
                _verdict(turn_ratio <= TURN_TARGET_RATIO, f"{turn_ratio:.2f}x"),
            )
        )
    relay_by_count = {s.streams: s for s in r.relay_steps or []}
    for step in r.steps or []:
        other = relay_by_count.get(step.streams)
        rows.append(
            (
                f"(c) {step.streams} streams: token lag",
                _step_line(step),
                f"relay {_step_line(other)}" if other else "relay: not reached",
                "p99 < 10 ms",
                _verdict(step.held, ""),
            )
        )
    if r.lat is not None:
        relay_first = r.relay_lat.first_token_ms if r.relay_lat else []
        relay_model = r.relay_lat.to_model_ms if r.relay_lat else []
        first_p99 = percentile(r.lat.first_token_ms, 99)
        model_p50, model_p99 = percentile(r.lat.to_model_ms, 50), percentile(r.lat.to_model_ms, 99)
        rows.append(
            (
                "(d) model's first token -> client's first text_delta, p50 / p99",
                _ms(r.lat.first_token_ms),
                f"relay {_ms(relay_first)}",
                "p99 < 1 ms",
                _verdict(first_p99 < 1.0, f"{r.lat.incomplete} incomplete" if r.lat.incomplete else ""),
            )
        )
        rows.append(
            (
                "(d) client's `message` -> model request at the fake, p50 / p99",
                _ms(r.lat.to_model_ms),
                f"relay {_ms(relay_model)}",
                f"p50 < {TO_MODEL_TARGET_MS[0]:g}, p99 < {TO_MODEL_TARGET_MS[1]:g} ms",
                _verdict(model_p50 < TO_MODEL_TARGET_MS[0] and model_p99 < TO_MODEL_TARGET_MS[1], ""),
            )
        )
    if r.mem is not None:
        floor = f"bare WebSocket {r.bare_mem.per_socket_kb:.1f} KB" if r.bare_mem else ""
        if r.deflate_mem:
            floor += f"; the same with permessage-deflate {r.deflate_mem.per_socket_kb:.1f} KB (both after 20 frames)"
        rows.append(
            (
                f"(e) server RSS per idle socket, {r.mem.sockets} open",
                f"{r.mem.per_socket_kb:.1f} KB ({r.mem.rss_before / 2**20:.0f} -> {r.mem.rss_after / 2**20:.0f} MiB)",
                floor,
                "< 64 KB",
                _verdict(r.mem.per_socket_kb < 64, ""),
            )
        )
    if r.commit is not None:
        c = r.commit
        rows.append(
            (
                f"(f) database commits per message ({c.messages} short answers, one after another)",
                f"{c.per_message:.1f} (xact_commit: every statement outside a transaction counts, pool resets too)",
                "-",
                "no target (the count does not depend on the answer's length: next row)",
                "-",
            )
        )
        rows.append(
            (
                f"(f) during a long answer ({c.long_tokens} tokens in {c.long_seconds:.1f} s at 50/s)",
                f"{c.checkpoints_per_s:.2f} checkpoints/s (message row updates), {c.commits_per_s:.2f} commits/s",
                "-",
                "<= about 1 checkpoint/s, none per token",
                _verdict(c.checkpoints_per_s <= 1.2, f"{c.long_commits} commits for {c.long_tokens} tokens"),
            )
        )
    if r.cpu is not None:
        first, last, spread = frame_growth(r.cpu.frame_sizes)
        rows.append(
            (
                f"text_delta frame size, token 1 vs {len(r.cpu.frame_sizes)}",
                f"{first} vs {last} bytes (spread {spread} bytes once seq's digits are set aside)",
                "-",
                "does not grow with the answer",
                _verdict(spread == 0, ""),
            )
        )
    head = "| measure | chinwag | floor (same run) | target | result |\n| --- | --- | --- | --- | --- |\n"
    body = "\n".join("| " + " | ".join(row) + " |" for row in rows)
    return f"API: {r.api}. Machine: {r.machine}; started {r.started}; load average {r.load}.\n\n{head}{body}"


def _verdict(ok: bool, note: str) -> str:
    return ("met" if ok else "MISSED") + (f" ({note})" if note else "")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description="chinwag's streaming benchmark: one run, one table.")
    parser.add_argument("--cpu-streams", type=int, default=8)
    parser.add_argument("--cpu-tokens", type=int, default=1000)
    parser.add_argument("--steps", default="10,25,50,100,150,200", help="concurrent stream counts to step through")
    parser.add_argument("--step-tokens", type=int, default=250, help="tokens per stream in each step (at 50/s)")
    parser.add_argument("--latency-messages", type=int, default=100)
    parser.add_argument("--sockets", type=int, default=2000)
    parser.add_argument("--commit-messages", type=int, default=20)
    parser.add_argument("--long-tokens", type=int, default=500)
    parser.add_argument("--apis", default=",".join(APIS), help="model APIs to measure, in turn")
    parser.add_argument("--turns", default="10,150", help="turns of one session whose CPU per message is compared")
    parser.add_argument(
        "--turn-sample", type=int, default=5, help="messages whose median is taken for each of those turns"
    )
    args = parser.parse_args(argv)
    opts = Options(
        cpu_streams=args.cpu_streams,
        cpu_tokens=args.cpu_tokens,
        steps=[int(n) for n in args.steps.split(",") if n.strip()],
        step_tokens=args.step_tokens,
        latency_messages=args.latency_messages,
        sockets=args.sockets,
        commit_messages=args.commit_messages,
        long_tokens=args.long_tokens,
        apis=[api.strip() for api in args.apis.split(",") if api.strip()],
        turns=sorted({int(n) for n in args.turns.split(",") if n.strip()}),
        turn_sample=args.turn_sample,
    )
    unknown = set(opts.apis) - set(APIS)
    if unknown:
        parser.error(f"unknown API(s): {', '.join(sorted(unknown))}")
    with tempfile.TemporaryDirectory(prefix="chinwag-bench-") as tmp:
        started = time.monotonic()
        every = uvloop.run(run(opts, Path(tmp)))
        _say(f"done in {time.monotonic() - started:.0f} s")
    for results in every:
        print()
        print(table(results, opts))


if __name__ == "__main__":
    main()
