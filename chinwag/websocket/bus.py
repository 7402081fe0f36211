"""The event bus: how a run's events reach every socket of its session, and interrupts reach the run.

`Bus` is the seam. `InProcessBus` serves one worker: delivery is a synchronous call into each subscriber, in
publish order. A Redis bus (several workers) implements the same protocol with pub/sub: `subscribe` returns once the
subscription is live (so nothing published after it is missed), and handlers are called in per-session order.
Subscribers must not assume that delivery happens inside `publish`.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Protocol, TypeVar

logger = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class Envelope:
    """One frame for a session's sockets. Run events carry `run_id` and `seq` (> 0); others have `seq` 0."""

    session_id: str
    frame: str
    run_id: str | None = None
    seq: int = 0


# Not a frame for clients: tells each socket of the session to check its credential again now (an account was
# disabled, say), rather than at its next periodic check. `Connection.deliver` never sends it on.
RECHECK_CREDENTIALS = "recheck-credentials"

EventHandler = Callable[[Envelope], None]
InterruptHandler = Callable[[str], None]
Unsubscribe = Callable[[], Awaitable[None]]
H = TypeVar("H")


class Bus(Protocol):
    """Fan-out of session events and run interrupts, within one process or across many."""

    async def publish(self, envelope: Envelope) -> None:
        """Deliver to every subscriber of `envelope.session_id`, in publish order."""
        ...

    async def subscribe(self, session_id: str, handler: EventHandler) -> Unsubscribe:
        """Call `handler` for each envelope of the session published from now on, until `await unsubscribe()`."""
        ...

    async def interrupt(self, session_id: str, run_id: str) -> None:
        """Ask the run (wherever it runs) to stop."""
        ...

    async def on_interrupt(self, session_id: str, handler: InterruptHandler) -> Unsubscribe:
        """Call `handler(run_id)` for each interrupt of the session from now on."""
        ...


class InProcessBus:
    """`Bus` for a single worker: subscribers are called synchronously; a failing handler is logged, not spread."""

    def __init__(self) -> None:
        self._events: dict[str, list[EventHandler]] = {}
        self._interrupts: dict[str, list[InterruptHandler]] = {}

    async def publish(self, envelope: Envelope) -> None:
        self.publish_nowait(envelope)

    def publish_nowait(self, envelope: Envelope) -> None:
        for handler in tuple(self._events.get(envelope.session_id, ())):
            try:
                handler(envelope)
            except Exception:
                logger.exception("event handler failed for session %s", envelope.session_id)

    async def subscribe(self, session_id: str, handler: EventHandler) -> Unsubscribe:
        return _add(self._events, session_id, handler)

    async def interrupt(self, session_id: str, run_id: str) -> None:
        for handler in tuple(self._interrupts.get(session_id, ())):
            try:
                handler(run_id)
            except Exception:
                logger.exception("interrupt handler failed for session %s", session_id)

    async def on_interrupt(self, session_id: str, handler: InterruptHandler) -> Unsubscribe:
        return _add(self._interrupts, session_id, handler)

    def subscriber_count(self, session_id: str) -> int:
        return len(self._events.get(session_id, ())) + len(self._interrupts.get(session_id, ()))


def _add(table: dict[str, list[H]], key: str, handler: H) -> Unsubscribe:
    handlers = table.setdefault(key, [])
    handlers.append(handler)

    async def remove() -> None:
        try:
            handlers.remove(handler)
        except ValueError:
            return
        if not handlers and table.get(key) is handlers:
            del table[key]

    return remove


class RunInterrupts:
    """A session's interrupts, heard from before its run is visible to anyone (so none can be missed), handed to
    the run once it exists."""

    def __init__(self) -> None:
        self._unsubscribe: Unsubscribe | None = None
        self._heard: list[str] = []
        self._handler: InterruptHandler | None = None

    @classmethod
    async def listen(cls, bus: Bus, session_id: str) -> RunInterrupts:
        interrupts = cls()
        interrupts._unsubscribe = await bus.on_interrupt(session_id, interrupts._deliver)
        return interrupts

    def _deliver(self, run_id: str) -> None:
        if self._handler is None:
            self._heard.append(run_id)
        else:
            self._handler(run_id)

    def attach(self, handler: InterruptHandler) -> None:
        self._handler = handler
        heard, self._heard = self._heard, []
        for run_id in heard:
            handler(run_id)

    async def close(self) -> None:
        unsubscribe, self._unsubscribe = self._unsubscribe, None
        if unsubscribe is not None:
            await unsubscribe()
