"""History paging at scale, through real HTTP: `python -m bench.history`.

Creates a scratch database (on CHINWAG_BENCH_DATABASE_URL, default postgresql://postgres@127.0.0.1:5432/test),
starts `python -m chinwag serve` on it in a subprocess, registers and signs in one user over the API, then loads
1,000,000 messages across 10,000 sessions of that user with COPY (one session holds 100,000 of them). It measures,
one request at a time over one keep-alive connection, p50/p99 of:
  - the newest page of the 100,000-message session, and `before`/`after` pages at several depths (flat = keyset);
  - the session list: first page, and a page ~9,000 sessions deep (reached by following next_cursor);
  - the active-branch page at depth in a session of as many messages whose tree has many branches (`--branches`,
    each forking from the active branch of the one before), beside the linear session's page at the same depth:
    target p99 within 1.2x of the linear page's, measured in the same turns;
then page requests/s at concurrency 8 against the one server process, with the server's CPU time per request.
It prints EXPLAIN (ANALYZE) of the SQL the server runs for these pages (index scans, no OFFSET, no sort) and a
Markdown table for docs/benchmarks.md. Targets: p99 < 5 ms each; >= 1,500 page requests/s.

The client is a minimal HTTP/1.1 client on asyncio streams, so the numbers are the server's, not httpx's.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import platform
import random
import secrets
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from urllib.parse import quote, urlsplit, urlunsplit

import asyncpg
import orjson

from chinwag.db import messages as messages_db
from chinwag.db import sessions as sessions_db
from chinwag.db.migrate import migrate

DEFAULT_SERVER_DSN = "postgresql://postgres@127.0.0.1:5432/test"
P99_TARGET_MS = 5.0
THROUGHPUT_TARGET = 1500.0
BRANCH_RATIO_TARGET = 1.2
BRANCH_ROW = "active branch at depth, many-branch session"
LINEAR_ROW = "linear page at the same depth"


# --- a minimal HTTP/1.1 client -------------------------------------------------------------------------------------


class HttpClient:
    """One keep-alive connection; GET/POST with JSON; just enough HTTP/1.1 for uvicorn's answers."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, host: str) -> None:
        self._reader = reader
        self._writer = writer
        self._host = host
        self.token: str | None = None

    @classmethod
    async def open(cls, host: str, port: int) -> HttpClient:
        reader, writer = await asyncio.open_connection(host, port)
        sock = writer.get_extra_info("socket")
        if sock is not None:
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        return cls(reader, writer, f"{host}:{port}")

    async def close(self) -> None:
        self._writer.close()
        await self._writer.wait_closed()

    async def request(self, method: str, path: str, body: Any = None) -> tuple[int, bytes]:
        lines = [f"{method} {path} HTTP/1.1", f"Host: {self._host}"]
        if self.token is not None:
            lines.append(f"Authorization: Bearer {self.token}")
        payload = b""
        if body is not None:
            payload = orjson.dumps(body)
            lines += ["Content-Type: application/json", f"Content-Length: {len(payload)}"]
        self._writer.write(("\r\n".join(lines) + "\r\n\r\n").encode() + payload)
        head = await self._reader.readuntil(b"\r\n\r\n")
        status = int(head[9:12])
        length = 0
        for line in head.split(b"\r\n")[1:]:
            name, _, value = line.partition(b":")
            if name.strip().lower() == b"content-length":
                length = int(value)
        data = await self._reader.readexactly(length) if length else b""
        return status, data

    async def get_json(self, path: str) -> Any:
        status, data = await self.request("GET", path)
        if status != 200:
            raise RuntimeError(f"GET {path}: {status} {data[:300]!r}")
        return orjson.loads(data)


# --- the scratch database and the server -------------------------------------------------------------------------


def _with_database(dsn: str, name: str) -> str:
    return urlunsplit(urlsplit(dsn)._replace(path=f"/{name}"))


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


@dataclass
class Server:
    process: subprocess.Popen[bytes]
    port: int
    log: Path

    def cpu_seconds(self) -> float:
        """User + system CPU time of the server process so far."""
        fields = Path(f"/proc/{self.process.pid}/stat").read_text().rsplit(")", 1)[1].split()
        ticks = os.sysconf("SC_CLK_TCK")
        return (int(fields[11]) + int(fields[12])) / ticks


async def start_server(dsn: str, data_dir: Path) -> Server:
    port = _free_port()
    log = data_dir / "server.log"
    env = {
        **os.environ,
        "CHINWAG_DATABASE_URL": dsn,
        "CHINWAG_DATA_DIR": str(data_dir),
        "CHINWAG_SECRET_KEY": secrets.token_urlsafe(48),
        "CHINWAG_REGISTRATION": "open",
        "CHINWAG_ACCESS_TOKEN_TTL_S": "7200",
        "CHINWAG_LOG_LEVEL": os.environ.get("CHINWAG_LOG_LEVEL", "WARNING"),
    }
    with log.open("wb") as out:
        process = subprocess.Popen(
            [sys.executable, "-m", "chinwag", "serve", "--host", "127.0.0.1", "--port", str(port)],
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
        )
    server = Server(process=process, port=port, log=log)
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"the server exited with {process.returncode}:\n{log.read_text()}")
        try:
            client = await HttpClient.open("127.0.0.1", port)
        except OSError:
            await asyncio.sleep(0.1)
            continue
        try:
            status, _ = await client.request("GET", "/health/ready")
        finally:
            await client.close()
        if status == 200:
            return server
        await asyncio.sleep(0.1)
    process.terminate()
    raise RuntimeError(f"the server did not become ready:\n{log.read_text()}")


def stop_server(server: Server) -> None:
    server.process.terminate()
    try:
        server.process.wait(timeout=15)
    except subprocess.TimeoutExpired:
        server.process.kill()
        server.process.wait()


# --- the data ----------------------------------------------------------------------------------------------------


@dataclass
class Dataset:
    user_id: uuid.UUID
    session_ids: list[uuid.UUID]
    big_session: uuid.UUID
    big_count: int
    counts: list[int] = field(default_factory=list)
    branchy_session: uuid.UUID | None = None
    branch_path: list[int] = field(default_factory=list)
    """The seqs of the branchy session's active branch, root to leaf."""


def _texts(rng: random.Random, n: int = 2000) -> list[str]:
    """Message bodies: user turns of 8-25 words, assistant turns of 30-120 (about 300 characters on average)."""
    syllables = ["ka", "lo", "mi", "ren", "to", "sa", "vel", "di", "no", "pra", "qui", "zo", "ber", "la", "tem"]
    words = ["".join(rng.choices(syllables, k=rng.randint(1, 4))) for _ in range(600)]
    texts = []
    for i in range(n):
        size = rng.randint(8, 25) if i % 2 == 0 else rng.randint(30, 120)
        texts.append(" ".join(rng.choices(words, k=size)).capitalize() + ".")
    return texts


def plan_counts(sessions: int, messages: int, big: int) -> list[int]:
    """Messages per session: the first holds `big`, the rest share the remainder as evenly as possible."""
    rest, extra = divmod(messages - big, sessions - 1)
    return [big] + [rest + (1 if i < extra else 0) for i in range(sessions - 1)]


async def _drop_indexes(conn: asyncpg.Connection, table: str) -> list[str]:
    """Drop the table's indexes and unique/primary constraints; return the statements that rebuild them."""
    constraints = await conn.fetch(
        "SELECT conname, pg_get_constraintdef(oid) AS def FROM pg_constraint"
        " WHERE conrelid = $1::regclass AND contype IN ('p', 'u')",
        table,
    )
    names = {r["conname"] for r in constraints}
    indexes = await conn.fetch("SELECT indexname, indexdef FROM pg_indexes WHERE tablename = $1", table)
    rebuild = [f"ALTER TABLE {table} ADD CONSTRAINT {r['conname']} {r['def']}" for r in constraints]
    rebuild += [r["indexdef"] for r in indexes if r["indexname"] not in names]
    for r in constraints:
        await conn.execute(f"ALTER TABLE {table} DROP CONSTRAINT {r['conname']}")
    for r in indexes:
        if r["indexname"] not in names:
            await conn.execute(f"DROP INDEX {r['indexname']}")
    return rebuild


async def load(dsn: str, user_id: uuid.UUID, *, sessions: int, messages: int, big: int, model: str) -> Dataset:
    rng = random.Random(1234)
    counts = plan_counts(sessions, messages, big)
    session_ids = [uuid.UUID(int=rng.getrandbits(128), version=4) for _ in range(sessions)]
    now = datetime.now(UTC)
    conn = await asyncpg.connect(dsn)
    try:
        await conn.execute("SET synchronous_commit = off")
        await conn.execute("SET maintenance_work_mem = '512MB'")
        t0 = time.perf_counter()
        await conn.copy_records_to_table(
            "sessions",
            columns=["id", "user_id", "title", "model", "pinned", "message_count", "created_at", "updated_at"],
            records=(
                (
                    sid,
                    user_id,
                    f"Session {i}",
                    model,
                    1 <= i <= 10,  # ten pinned sessions head the list
                    counts[i],
                    now - timedelta(days=30),
                    now - timedelta(seconds=i),
                )
                for i, sid in enumerate(session_ids)
            ),
        )
        rebuild = await _drop_indexes(conn, "messages")
        texts = _texts(rng)

        def rows() -> Iterator[tuple[uuid.UUID, int, str, str]]:
            n = len(texts)
            for i, sid in enumerate(session_ids):
                for seq in range(1, counts[i] + 1):
                    yield sid, seq, "user" if seq % 2 else "assistant", texts[(i * 31 + seq) % n]

        await conn.copy_records_to_table("messages", columns=["session_id", "seq", "role", "content"], records=rows())
        t1 = time.perf_counter()
        for statement in rebuild:
            await conn.execute(statement)
        t2 = time.perf_counter()
        await conn.execute("VACUUM (ANALYZE) sessions")
        await conn.execute("VACUUM (ANALYZE) messages")
        t3 = time.perf_counter()
        print(f"loaded {sessions:,} sessions and {messages:,} messages with COPY in {t1 - t0:.1f} s;")
        print(f"  indexes rebuilt in {t2 - t1:.1f} s, VACUUM ANALYZE in {t3 - t2:.1f} s")
    finally:
        await conn.close()
    return Dataset(user_id=user_id, session_ids=session_ids, big_session=session_ids[0], big_count=big, counts=counts)


def branch_tree(branches: int, size: int, seed: int = 99) -> tuple[list[int | None], list[int]]:
    """Parents (index seq - 1) of `branches` chains of `size` messages: the first from the root, each next one forking
    from a random message of the branch active before it; and the path of the newest (the active) branch."""
    rng = random.Random(seed)
    parents: list[int | None] = []
    path: list[int] = []
    for branch in range(branches):
        fork = 0 if branch == 0 else rng.randint(len(path) // 4, len(path) * 3 // 4)
        path = path[:fork]
        for _ in range(size):
            parents.append(path[-1] if path else None)
            path.append(len(parents))
    return parents, path


async def load_branchy(
    dsn: str, user_id: uuid.UUID, *, branches: int, size: int, model: str
) -> tuple[uuid.UUID, list[int]]:
    """One session of `branches * size` messages in many branches, its flags set as the server keeps them."""
    parents, path = branch_tree(branches, size)
    on_path = set(path)
    sid = uuid.uuid4()
    texts = _texts(random.Random(5))
    conn = await asyncpg.connect(dsn)
    try:
        await conn.execute("SET synchronous_commit = off")
        t0 = time.perf_counter()
        await conn.execute(
            "INSERT INTO sessions (id, user_id, title, model, message_count, leaf_seq) VALUES ($1, $2, $3, $4, $5, $6)",
            sid,
            user_id,
            "Many branches",
            model,
            len(parents),
            path[-1],
        )
        await conn.copy_records_to_table(
            "messages",
            columns=["session_id", "seq", "parent_seq", "role", "content", "on_branch"],
            records=(
                (sid, seq, parent or 0, "user" if seq % 2 else "assistant", texts[seq % len(texts)], seq in on_path)
                for seq, parent in enumerate(parents, start=1)
            ),
        )
        await conn.execute("VACUUM (ANALYZE) messages")
        print(
            f"loaded {len(parents):,} messages in {branches} branches (active branch: {len(path):,} deep)"
            f" in {time.perf_counter() - t0:.1f} s"
        )
    finally:
        await conn.close()
    return sid, path


# --- measuring ---------------------------------------------------------------------------------------------------


@dataclass
class Result:
    name: str
    p50_ms: float
    p99_ms: float
    bytes: int
    target: str = f"p99 < {P99_TARGET_MS:g} ms"

    @property
    def ok(self) -> bool:
        return self.p99_ms < P99_TARGET_MS


def _percentile(samples: list[float], q: float) -> float:
    ordered = sorted(samples)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


async def measure(client: HttpClient, rows: list[tuple[str, str]], *, requests: int, warmup: int) -> list[Result]:
    """Time `requests` GETs of each (name, path) row, one at a time, after `warmup` untimed ones. The rows take turns
    of 25 requests, so that load from other programs on the machine lands on each row alike."""
    samples: dict[str, list[float]] = {name: [] for name, _ in rows}
    sizes: dict[str, int] = {}
    for name, path in rows:
        for _ in range(warmup):
            status, data = await client.request("GET", path)
            if status != 200:
                raise RuntimeError(f"{name}: {status} {data[:300]!r}")
    turn = 25
    for _ in range(0, requests, turn):
        for name, path in rows:
            for _ in range(turn):
                t0 = time.perf_counter_ns()
                status, data = await client.request("GET", path)
                samples[name].append((time.perf_counter_ns() - t0) / 1e6)
                if status != 200:
                    raise RuntimeError(f"{name}: {status} {data[:300]!r}")
                sizes[name] = len(data)
    return [
        Result(name, statistics.median(samples[name]), _percentile(samples[name], 0.99), sizes[name])
        for name, _ in rows
    ]


def _proc_cpu_seconds(pid: int) -> float:
    """User + system CPU time of a process so far (0 if it is gone)."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _machine_busy_seconds() -> float:
    """CPU seconds spent by every process on the machine so far (all cores, idle and iowait excluded)."""
    values = [int(v) for v in Path("/proc/stat").read_text().splitlines()[0].split()[1:]]
    return (sum(values[:8]) - values[3] - values[4]) / os.sysconf("SC_CLK_TCK")


@dataclass
class Load:
    rps: float
    p50_ms: float
    p99_ms: float
    server_cpu_ms: float  # per request, the chinwag process
    db_cpu_ms: float  # per request, the PostgreSQL backends serving it
    client_cpu_ms: float  # per request, this benchmark's client
    other_cpu_ms: float  # per request, everything else on the machine meanwhile


async def throughput(
    port: int, token: str, paths: list[str], *, concurrency: int, seconds: float, server: Server, dsn: str
) -> Load:
    """Requests/s with `concurrency` connections for `seconds`: latency, and where the machine's CPU went."""
    clients = [await HttpClient.open("127.0.0.1", port) for _ in range(concurrency)]
    for c in clients:
        c.token = token
    samples: list[float] = []
    stop = 0.0

    async def worker(c: HttpClient, seed: int) -> int:
        rng = random.Random(seed)
        done = 0
        while time.perf_counter() < stop:
            t0 = time.perf_counter_ns()
            status, data = await c.request("GET", rng.choice(paths))
            samples.append((time.perf_counter_ns() - t0) / 1e6)
            if status != 200:
                raise RuntimeError(f"{status} {data[:300]!r}")
            done += 1
        return done

    for c in clients:  # warm every connection of the server's pool
        await c.request("GET", paths[0])
    conn = await asyncpg.connect(dsn)
    try:
        backends = [
            r["pid"]
            for r in await conn.fetch(
                "SELECT pid FROM pg_stat_activity WHERE datname = current_database() AND pid <> pg_backend_pid()"
            )
        ]
    finally:
        await conn.close()
    server0, client0, machine0 = server.cpu_seconds(), time.process_time(), _machine_busy_seconds()
    db0 = {pid: _proc_cpu_seconds(pid) for pid in backends}
    t0 = time.perf_counter()
    stop = t0 + seconds
    done = sum(await asyncio.gather(*(worker(c, i) for i, c in enumerate(clients))))
    elapsed = time.perf_counter() - t0
    server_cpu, client_cpu = server.cpu_seconds() - server0, time.process_time() - client0
    # Only backends alive throughout count (one that exited meanwhile, such as a closed admin connection, reads 0).
    db1 = {pid: _proc_cpu_seconds(pid) for pid in backends}
    db_cpu = sum(db1[pid] - db0[pid] for pid in backends if db1[pid] >= db0[pid] > 0)
    other = _machine_busy_seconds() - machine0 - server_cpu - client_cpu - db_cpu
    for c in clients:
        await c.close()
    per = 1000 / done
    return Load(
        rps=done / elapsed,
        p50_ms=statistics.median(samples),
        p99_ms=_percentile(samples, 0.99),
        server_cpu_ms=server_cpu * per,
        db_cpu_ms=db_cpu * per,
        client_cpu_ms=client_cpu * per,
        other_cpu_ms=max(0.0, other) * per,
    )


# --- EXPLAIN -----------------------------------------------------------------------------------------------------


async def explain(dsn: str, data: Dataset, deep_key: sessions_db.ListKey) -> list[str]:
    """EXPLAIN (ANALYZE) each query behind the pages measured; returns the problems found (seq scans, sorts)."""
    queries: list[tuple[str, str, tuple[Any, ...]]] = [
        ("newest page (ownership joined)", messages_db.PAGE_NEWEST, (data.big_session, data.user_id, 51)),
        ("before seq 50,000", messages_db.PAGE_BEFORE, (data.big_session, data.user_id, 50_000, 51)),
        ("before seq 1,000", messages_db.PAGE_BEFORE, (data.big_session, data.user_id, 1_000, 51)),
        ("after seq 50,000", messages_db.PAGE_AFTER, (data.big_session, data.user_id, 50_000, 51)),
        (
            "active branch, before its middle",
            messages_db.PAGE_BEFORE,
            (data.branchy_session, data.user_id, data.branch_path[len(data.branch_path) // 2], 51),
        ),
        ("session list, first page", sessions_db.LIST_FIRST, (data.user_id, 51)),
        ("session list, deep page", sessions_db.LIST_AFTER, (data.user_id, *deep_key, 51)),
    ]
    problems = []
    conn = await asyncpg.connect(dsn)
    try:
        for name, sql, args in queries:
            plan = [r[0] for r in await conn.fetch("EXPLAIN (ANALYZE, BUFFERS, COSTS OFF) " + sql, *args)]
            print(f"\n-- {name}\n{sql}\n" + "\n".join("   " + line for line in plan))
            text = "\n".join(plan)
            if "Seq Scan" in text or "Sort" in text or "OFFSET" in sql.upper() or "Index" not in text:
                problems.append(name)
    finally:
        await conn.close()
    return problems


# --- main --------------------------------------------------------------------------------------------------------


def _machine() -> str:
    model = "unknown CPU"
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        if line.startswith("model name"):
            model = line.split(":", 1)[1].strip()
            break
    return f"{os.cpu_count()} CPUs ({model}), Python {platform.python_version()}, {platform.system()}"


async def run(args: argparse.Namespace) -> int:
    server_dsn = os.environ.get("CHINWAG_BENCH_DATABASE_URL", DEFAULT_SERVER_DSN)
    name = f"chinwag_bench_{uuid.uuid4().hex[:10]}"
    admin = await asyncpg.connect(server_dsn)
    try:
        await admin.execute(f'CREATE DATABASE "{name}"')
        pg_version = await admin.fetchval("SHOW server_version")
    finally:
        await admin.close()
    dsn = _with_database(server_dsn, name)
    print(f"scratch database {name} on {urlsplit(server_dsn).hostname}")
    server: Server | None = None
    try:
        conn = await asyncpg.connect(dsn)
        try:
            await migrate(conn)
        finally:
            await conn.close()
        with tempfile.TemporaryDirectory(prefix="chinwag-bench-") as tmp:
            server = await start_server(dsn, Path(tmp))
            client = await HttpClient.open("127.0.0.1", server.port)
            email = f"bench-{uuid.uuid4().hex[:8]}@example.com"
            status, body = await client.request("POST", "/api/v1/auth/register", {"email": email, "password": "x" * 16})
            assert status == 201, body
            status, body = await client.request("POST", "/api/v1/auth/login", {"email": email, "password": "x" * 16})
            assert status == 200, body
            tokens = orjson.loads(body)
            client.token = tokens["access_token"]
            config = await client.get_json("/api/v1/config")
            model = next(m["id"] for m in config["models"] if m["default"])

            data = await load(
                dsn,
                uuid.UUID(tokens["user"]["id"]),
                sessions=args.sessions,
                messages=args.messages,
                big=args.big,
                model=model,
            )
            data.branchy_session, data.branch_path = await load_branchy(
                dsn, data.user_id, branches=args.branches, size=args.big // args.branches, model=model
            )
            # The server closes idle keep-alive connections after a few seconds: the load took longer than that.
            await client.close()
            client = await HttpClient.open("127.0.0.1", server.port)
            client.token = tokens["access_token"]
            big = f"/api/v1/sessions/{data.big_session}/messages"
            small = f"/api/v1/sessions/{data.session_ids[len(data.session_ids) // 2]}/messages"

            # A cursor about 90% down the session list, reached the way a client would.
            cursor = None
            walked = 0
            while walked < max(100, args.sessions * 9 // 10 // 100 * 100):
                page = await client.get_json("/api/v1/sessions?limit=100" + (f"&cursor={cursor}" if cursor else ""))
                walked += len(page["items"])
                cursor = page["next_cursor"]
            last = page["items"][-1]
            deep_key = (last["pinned"], datetime.fromisoformat(last["updated_at"]), uuid.UUID(last["id"]))

            rows = [("newest page, 100k-message session", f"{big}?limit=50")]
            rows += [
                (f"before seq {depth:,}", f"{big}?limit=50&before={depth}")
                for depth in (99_950, 75_000, 50_000, 25_000, 1_000)
            ]
            # The branchy session's active branch at about the depth of the linear rows beside it (same turns).
            branchy = f"/api/v1/sessions/{data.branchy_session}/messages"
            path = data.branch_path
            linear_depth = min(len(path) // 2, args.big // 2)
            rows += [
                (BRANCH_ROW, f"{branchy}?limit=50&before={path[linear_depth]}"),
                (LINEAR_ROW, f"{big}?limit=50&before={linear_depth + 1}"),
                ("active branch, newest page", f"{branchy}?limit=50"),
            ]
            rows += [
                ("after seq 50,000", f"{big}?limit=50&after=50000"),
                ("newest page, 90-message session", f"{small}?limit=50"),
                ("session list, first page", "/api/v1/sessions?limit=50"),
                (
                    f"session list, page {walked:,} sessions deep",
                    f"/api/v1/sessions?limit=50&cursor={quote(cursor or '')}",
                ),
            ]
            # The floors in the same turns: what any request costs here, then any authenticated one.
            rows += [("floor: GET /health/live", "/health/live"), ("floor: GET /api/v1/auth/me", "/api/v1/auth/me")]
            results = await measure(client, rows, requests=args.requests, warmup=args.warmup)
            for r in results:
                if r.name.startswith("floor:"):
                    r.target = "(floor)"
            await client.close()

            rng = random.Random(7)
            mix = [f"{big}?limit=50"] + [f"{big}?limit=50&before={rng.randint(51, data.big_count)}" for _ in range(500)]
            runs = {}
            # The floors, measured in the same run: the framework alone, then the framework plus authentication.
            for label, paths in [
                ("GET /health/live (no auth, no query): the floor", ["/health/live"]),
                ("GET /api/v1/auth/me (auth only)", ["/api/v1/auth/me"]),
                ("history pages, random depths (limit 50)", mix),
            ]:
                runs[label] = await throughput(
                    server.port,
                    tokens["access_token"],
                    paths,
                    concurrency=args.concurrency,
                    seconds=args.seconds,
                    server=server,
                    dsn=dsn,
                )
            problems = await explain(dsn, data, deep_key)
    finally:
        if server is not None:
            stop_server(server)
        if not args.keep:
            admin = await asyncpg.connect(server_dsn)
            try:
                await admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
            finally:
                await admin.close()

    print()
    print(f"Machine: {_machine()}; PostgreSQL {pg_version} on the same machine; {datetime.now(UTC):%Y-%m-%d %H:%M} UTC")
    print(
        f"Data: {args.messages:,} messages in {args.sessions:,} sessions of one user (one session with {args.big:,});"
        f" {args.requests:,} timed requests per row, one at a time over one keep-alive connection, rows taking turns"
        " of 25, access-token auth."
    )
    print()
    print("| request (limit 50) | p50 ms | p99 ms | bytes | target | |")
    print("| --- | ---: | ---: | ---: | --- | --- |")
    for r in results:
        verdict = "" if r.target == "(floor)" else ("ok" if r.ok else "MISSED")
        print(f"| {r.name} | {r.p50_ms:.2f} | {r.p99_ms:.2f} | {r.bytes:,} | {r.target} | {verdict} |")
    print()
    print(
        f"| at concurrency {args.concurrency}, one server process | req/s | p50 ms | p99 ms |"
        " CPU ms/request: server | PostgreSQL | client | rest of the machine |"
    )
    print("| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: |")
    for label, run_load in runs.items():
        print(
            f"| {label} | {run_load.rps:,.0f} | {run_load.p50_ms:.2f} | {run_load.p99_ms:.2f}"
            f" | {run_load.server_cpu_ms:.2f}"
            f" | {run_load.db_cpu_ms:.2f} | {run_load.client_cpu_ms:.2f} | {run_load.other_cpu_ms:.2f} |"
        )
    by_name = {r.name: r for r in results}
    ratio = by_name[BRANCH_ROW].p99_ms / by_name[LINEAR_ROW].p99_ms
    print(
        f"\nactive-branch page p99 / linear page p99 at the same depth: {ratio:.2f}x"
        f" (target <= {BRANCH_RATIO_TARGET:g}x: {'ok' if ratio <= BRANCH_RATIO_TARGET else 'MISSED'})"
    )
    floor = runs["GET /health/live (no auth, no query): the floor"].rps
    pages = runs["history pages, random depths (limit 50)"]
    print(
        f"\nhistory pages: {pages.rps:,.0f} req/s (target >= {THROUGHPUT_TARGET:,.0f}:"
        f" {'ok' if pages.rps >= THROUGHPUT_TARGET else 'MISSED'}); {pages.rps / floor:.0%} of the bare framework"
        f" floor ({floor:,.0f} req/s) measured in the same run"
    )
    print()
    print(
        "EXPLAIN: "
        + ("every query is an index scan with no sort and no OFFSET" if not problems else f"CHECK {problems}")
    )
    return 0 if not problems else 1


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sessions", type=int, default=10_000)
    parser.add_argument("--messages", type=int, default=1_000_000)
    parser.add_argument("--big", type=int, default=100_000, help="messages in the one big session")
    parser.add_argument(
        "--branches", type=int, default=50, help="branches of the many-branch session (of --big messages)"
    )
    parser.add_argument("--requests", type=int, default=2000, help="timed requests per measured row")
    parser.add_argument("--warmup", type=int, default=200)
    parser.add_argument("--concurrency", type=int, default=8)
    parser.add_argument("--seconds", type=float, default=10.0, help="length of the throughput run")
    parser.add_argument("--keep", action="store_true", help="keep the scratch database")
    sys.exit(asyncio.run(run(parser.parse_args())))


if __name__ == "__main__":
    main()
