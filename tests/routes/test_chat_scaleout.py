"""Scale-out end to end: two chinwag servers (two "workers") on one PostgreSQL, one Redis and one fake model; then
`chinwag serve --workers 2` as a user runs it. No sticky sessions: a socket may land on either."""

from __future__ import annotations

import asyncio
import contextlib
import os
import shutil
import sys
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import asyncpg
import httpx
import psutil
import pytest
from redis.asyncio import Redis
from redis.exceptions import RedisError
from websockets.exceptions import ConnectionClosed

from tests.conftest import REQUIRE_SERVICES, RunningServer, ServerFactory, TestUser, UserFactory, free_port
from tests.fakes.openai_script import say
from tests.fakes.openai_server import FakeOpenAI
from tests.routes.chat_support import Chat, Socket, connect, new_session, run_frames, text_of

ROOT = Path(__file__).resolve().parents[2]
SECRET = "test-secret-" + "x" * 40  # the one server_factory uses
LONG = " ".join(f"w{i}" for i in range(300))


@pytest.fixture
async def fake() -> AsyncIterator[FakeOpenAI]:
    async with FakeOpenAI.start() as server:
        yield server


@pytest.fixture
def prefix() -> str:
    return f"chinwag-test-{uuid.uuid4().hex[:12]}:"


@dataclass
class Pair:
    """One user's session seen from server A and from server B."""

    a: Chat
    b: Chat
    user: TestUser
    start: Any  # starts one more server like these

    @property
    def session_id(self) -> str:
        return self.a.session_id


@pytest.fixture
async def pair(
    fake: FakeOpenAI, server_factory: ServerFactory, user_factory: UserFactory, redis_url: str, prefix: str
) -> Pair:
    async def start() -> RunningServer:
        # No periodic sweep: the tests below sweep by hand, and a background one would race them.
        return await server_factory(
            openai_base_url=fake.base_url,
            models="gpt-4.1-mini:1000000",
            redis_url=redis_url,
            redis_prefix=prefix,
            run_sweep_s=600,
        )

    a, b = await start(), await start()
    user = await user_factory(a)
    session_id = await new_session(b, user)
    return Pair(a=Chat.on(a, user, session_id), b=Chat.on(b, user, session_id), user=user, start=start)


def owner_of(chat: Chat) -> str:
    owner: str = chat.running.app.state.chat.instance_id
    return owner


async def run_owner(db: asyncpg.Connection, run_id: str) -> str:
    owner: str = await db.fetchval("SELECT owner FROM runs WHERE id = $1", uuid.UUID(run_id))
    return owner


async def deltas(sock: Socket, frames: list[dict[str, Any]], count: int) -> None:
    async with asyncio.timeout(15):
        while sum(1 for f in frames if f["type"] == "text_delta") < count:
            frames.append(await sock.recv())


async def test_a_socket_on_a_sees_a_run_started_on_b_frame_for_frame(
    pair: Pair, fake: FakeOpenAI, db: asyncpg.Connection
) -> None:
    fake.script(say("Hello from the other worker, as it streams.", delay=0.005))
    async with connect(pair.a) as on_a, connect(pair.b) as on_b:
        await on_b.send({"type": "message", "content": "hi", "client_id": "c1"})
        from_b = await on_b.until("assistant_end")
        from_a = await on_a.until("assistant_end")
        await on_a.quiet(0.2)
    assert from_a == from_b
    run_id = from_b[0]["run_id"]
    assert [f["seq"] for f in run_frames(from_a, run_id)] == list(range(1, len(from_a) + 1))
    assert text_of(from_a) == "Hello from the other worker, as it streams."
    assert await run_owner(db, run_id) == owner_of(pair.b)
    history = await pair.a.history()
    assert [m["content"] for m in history] == ["hi", "Hello from the other worker, as it streams."]


async def test_an_interrupt_on_a_stops_the_run_on_b(pair: Pair, fake: FakeOpenAI, db: asyncpg.Connection) -> None:
    fake.script(say(LONG, delay=0.02), say("Next answer."))
    async with connect(pair.a) as on_a, connect(pair.b) as on_b:
        await on_b.send({"type": "message", "content": "talk"})
        seen: list[dict[str, Any]] = []
        await deltas(on_a, seen, 3)
        run_id = seen[0]["run_id"]
        assert await run_owner(db, run_id) == owner_of(pair.b)
        await on_a.send({"type": "interrupt"})
        seen += await on_a.until("assistant_end")
        assert seen[-1]["finish_reason"] == "interrupted"
        assert len(text_of(seen)) < len(LONG)  # cut short, not waited out (how fast: bench/, never a timed test)
        assert (await on_b.until("assistant_end"))[-1]["finish_reason"] == "interrupted"
        # The next message works, from either side.
        await on_a.send({"type": "message", "content": "again"})
        again = await on_b.until("assistant_end")
    assert again[-1]["finish_reason"] == "stop"
    assert text_of(again) == "Next answer."
    history = await pair.b.history()
    assert [(m["role"], m["status"]) for m in history] == [
        ("user", "complete"),
        ("assistant", "interrupted"),
        ("user", "complete"),
        ("assistant", "complete"),
    ]
    assert LONG.startswith(history[1]["content"])
    assert history[1]["content"].startswith(text_of(seen))


async def test_ready_on_a_shows_bs_run_and_resume_on_a_replays_then_follows_live(pair: Pair, fake: FakeOpenAI) -> None:
    fake.script(say(LONG, delay=0.01))
    async with connect(pair.b) as on_b:
        await on_b.send({"type": "message", "content": "talk"})
        early: list[dict[str, Any]] = []
        await deltas(on_b, early, 10)
        run_id = early[0]["run_id"]
        async with connect(pair.a) as on_a:
            active = on_a.ready["active_run"]
            assert active is not None
            assert active["run_id"] == run_id
            assert active["last_seq"] >= 10
            await on_a.send({"type": "resume", "run_id": run_id, "after_seq": 2})
            resumed = await on_a.until("assistant_end", timeout=30)
        from_b = early + await on_b.until("assistant_end", timeout=30)
    assert [f["seq"] for f in resumed] == list(range(3, from_b[-1]["seq"] + 1))
    assert resumed == from_b[2:]
    assert text_of(from_b) == LONG


async def test_busy_across_servers(pair: Pair, fake: FakeOpenAI) -> None:
    fake.script(say(LONG, delay=0.02))
    async with connect(pair.a) as on_a, connect(pair.b) as on_b:
        await on_b.send({"type": "message", "content": "talk"})
        await on_b.until("text_delta")
        await on_a.send({"type": "message", "content": "me too"})
        refused = await on_a.until("error")
        assert refused[-1]["code"] == "busy"
        await on_a.send({"type": "interrupt"})
        await on_a.until("assistant_end")
    history = await pair.a.history()
    assert [(m["role"], m["content"]) for m in history][:1] == [("user", "talk")]
    assert len(history) == 2  # "me too" was refused: nothing persisted


async def test_a_stale_run_is_recovered_and_a_live_one_on_the_other_server_is_not(
    pair: Pair, fake: FakeOpenAI, db: asyncpg.Connection, user_factory: UserFactory
) -> None:
    # A run left by a dead process: its heartbeat stopped two minutes ago, its answer half written.
    dead_session = uuid.UUID(await new_session(pair.a.running, pair.user))
    dead_run = await db.fetchval(
        "INSERT INTO runs (session_id, owner, heartbeat_at) VALUES ($1, 'dead-process', now() - interval '2 minutes')"
        " RETURNING id",
        dead_session,
    )
    await db.execute("UPDATE sessions SET active_run_id = $2, message_count = 1 WHERE id = $1", dead_session, dead_run)
    await db.execute(
        "INSERT INTO messages (session_id, seq, role, content, status, run_id)"
        " VALUES ($1, 1, 'assistant', 'half', 'streaming', $2)",
        dead_session,
        dead_run,
    )
    fake.script(say(LONG, delay=0.02))
    async with connect(pair.b) as on_b:
        await on_b.send({"type": "message", "content": "talk"})
        frames = await on_b.until("text_delta")
        live_run = uuid.UUID(frames[0]["run_id"])
        assert await pair.b.running.app.state.chat.heartbeat() == 1
        # A third worker starting now recovers what the dead process left, and nothing of B's.
        await pair.start()
        assert await db.fetchval("SELECT status FROM runs WHERE id = $1", dead_run) == "interrupted"
        assert await db.fetchval("SELECT status FROM messages WHERE run_id = $1", dead_run) == "interrupted"
        assert await db.fetchval("SELECT active_run_id FROM sessions WHERE id = $1", dead_session) is None
        assert await db.fetchval("SELECT status FROM runs WHERE id = $1", live_run) == "running"
        assert await pair.a.running.app.state.chat.sweep() == []
        assert await db.fetchval("SELECT status FROM runs WHERE id = $1", live_run) == "running"
        # Once B's heartbeat is old too (B frozen, say), the sweep of A ends B's run.
        await db.execute("UPDATE runs SET heartbeat_at = now() - interval '1 minute' WHERE id = $1", live_run)
        assert await pair.a.running.app.state.chat.sweep() == [pair.session_id]
        assert await db.fetchval("SELECT status FROM runs WHERE id = $1", live_run) == "interrupted"
        # A's sweep told B's sockets; B's next heartbeat finds its run ended and stops it without a word more.
        frames += await on_b.until("assistant_end", timeout=15)
        assert frames[-1]["finish_reason"] == "interrupted"
        async with asyncio.timeout(15):
            while str(live_run) in pair.b.running.app.state.chat.live:
                await asyncio.sleep(0.1)
        await on_b.quiet(1.0)
        await on_b.send({"type": "interrupt"})
        assert (await on_b.recv())["code"] == "not_found"
        assert await db.fetchval("SELECT status FROM messages WHERE run_id = $1 AND role = 'assistant'", live_run) == (
            "interrupted"
        )


# --- chinwag serve --workers 2 ----------------------------------------------------------------------------------


@contextlib.asynccontextmanager
async def chinwag_workers(
    *, database_dsn: str, redis_url: str, prefix: str, base_url: str, data_dir: Path, port: int
) -> AsyncIterator[asyncio.subprocess.Process]:
    env = {
        **os.environ,
        "CHINWAG_DATABASE_URL": database_dsn,
        "CHINWAG_REDIS_URL": redis_url,
        "CHINWAG_REDIS_PREFIX": prefix,
        "OPENAI_BASE_URL": base_url,
        "CHINWAG_MODELS": "gpt-4.1-mini:1000000",
        "CHINWAG_SECRET_KEY": SECRET,
        "CHINWAG_REGISTRATION": "open",
        "CHINWAG_DATA_DIR": str(data_dir),
        "PYTHONPATH": str(ROOT),
    }
    log = (data_dir / "server.log").open("wb")
    proc = await asyncio.create_subprocess_exec(
        *(sys.executable, "-m", "chinwag", "serve", "--port", str(port), "--workers", "2"),
        env=env,
        stdout=log,
        stderr=log,
        cwd=ROOT,
    )
    try:
        async with httpx.AsyncClient(timeout=60) as c, asyncio.timeout(60):
            while True:
                if proc.returncode is not None:
                    raise AssertionError((data_dir / "server.log").read_text())
                with contextlib.suppress(httpx.TransportError):
                    ready = (await c.get(f"http://127.0.0.1:{port}/health/ready")).status_code == 200
                    if ready and len(psutil.Process(proc.pid).children()) >= 2:
                        break
                await asyncio.sleep(0.1)
        yield proc
    finally:
        if proc.returncode is None:
            proc.terminate()
            try:
                async with asyncio.timeout(20):
                    await proc.wait()
            except TimeoutError:
                proc.kill()
                await proc.wait()
        log.close()


async def test_serve_with_two_workers_shares_a_run_between_sockets_on_either(
    fake: FakeOpenAI, database_dsn: str, db: asyncpg.Connection, redis_url: str, prefix: str, tmp_path: Path
) -> None:
    port = free_port()
    data_dir = tmp_path / "data"
    data_dir.mkdir()
    fake.script(say("Both workers see this.", delay=0.01))
    async with chinwag_workers(
        database_dsn=database_dsn,
        redis_url=redis_url,
        prefix=prefix,
        base_url=fake.base_url,
        data_dir=data_dir,
        port=port,
    ):
        url = f"http://127.0.0.1:{port}"
        email = f"workers-{uuid.uuid4().hex[:8]}@example.com"
        async with httpx.AsyncClient(base_url=url + "/api/v1", timeout=30) as c:
            password = "correct horse battery staple"
            assert (await c.post("/auth/register", json={"email": email, "password": password})).status_code == 201
            tokens = (await c.post("/auth/login", json={"email": email, "password": password})).json()
            headers = {"Authorization": f"Bearer {tokens['access_token']}"}
            session_id = (await c.post("/sessions", json={"title": "w"}, headers=headers)).json()["id"]
        user = TestUser(
            id=tokens["user"]["id"],
            email=email,
            password=password,
            access_token=tokens["access_token"],
            refresh_token=tokens["refresh_token"],
            headers=headers,
        )
        chat = Chat(base_url=url, user=user, session_id=session_id)
        channel = f"{prefix}ev:{session_id}"
        async with contextlib.AsyncExitStack() as stack, Redis.from_url(redis_url) as redis:
            socks: list[Socket] = []
            # Sockets until both workers hold some: each worker subscribes the session's channel once.
            async with asyncio.timeout(30):
                while (await redis.pubsub_numsub(channel))[0][1] < 2:
                    socks.append(await stack.enter_async_context(connect(chat)))
            await socks[-1].send({"type": "message", "content": "hello"})
            seen = [await sock.until("assistant_end") for sock in socks]
        assert all(frames == seen[0] for frames in seen)
        assert text_of(seen[0]) == "Both workers see this."
        assert seen[0][-1]["finish_reason"] == "stop"


# --- Redis goes away and comes back -----------------------------------------------------------------------------


@pytest.fixture
def redis_server_bin(redis_url: str) -> str:
    """The `redis-server` program, to run a Redis this test may stop (never the shared one)."""
    path = shutil.which("redis-server")
    if path is None:
        if REQUIRE_SERVICES:
            pytest.fail("CHINWAG_REQUIRE_SERVICES=1 but redis-server is not installed")
        pytest.skip("redis-server is not installed")
    return path


@contextlib.asynccontextmanager
async def redis_server(program: str, port: int) -> AsyncIterator[asyncio.subprocess.Process]:
    """A Redis of this test's own, on a loopback port, with no persistence."""
    proc = await asyncio.create_subprocess_exec(
        *(program, "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"),
        stdout=asyncio.subprocess.DEVNULL,
        stderr=asyncio.subprocess.DEVNULL,
    )
    try:
        async with Redis(port=port) as probe, asyncio.timeout(10):
            while True:
                with contextlib.suppress(OSError, RedisError):
                    if await probe.ping():
                        break
                await asyncio.sleep(0.05)
        yield proc
    finally:
        if proc.returncode is None:
            proc.kill()
        await proc.wait()


async def test_redis_down_mid_run_ends_it_as_error_and_chat_works_again_once_it_is_back(
    fake: FakeOpenAI,
    server_factory: ServerFactory,
    user_factory: UserFactory,
    db: asyncpg.Connection,
    redis_server_bin: str,
) -> None:
    port = free_port()
    url = f"redis://127.0.0.1:{port}/0"
    fake.script(say(LONG, delay=0.02), say("After the outage."))
    async with redis_server(redis_server_bin, port) as first_redis:
        a = await server_factory(openai_base_url=fake.base_url, models="gpt-4.1-mini:1000000", redis_url=url)
        b = await server_factory(openai_base_url=fake.base_url, models="gpt-4.1-mini:1000000", redis_url=url)
        user = await user_factory(a)
        session_id = await new_session(a, user)
        async with connect(Chat.on(a, user, session_id)) as on_a, connect(Chat.on(b, user, session_id)) as on_b:
            await on_b.send({"type": "message", "content": "talk"})
            seen: list[dict[str, Any]] = []
            await deltas(on_a, seen, 3)
            first_redis.kill()
            await first_redis.wait()
            # The run cannot send its events: it ends, recorded as an error with the text it had.
            async with asyncio.timeout(30):
                while await db.fetchval("SELECT count(*) FROM runs WHERE status = 'running'"):
                    await asyncio.sleep(0.1)
            history = await Chat.on(a, user, session_id).history()
            assert [(m["role"], m["status"]) for m in history] == [("user", "complete"), ("assistant", "error")]
            assert LONG.startswith(history[1]["content"])
            async with redis_server(redis_server_bin, port), Redis(port=port) as redis:
                # Both processes subscribe again by themselves; then a run from B reaches the socket on A.
                async with asyncio.timeout(20):
                    while (await redis.pubsub_numsub(f"chinwag:ev:{session_id}"))[0][1] < 2:
                        await asyncio.sleep(0.1)
                await on_b.send({"type": "message", "content": "again"})
                from_a = await on_a.until("assistant_end", timeout=20)
                from_b = await on_b.until("assistant_end", timeout=20)
    run_id = from_b[-1]["run_id"]
    assert run_frames(from_a, run_id) == run_frames(from_b, run_id)
    assert [f["seq"] for f in run_frames(from_a, run_id)] == list(range(1, len(run_frames(from_a, run_id)) + 1))
    assert text_of(run_frames(from_a, run_id)) == "After the outage."


async def test_each_process_heartbeats_its_runs_and_sweeps_stale_ones_by_itself(
    fake: FakeOpenAI,
    server_factory: ServerFactory,
    user_factory: UserFactory,
    db: asyncpg.Connection,
    redis_url: str,
    prefix: str,
) -> None:
    # The periods shortened (2 s in production); the lease kept long, so that only the stamps set below decide.
    options = {
        "openai_base_url": fake.base_url,
        "redis_url": redis_url,
        "redis_prefix": prefix,
        "run_heartbeat_s": 0.1,
        "run_sweep_s": 0.2,
        "run_stale_s": 45.0,
    }
    a, b = await server_factory(**options), await server_factory(**options)
    user = await user_factory(a)
    dead_session = uuid.UUID(await new_session(a, user))
    fake.script(say(LONG, delay=0.05))
    async with connect(Chat.on(b, user, await new_session(b, user))) as on_b:
        await on_b.send({"type": "message", "content": "talk"})
        live_run = uuid.UUID((await on_b.until("text_delta"))[0]["run_id"])
        dead_run = await db.fetchval(
            "INSERT INTO runs (session_id, owner, heartbeat_at) VALUES ($1, 'gone', now() - interval '1 minute')"
            " RETURNING id",
            dead_session,
        )
        await db.execute("UPDATE runs SET heartbeat_at = now() - interval '30 seconds' WHERE id = $1", live_run)
        async with asyncio.timeout(5):
            while await db.fetchval("SELECT status FROM runs WHERE id = $1", dead_run) == "running":
                await asyncio.sleep(0.05)
            while not await db.fetchval(
                "SELECT now() - heartbeat_at < interval '5 seconds' FROM runs WHERE id = $1", live_run
            ):
                await asyncio.sleep(0.05)  # B stamps its run again
        assert await db.fetchval("SELECT status FROM runs WHERE id = $1", live_run) == "running"
        await on_b.send({"type": "interrupt"})
        assert (await on_b.until("assistant_end"))[-1]["finish_reason"] == "interrupted"


async def test_disabling_a_user_on_a_ends_their_run_and_socket_on_b(
    pair: Pair, fake: FakeOpenAI, user_factory: UserFactory, db: asyncpg.Connection
) -> None:
    # The servers re-check socket credentials only every minute: the disable on A must reach B through Redis.
    admin = await user_factory(pair.a.running, admin=True)
    fake.script(say(" ".join(f"w{i}" for i in range(400)), delay=0.02))
    async with connect(pair.b) as on_b:
        await on_b.send({"type": "message", "content": "go on"})
        await on_b.until("text_delta", timeout=30)
        async with httpx.AsyncClient(base_url=pair.a.base_url + "/api/v1", headers=admin.headers, timeout=60) as c:
            answer = await c.patch(f"/admin/users/{pair.user.id}", json={"disabled": True})
            assert answer.status_code == 200, answer.text
        async with asyncio.timeout(30):
            while True:
                try:
                    await on_b.recv(timeout=30)
                except ConnectionClosed:
                    break
        assert on_b.ws.close_code == 4401
    async with asyncio.timeout(30):
        while True:
            status = await db.fetchval(
                "SELECT status FROM messages WHERE session_id = $1 AND role = 'assistant'", uuid.UUID(pair.session_id)
            )
            if status != "streaming":
                break
            await asyncio.sleep(0.1)
    assert status == "interrupted"
