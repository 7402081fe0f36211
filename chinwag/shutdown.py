"""The SIGTERM drain: a restart that loses no answer it can keep.

On SIGTERM (`chinwag serve` only; a test's server never takes over its process's signals):
1. new runs are refused (`error` `unavailable`, `retryable: true`) and `/health/ready` answers 503, so a load
   balancer sends new work elsewhere;
2. runs in flight go on for up to `CHINWAG_SHUTDOWN_GRACE_S` seconds;
3. the runs still going are interrupted: each ends as usual, its sockets get `assistant_end` (`interrupted`);
4. every chat socket is closed with 1012 (service restart) once what was queued for it is sent: clients reconnect,
   elsewhere or here once it is back;
5. then uvicorn's own shutdown runs (the lifespan closes the pool, MCP servers, ...), and `chinwag serve` stops the
   embedded PostgreSQL last.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
from collections.abc import Awaitable, Callable, Iterator
from types import FrameType
from typing import Any

from chinwag.errors import ServiceUnavailable

logger = logging.getLogger(__name__)

CLOSE_SERVICE_RESTART = 1012
INTERRUPTED_END_WAIT_S = 10.0
"""How long interrupted runs get to record their end and tell their sockets."""
SOCKET_FLUSH_WAIT_S = 5.0
"""How long sockets get to send what is queued before the 1012 close."""


class Draining(ServiceUnavailable):
    """The server is restarting: send it again in a moment."""


class Drain:
    """Whether this process is draining, and the drain itself. One per app (`app.state.drain`)."""

    def __init__(self, *, grace_s: float) -> None:
        self.grace_s = grace_s
        self.draining = False
        self._task: asyncio.Task[None] | None = None

    def check(self) -> None:
        """Before a run starts: `Draining` (503 `unavailable`, retryable) once the drain has begun."""
        if self.draining:
            raise Draining("The server is restarting: send the message again in a moment.")

    async def run(
        self,
        *,
        runs: Callable[[], list[tuple[str, asyncio.Task[Any]]]],
        interrupt: Callable[[str], Awaitable[object]],
        close_sockets: Callable[[int, str, float], Awaitable[int]],
    ) -> None:
        """The drain. `runs()`: this process's runs in flight as (session id, task); `interrupt(session_id)` asks
        one to stop; `close_sockets(code, reason, flush_s)` closes every chat socket after what is queued."""
        self.draining = True
        pending = [task for _, task in runs()]
        logger.info("SIGTERM: draining %d run(s) for up to %.0f s", len(pending), self.grace_s)
        if pending:
            _, still = await asyncio.wait(pending, timeout=self.grace_s)
            if still:
                logger.warning("SIGTERM: interrupting %d run(s) still going after the grace period", len(still))
                for session_id, task in runs():
                    if not task.done():
                        with contextlib.suppress(Exception):
                            await interrupt(session_id)
                await asyncio.wait(still, timeout=INTERRUPTED_END_WAIT_S)
        closed = await close_sockets(CLOSE_SERVICE_RESTART, "server restarting: reconnect", SOCKET_FLUSH_WAIT_S)
        logger.info("SIGTERM: runs drained, %d socket(s) closed with 1012; shutting down", closed)

    @contextlib.contextmanager
    def on_sigterm(self, start: Callable[[], Awaitable[None]]) -> Iterator[None]:
        """For the lifespan of `chinwag serve`: SIGTERM runs `start()` (the drain) in the event loop, then hands
        the signal to whoever handled it before (uvicorn, which then shuts down). A second SIGTERM while draining
        is noted and ignored; SIGINT (Ctrl-C) stays uvicorn's: an immediate stop."""
        loop = asyncio.get_running_loop()
        previous = signal.getsignal(signal.SIGTERM)

        def hand_on() -> None:
            signal.signal(signal.SIGTERM, previous)
            if callable(previous):
                previous(signal.SIGTERM, None)

        async def drain_then_exit() -> None:
            try:
                await start()
            except Exception:
                logger.exception("SIGTERM: the drain failed; shutting down")
            finally:
                hand_on()

        def handler(signum: int, frame: FrameType | None) -> None:
            if self._task is not None:
                logger.info("SIGTERM again: already draining")
                return
            loop.call_soon_threadsafe(self._begin, loop, drain_then_exit)

        signal.signal(signal.SIGTERM, handler)
        try:
            yield
        finally:
            if signal.getsignal(signal.SIGTERM) is handler:
                signal.signal(signal.SIGTERM, previous)
            if self._task is not None and not self._task.done():
                self._task.cancel()

    def _begin(self, loop: asyncio.AbstractEventLoop, work: Callable[[], Awaitable[None]]) -> None:
        self.draining = True  # from the moment the signal is seen, before the drain task first runs
        if self._task is None:

            async def main() -> None:
                await work()

            self._task = loop.create_task(main(), name="chinwag-drain")
