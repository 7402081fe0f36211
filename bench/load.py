"""Load with faults of the client's making: N users chatting for a fixed time against one real `chinwag serve`.

Each user has a session and loops until the time is up, picking at random: a plain message, a message whose answer
calls an MCP tool (the test server's `echo`, over stdio), an upload then a message naming the file, a message
interrupted after a few deltas, and a message whose socket is dropped mid-run, reconnected and resumed. The model is
the fake OpenAI server (in this process), echoing each message back a word at a time.

At the end every client's transcript is compared with the database (REST history and the `runs` table):
- lost: a message the client sent (with its `client_id`), or an answer it saw end, missing from the history;
- duplicated: two user messages with one `client_id`;
- stuck: a message left `streaming` or a session left with an active run after the time is up;
- mismatched: an answer whose stored text differs from what the client saw streamed.
The pass mark is zero for each. It also reports runs completed, latency (message sent to `assistant_end`, and to the
first delta) p50/p99, and errors by kind.

Run: ``python -m bench.load [--users 20] [--seconds 60] [--workers 1|2]`` (2 workers need a Redis:
``CHINWAG_BENCH_REDIS_URL``, default ``redis://127.0.0.1:6379/0``). The database is a scratch one beside
``CHINWAG_BENCH_DATABASE_URL``. Check it runs with ``--users 2 --seconds 10``; take figures only on a quiet machine.
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import json
import os
import random
import statistics
import sys
import tempfile
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import orjson
import websockets

from bench._stream_chinwag import _FOREIGN_SETTINGS, ChinwagApi, scratch_database, sign_in
from bench._stream_common import children, free_port
from tests.fakes.openai_script import call, echo, say
from tests.fakes.openai_server import FakeOpenAI

ROOT = Path(__file__).resolve().parents[1]
MODEL = "fake-model"
ACTIONS = ("message", "tool", "upload", "interrupt", "reconnect")
WEIGHTS = (5, 2, 1, 1, 1)


@dataclass
class Sent:
    """One message as its client saw it."""

    client_id: str
    content: str
    kind: str
    run_id: str | None = None
    message_id: str | None = None
    streamed: str = ""
    finish: str | None = None


@dataclass
class Report:
    runs: int = 0
    latency_ms: list[float] = field(default_factory=list)
    first_delta_ms: list[float] = field(default_factory=list)
    errors: collections.Counter[str] = field(default_factory=collections.Counter)
    finishes: collections.Counter[str] = field(default_factory=collections.Counter)
    tools: collections.Counter[str] = field(default_factory=collections.Counter)
    sent: list[tuple[str, Sent]] = field(default_factory=list)  # (session_id, message)


class User:
    def __init__(self, api: ChinwagApi, session_id: str, fake: FakeOpenAI, report: Report, rng: random.Random) -> None:
        self.api, self.session_id, self.fake, self.report, self.rng = api, session_id, fake, report, rng

    async def chat_for(self, deadline: float) -> None:
        while time.monotonic() < deadline:
            kind = self.rng.choices(ACTIONS, WEIGHTS)[0]
            try:
                await self.turn(kind)
            except Exception as exc:  # a failed turn is counted, and the user goes on
                self.report.errors[f"client:{type(exc).__name__}"] += 1
                await asyncio.sleep(0.5)

    async def turn(self, kind: str) -> None:
        sent = Sent(client_id=uuid.uuid4().hex, content=f"{kind} {uuid.uuid4().hex[:8]} please answer", kind=kind)
        frame: dict[str, Any] = {"type": "message", "content": sent.content, "client_id": sent.client_id}
        if kind == "upload":
            frame["file_ids"] = [await self.upload()]
        if kind == "tool":
            self.fake.script(call("echo", {"text": sent.content}), say("The tool answered."))
        self.report.sent.append((self.session_id, sent))
        async with websockets.connect(self.api.ws_url(self.session_id), max_size=None) as ws:
            await ws.recv()  # ready
            started = time.perf_counter()
            await ws.send(orjson.dumps(frame).decode())
            last_seq, deltas = 0, 0
            while True:
                event = await self.next_frame(ws)
                if event is None:
                    return
                if kind == "reconnect" and deltas == 3 and event.get("type") == "text_delta":
                    self.note(sent, event)
                    last_seq = event["seq"]
                    await ws.close()
                    await self.resume(sent, last_seq, started)
                    return
                self.note(sent, event)
                if event.get("type") == "text_delta":
                    deltas += 1
                    if deltas == 1:
                        self.report.first_delta_ms.append((time.perf_counter() - started) * 1000)
                    if kind == "interrupt" and deltas == 3:
                        await ws.send('{"type": "interrupt"}')
                if event.get("type") == "assistant_end":
                    self.finished(sent, started)
                    return

    async def resume(self, sent: Sent, last_seq: int, started: float) -> None:
        async with websockets.connect(self.api.ws_url(self.session_id), max_size=None) as ws:
            await ws.recv()
            await ws.send(orjson.dumps({"type": "resume", "run_id": sent.run_id, "after_seq": last_seq}).decode())
            while True:
                event = await self.next_frame(ws)
                if event is None:
                    return
                if event.get("seq") is not None and event["seq"] <= last_seq:
                    self.report.errors["duplicate_event_after_resume"] += 1
                    continue
                self.note(sent, event)
                if event.get("type") == "assistant_end":
                    self.finished(sent, started)
                    return

    async def next_frame(self, ws: websockets.ClientConnection) -> dict[str, Any] | None:
        try:
            async with asyncio.timeout(60):
                raw = await ws.recv()
        except TimeoutError:
            self.report.errors["client:no_frame_for_60_s"] += 1
            return None
        event: dict[str, Any] = orjson.loads(raw)
        if event.get("type") == "error":
            self.report.errors[f"error:{event['code']}"] += 1
            if event.get("seq") is None:  # refused outright (busy, rate limited): no run to wait for
                return None
        return event

    def note(self, sent: Sent, event: dict[str, Any]) -> None:
        kind = event.get("type")
        if kind == "user_message":
            sent.run_id = event["run_id"]
        elif kind == "assistant_start":
            sent.message_id = event["message_id"]
        elif kind == "text_delta":
            sent.streamed += event["delta"]
        elif kind == "tool_done":
            self.report.tools["ok" if event["ok"] else "failed"] += 1
        elif kind == "assistant_end":
            sent.finish = event["finish_reason"]
            self.report.finishes[sent.finish] += 1

    def finished(self, sent: Sent, started: float) -> None:
        self.report.runs += 1
        self.report.latency_ms.append((time.perf_counter() - started) * 1000)

    async def upload(self) -> str:
        async with httpx.AsyncClient(base_url=self.api.server.url + "/api/v1", timeout=60) as http:
            answer = await http.post(
                f"/sessions/{self.session_id}/files",
                files={"file": ("notes.txt", b"some notes for the model " * 20, "text/plain")},
                headers={"Authorization": f"Bearer {self.api.token}"},
            )
            answer.raise_for_status()
            file_id: str = answer.json()["id"]
            return file_id


async def history(api: ChinwagApi, session_id: str) -> list[dict[str, Any]]:
    items: list[dict[str, Any]] = []
    async with httpx.AsyncClient(base_url=api.server.url + "/api/v1", timeout=60) as http:
        headers = {"Authorization": f"Bearer {api.token}"}
        after = 0
        while True:
            page = (
                await http.get(
                    f"/sessions/{session_id}/messages", params={"after": after, "limit": 100}, headers=headers
                )
            ).json()
            items += page["items"]
            if not page["has_more"] or not page["items"]:
                return items
            after = page["items"][-1]["seq"]


async def check(apis: dict[str, ChinwagApi], report: Report) -> dict[str, int]:
    """Lost, duplicated, stuck and mismatched messages: every client's transcript against the database."""
    counts = {"lost": 0, "duplicated": 0, "stuck": 0, "mismatched": 0}
    by_session: dict[str, list[Sent]] = collections.defaultdict(list)
    for session_id, sent in report.sent:
        by_session[session_id].append(sent)
    for session_id, sents in by_session.items():
        api = apis[session_id]
        rows = await history(api, session_id)
        async with httpx.AsyncClient(base_url=api.server.url + "/api/v1", timeout=30) as http:
            session = (
                await http.get(f"/sessions/{session_id}", headers={"Authorization": f"Bearer {api.token}"})
            ).json()
        if session["active_run_id"] is not None:
            counts["stuck"] += 1
        counts["stuck"] += sum(1 for m in rows if m["status"] == "streaming")
        user_ids = collections.Counter(m["client_id"] for m in rows if m["role"] == "user")
        answers = {m["id"]: m for m in rows if m["role"] == "assistant"}
        for sent in sents:
            if sent.run_id is None:
                continue  # refused before it started (busy, say): nothing to find
            if user_ids[sent.client_id] == 0:
                counts["lost"] += 1
            if user_ids[sent.client_id] > 1:
                counts["duplicated"] += 1
            if sent.finish is not None and sent.message_id is not None:
                stored = answers.get(sent.message_id)
                if stored is None:
                    counts["lost"] += 1
                elif stored["content"] != sent.streamed:
                    counts["mismatched"] += 1
    return counts


def percentile(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    return statistics.quantiles(values, n=100, method="inclusive")[int(q) - 1] if len(values) > 1 else values[0]


async def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--users", type=int, default=20)
    parser.add_argument("--seconds", type=float, default=60.0)
    parser.add_argument("--workers", type=int, choices=(1, 2), default=1)
    parser.add_argument("--seed", type=int, default=1)
    args = parser.parse_args(argv)
    rng = random.Random(args.seed)
    report = Report()
    fake_cmd = [sys.executable, "-m", "tests.fakes.mcp_server"]
    with tempfile.TemporaryDirectory() as tmp:
        config = Path(tmp) / "mcp.json"
        server_cfg = {"command": fake_cmd[0], "args": fake_cmd[1:], "env": {"PYTHONPATH": str(ROOT)}, "pool_size": 2}
        config.write_text(json.dumps({"mcpServers": {"tools": server_cfg}}))
        async with FakeOpenAI.start(default=echo(delay=0.02)) as fake, scratch_database() as database_url:
            with children(Path(tmp)) as kids:
                port = free_port()
                env = {
                    "CHINWAG_DATABASE_URL": database_url,
                    "CHINWAG_DATA_DIR": str(Path(tmp) / "data"),
                    "CHINWAG_SECRET_KEY": "bench-" + "x" * 40,
                    "CHINWAG_REGISTRATION": "open",
                    "CHINWAG_MODELS": f"{MODEL}:128000",
                    "CHINWAG_MCP_CONFIG": str(config),
                    "OPENAI_BASE_URL": fake.base_url,
                    "OPENAI_API_KEY": "bench-placeholder",
                }
                unset = tuple(n for n in _FOREIGN_SETTINGS if n not in env)
                if args.workers == 2:
                    env["CHINWAG_REDIS_URL"] = os.environ.get("CHINWAG_BENCH_REDIS_URL", "redis://127.0.0.1:6379/0")
                    env["CHINWAG_REDIS_PREFIX"] = f"chinwag-bench-{uuid.uuid4().hex[:8]}:"
                    unset = tuple(n for n in unset if n != "CHINWAG_REDIS_URL")
                server = kids.start(
                    "chinwag",
                    ["-m", "chinwag", "serve", "--port", str(port), "--workers", str(args.workers)],
                    port=port,
                    env=env,
                    unset=unset,
                    ready_path="/health/ready",
                )
                apis: dict[str, ChinwagApi] = {}
                users = []
                for _ in range(args.users):
                    api = await sign_in(server)
                    [session_id] = await api.create_sessions(1, mcp_servers=["tools"])
                    apis[session_id] = api
                    users.append(User(api, session_id, fake, report, random.Random(rng.random())))
                started = time.monotonic()
                deadline = started + args.seconds
                await asyncio.gather(*(user.chat_for(deadline) for user in users))
                elapsed = time.monotonic() - started
                await asyncio.sleep(2.0)  # runs interrupted or resumed at the very end settle
                counts = await check(apis, report)
    print(f"# chinwag load: {args.users} users, {args.seconds:g} s, {args.workers} worker(s), seed {args.seed}")
    print(
        f"runs completed: {report.runs} in {elapsed:.1f} s ("
        + ", ".join(f"{k} {v}" for k, v in sorted(report.finishes.items()))
        + ")"
    )
    for label, values in (
        ("message -> assistant_end", report.latency_ms),
        ("message -> first delta", report.first_delta_ms),
    ):
        print(f"{label}: p50 {percentile(values, 50):.0f} ms, p99 {percentile(values, 99):.0f} ms")
    print(f"tool calls: {report.tools['ok']} ok, {report.tools['failed']} failed")
    print("errors by kind: " + (", ".join(f"{k} {v}" for k, v in sorted(report.errors.items())) or "none"))
    print(", ".join(f"{k} {v}" for k, v in counts.items()) + "  (pass mark: zero each)")
    if any(counts.values()):
        raise SystemExit(1)


if __name__ == "__main__":
    asyncio.run(main())
