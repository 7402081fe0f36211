"""Chat runs: start one (the session's run slot, idempotent `client_id`, the user message persisted BEFORE
`user_message` is published), interrupt it from any socket, tell a socket what is running, and recover after a crash.

Knows agents, not sockets: the run itself is `run_task.ChatRun`, a task owned by the server's `TaskSupervisor`.

With `CHINWAG_REDIS_URL` the bus and the run buffers (made by the lifespan, `websocket.fanout`) are Redis ones, so
several workers or hosts share them; the run slot and `active_run` come from PostgreSQL, which every worker agrees
on. Each process has an `instance_id` (kept in the data dir across restarts, `services.instance`), recorded as the
owner of the runs it executes: their lease, stamped every `run_heartbeat_s`. A sweep every `run_sweep_s` ends the
runs whose stamp is older than `run_stale_s` (their process died) and tells their sockets, on any host, through the
bus (`services.dead_runs`); a process that starts again ends the runs of its own previous life at once.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from dataclasses import dataclass

from chinwag.config import Settings
from chinwag.db import messages as messages_db
from chinwag.db import runs as runs_db
from chinwag.errors import Busy, NotFound, RateLimited, ServiceUnavailable
from chinwag.schemas.sessions import Session
from chinwag.services.agent_builder import RunDeps
from chinwag.services.branches import BranchStart, Claimed
from chinwag.services.branches import claim as claim_branch_run
from chinwag.services.dead_runs import tell_dead_runs
from chinwag.services.file_context import check_file_ids
from chinwag.services.images import check_images
from chinwag.services.instance import claim_instance_id
from chinwag.services.model_fallback import with_offered_model
from chinwag.services.postgres_session import PostgresSession
from chinwag.services.rate_limit import RateLimiter, retry_after_seconds
from chinwag.services.run_inputs import read_run_inputs, settle
from chinwag.services.run_task import ChatRun
from chinwag.services.session_service import SessionService
from chinwag.services.token_aware_session import INTERRUPTED_OUTPUT
from chinwag.websocket.bus import RunInterrupts
from chinwag.websocket.events import UserMessageEvent
from chinwag.websocket.runs import RunBuffers, RunChannel, TaskSupervisor

logger = logging.getLogger(__name__)

DELETE_WAIT_S = 10.0
SHUTTING_DOWN = "The server is shutting down: send the message again in a moment."


@dataclass(frozen=True, slots=True)
class LiveRun:
    run: ChatRun
    task: asyncio.Task[None]


@dataclass(frozen=True, slots=True)
class ActiveRunInfo:
    run_id: str
    last_seq: int


async def _allowed() -> bool:
    return True


class ChatService:
    """Starts and stops runs; one per app, made by the lifespan."""

    def __init__(
        self,
        deps: RunDeps,
        *,
        supervisor: TaskSupervisor,
        limiter: RateLimiter | None = None,
        instance_id: str | None = None,
        shared: bool = False,
    ) -> None:
        self.deps = deps
        self.supervisor = supervisor
        self.limiter = limiter
        self.instance_id = instance_id or uuid.uuid4().hex
        """This process, as the owner of its runs in PostgreSQL."""
        self.shared = shared
        """Other processes may run chats on this database (Redis is configured): recovery ends stale runs only."""
        self.live: dict[str, LiveRun] = {}
        """The runs whose task runs in this process (the ones its heartbeat vouches for)."""

    @classmethod
    @contextlib.asynccontextmanager
    async def open(
        cls, deps: RunDeps, *, supervisor: TaskSupervisor, limiter: RateLimiter | None = None
    ) -> AsyncIterator[ChatService]:
        """For the lifespan: recovery of what a dead process left, the heartbeat of this process's runs, and at the
        end every run stopped and recorded as interrupted (before the lifespan closes the bus, Redis and the
        pool)."""
        with claim_instance_id(deps.settings.data_dir) as instance_id:
            chat = cls(
                deps,
                supervisor=supervisor,
                limiter=limiter,
                instance_id=instance_id,
                shared=bool(deps.settings.redis_url),
            )
            await chat.recover()
            keeper = asyncio.create_task(chat._keep_alive(), name="chat-heartbeat")
            try:
                yield chat
            finally:
                try:
                    await chat.aclose()
                finally:
                    keeper.cancel()
                    with contextlib.suppress(asyncio.CancelledError):
                        await keeper

    @property
    def buffers(self) -> RunBuffers:
        """Where sockets replay a run's events from (`resume`)."""
        return self.deps.buffers

    @property
    def settings(self) -> Settings:
        return self.deps.settings

    def _sessions(self) -> SessionService:
        return SessionService(self.deps.pool, self.deps.settings, window=self.deps.llm.catalog.context_window)

    async def start_run(
        self,
        *,
        user_id: str,
        session_id: str,
        content: str,
        client_id: str | None = None,
        file_ids: Sequence[str] = (),
        branch: BranchStart | None = None,
        still_allowed: Callable[[], Awaitable[bool]] | None = None,
    ) -> str | None:
        """Start a run for this user message; returns its id, or None when `client_id` was seen before in the
        session (nothing new starts). `Busy` while another run is active; `NotFound` for a session not the user's;
        `BadRequest` for unknown `file_ids`. The caller has checked the content. With `branch`, the run is an
        `edit` (a new version of a user message, `content`) or a `regenerate` (no new message: `content` unused);
        `BadRequest` when its seq is not a user message on the active branch. `still_allowed` is the caller's
        check of its credential, made alongside the first reads: when it answers False, nothing starts (None)."""
        sessions = self._sessions()
        # Independent reads, at once on separate pool connections; their errors are raised in this order.
        allowed, found, running = await asyncio.gather(
            still_allowed() if still_allowed is not None else _allowed(),
            sessions.get(user_id=user_id, session_id=session_id),
            runs_db.count_running_for_user(self.deps.pool, uuid.UUID(user_id)),
            return_exceptions=True,
        )
        if isinstance(allowed, BaseException):
            raise allowed
        if not allowed:
            return None
        if isinstance(found, BaseException):
            raise found
        session = found
        await check_file_ids(self.deps.pool, session.id, list(file_ids))
        # Before the image check: that asks whether the model the run will use can see images.
        session = await with_offered_model(self.deps, sessions, session, user_id=user_id)
        await check_images(
            self.deps.pool,
            session_id=session.id,
            file_ids=file_ids,
            model=session.model,
            vision=self.deps.llm.catalog.accepts_images(session.model),
        )
        if isinstance(running, BaseException):
            raise running
        self._check_active_runs(running)
        rate_key = await self._count_message(user_id)
        try:
            try:
                run_id = await self._start(
                    session, user_id=user_id, content=content, client_id=client_id, file_ids=file_ids, branch=branch
                )
            except Busy:
                # The slot may be held by a run of ours that ended while the database was away: write those ends
                # now that it answers, and try once more.
                waiting = len(self.deps.pending)
                if waiting == 0 or await self.flush_pending() == waiting:
                    raise
                run_id = await self._start(
                    session, user_id=user_id, content=content, client_id=client_id, file_ids=file_ids, branch=branch
                )
        except BaseException:
            await self._uncount(rate_key)  # refused (busy, say): it does not count
            raise
        if run_id is None:
            await self._uncount(rate_key)  # a duplicate is not a new message
        return run_id

    def _check_active_runs(self, running: int) -> None:
        """`RateLimited` when the user already has `max_active_runs_per_user` runs going (`running`, counted in the
        runs table, which sees every worker's). Two starts at the same instant may both pass: the bound is
        approximate by one, never unbounded."""
        limit = self.deps.settings.max_active_runs_per_user
        if running >= limit:
            raise RateLimited(
                f"At most {limit} runs at once per user: wait for one to end or interrupt it.", retry_after=5
            )

    async def _uncount(self, key: str | None) -> None:
        if key is not None and self.limiter is not None:
            await self.limiter.release(key)

    async def _count_message(self, user_id: str) -> str | None:
        """One more message of this user in the rate limit (`RateLimited` past it); returns the key counted."""
        per_minute = self.deps.settings.chat_messages_per_minute
        if self.limiter is None or per_minute <= 0:
            return None
        key = f"chat:{user_id}"
        wait = await self.limiter.acquire(key, limit=per_minute, window_s=60.0)
        if wait > 0:
            seconds = retry_after_seconds(wait)
            raise RateLimited(f"Too many messages: try again in {seconds} s.", retry_after=seconds)
        return key

    async def _start(
        self,
        session: Session,
        *,
        user_id: str,
        content: str,
        client_id: str | None,
        file_ids: Sequence[str],
        branch: BranchStart | None = None,
    ) -> str | None:
        """Claim the run slot with the user message, announce it (`user_message`; a regenerate has no new one), and
        hand the run to the supervisor. Whatever fails before the run's task owns them is undone by `undo`."""
        if self.supervisor.closing:
            raise ServiceUnavailable(SHUTTING_DOWN)
        async with contextlib.AsyncExitStack() as undo:
            # Subscribed before the run is visible to other sockets (its row), so that no interrupt can be missed.
            interrupts = await RunInterrupts.listen(self.deps.bus, session.id)
            undo.push_async_callback(interrupts.close)
            # The run's reads go out with the claim (no time of their own before the request); its Layer 1 history
            # only when the claim leaves the branch as it is, and the run uses it only if it is still current.
            reads = read_run_inputs(self.deps, session=session, file_ids=file_ids, with_history=branch is None)
            inputs = asyncio.create_task(reads, name=f"run-inputs-{session.id}")
            undo.push_async_callback(settle, inputs)
            claimed = await self._claim_slot(session, content=content, client_id=client_id, branch=branch)
            if claimed is None:
                return None
            record = claimed.run
            undo.push_async_callback(self._unstart, claimed)
            await self.deps.buffers.open(record.id, session.id)
            channel = RunChannel(run_id=record.id, session_id=session.id, buffers=self.deps.buffers, bus=self.deps.bus)
            if branch is None or branch.kind == "edit":
                await channel.emit(UserMessageEvent(message=claimed.message))
            run = ChatRun(
                self.deps,
                user_id=user_id,
                session=session,
                user_message=claimed.message,
                answer=claimed.answer,
                channel=channel,
                interrupts=interrupts,
                inputs=inputs,
                session_versions=claimed.session_versions,
                input_stored=claimed.input_stored,
            )
            task = self.supervisor.spawn(run.run(), name=f"run-{record.id}")
            undo.pop_all()  # the run's task owns its interrupts, reads, buffer and slot now
        self.live[record.id] = LiveRun(run=run, task=task)
        task.add_done_callback(lambda _: self.live.pop(record.id, None))
        logger.info("session %s: run %s started", session.id, record.id)
        return record.id

    async def _claim_slot(
        self, session: Session, *, content: str, client_id: str | None, branch: BranchStart | None = None
    ) -> Claimed | None:
        """The run slot, the user message, the run's assistant message and the session's active run: one statement,
        one round trip (with `branch`, one transaction that changes the branch too). None when `client_id` was seen
        before in the session; `Busy` while another run holds the slot."""
        sid = uuid.UUID(session.id)
        try:
            if branch is not None:
                return await claim_branch_run(
                    self.deps.pool, branch, session_id=sid, client_id=client_id, owner=self.instance_id, content=content
                )
            started = await runs_db.start_with_message(
                self.deps.pool, session_id=sid, client_id=client_id, owner=self.instance_id, content=content
            )
            return Claimed(
                run=started.run,
                message=started.user,
                answer=started.answer,
                input_stored=False,
                session_versions=started.session_versions,
            )
        except LookupError:
            raise NotFound("session not found") from None
        except runs_db.DuplicateClientId:
            logger.info("session %s: client_id seen before: nothing new", session.id)
            return None
        except runs_db.RunSlotTaken:
            # The same client_id again while its run still runs: PostgreSQL may report either index; it is a duplicate.
            if client_id is not None and await runs_db.find_by_client_id(
                self.deps.pool, session_id=sid, client_id=client_id
            ):
                return None
            raise Busy("A run is active in this session: interrupt it first.") from None

    async def _unstart(self, claimed: Claimed) -> None:
        """A run that never got its task: its buffer ends, its assistant message and the run are recorded as
        interrupted, and its slot is freed."""
        run = claimed.run
        await self.deps.buffers.end(run.id)
        await messages_db.set_status(self.deps.pool, message_id=uuid.UUID(claimed.answer.id), status="interrupted")
        await runs_db.finish(
            self.deps.pool,
            run_id=run.id,
            session_id=run.session_id,
            status="interrupted",
            finish_reason="interrupted",
            assistant_message_id=claimed.answer.id,
        )

    async def interrupt(self, *, session_id: str) -> str:
        """Ask the session's active run to stop, wherever it runs; returns its id. `NotFound` if none is active."""
        run_id = await runs_db.active_run_id(self.deps.pool, session_id=session_id)
        if run_id is None:
            raise NotFound("No run is active in this session.")
        await self.deps.bus.interrupt(session_id, run_id)
        return run_id

    async def delete_session(self, sessions: SessionService, *, user_id: str, session_id: str) -> None:
        """Delete a session; a run in it is interrupted first and given `DELETE_WAIT_S` to record its end, so its
        sockets get `assistant_end` (`interrupted`) before the session is gone."""
        await sessions.check_owner(user_id=user_id, session_id=session_id)
        run_id = await runs_db.active_run_id(self.deps.pool, session_id=session_id)
        if run_id is not None:
            await self.deps.bus.interrupt(session_id, run_id)
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(DELETE_WAIT_S):
                    entry = self.live.get(run_id)
                    if entry is not None:
                        await asyncio.wait([entry.task])  # never cancels the run itself
                    # It may run in another process: its slot, freed before its `assistant_end`, says when it ends.
                    while True:
                        if await runs_db.active_run_id(self.deps.pool, session_id=session_id) != run_id:
                            break
                        await asyncio.sleep(0.05)
        await sessions.delete(user_id=user_id, session_id=session_id)

    async def active_run(self, *, session_id: str) -> ActiveRunInfo | None:
        """The session's running run and the seq of its latest event (what `ready.active_run` shows)."""
        run_id = await runs_db.active_run_id(self.deps.pool, session_id=session_id)
        if run_id is None:
            return None
        last_seq = await self.deps.buffers.last_seq(run_id)
        return ActiveRunInfo(run_id=run_id, last_seq=last_seq or 0)

    async def recover(self) -> None:
        """At start-up: what a dead process left running or streaming becomes interrupted.

        Alone on the database (no Redis: one process), every run left running is a dead one's. Shared (Redis),
        other processes may be running chats: only the runs of this process's previous life (same instance id) and
        those whose lease expired are ended, and their sockets on other hosts are told.
        """
        if self.shared:
            await self._end_dead(owner=self.instance_id)
            return
        async with self.deps.pool.acquire() as conn:
            sessions, messages = await runs_db.interrupt_abandoned(conn)
        await self._repair(sessions, messages)

    async def sweep(self, *, stale_s: float | None = None) -> list[str]:
        """End the runs of dead processes (no heartbeat for `stale_s`, default `run_stale_s`) and tell their
        sockets; returns their sessions."""
        return await self._end_dead(stale_s=stale_s)

    async def _end_dead(self, *, stale_s: float | None = None, owner: str | None = None) -> list[str]:
        async with self.deps.pool.acquire() as conn:
            dead = await runs_db.end_dead_runs(
                conn, stale_s=self.settings.run_stale_s if stale_s is None else stale_s, owner=owner
            )
        if not dead:
            return []
        sessions = sorted({run.session_id for run in dead})
        await tell_dead_runs(self.deps, dead)
        await self._repair(sessions, len(dead))
        return sessions

    async def heartbeat(self) -> int:
        """Renew the lease of this process's runs (one UPDATE); returns how many there are. A run that is no longer
        running in the database was ended by another process's sweep (this one looked dead): it stops, silently."""
        if not self.live:
            return 0
        live = list(self.live)
        alive = await runs_db.heartbeat_alive(self.deps.pool, owner=self.instance_id, run_ids=live)
        for run_id in live:
            entry = self.live.get(run_id)
            if run_id not in alive and entry is not None and not entry.run.ending:
                logger.warning("run %s was ended by another process: stopping it", run_id)
                entry.run.abandon()
        return len(alive)

    async def flush_pending(self) -> int:
        """Write the ends of runs that the database missed; returns how many still wait for it."""
        if not self.deps.pending:
            return 0
        return await self.deps.pending.flush(self.deps.pool, counter=self.deps.llm.counter)

    async def _keep_alive(self) -> None:
        """Heartbeat every `run_heartbeat_s`; sweep every `run_sweep_s` when other processes share the database."""
        settings = self.settings
        tick = min(settings.run_heartbeat_s, settings.run_sweep_s)
        # Counted in ticks, not compared with the clock: a sleep may end a hair early, which would skip a sweep.
        sweep_every, beat_every = (
            max(1, round(settings.run_sweep_s / tick)),
            max(1, round(settings.run_heartbeat_s / tick)),
        )
        ticks = 0
        while True:
            await asyncio.sleep(tick)
            ticks += 1
            try:
                await self.flush_pending()
                if ticks % beat_every == 0:
                    await self.heartbeat()
                if self.shared and ticks % sweep_every == 0:
                    await self.sweep()
            except Exception as exc:  # the database may be away for a while: keep trying, never die
                logger.warning("run heartbeat or sweep failed (will retry): %s", exc)

    async def _repair(self, sessions: list[str], messages: int) -> None:
        if sessions or messages:
            logger.warning("marked runs of %d session(s) and %d message(s) as interrupted", len(sessions), messages)
        for session_id in sessions:
            # Their model context may hold a tool call whose output never came: close it.
            store = PostgresSession(self.deps.pool, session_id, counter=self.deps.llm.counter)
            try:
                await store.repair(output=INTERRUPTED_OUTPUT)
            except LookupError:
                continue

    async def aclose(self) -> None:
        """Stop every run (each records itself as interrupted); a last try at the ends the database missed."""
        await self.supervisor.aclose()
        try:
            if await self.flush_pending():
                logger.error("%d run end(s) never reached the database", len(self.deps.pending))
        except Exception as exc:
            logger.error("run ends not recorded at shutdown: %s", exc)
