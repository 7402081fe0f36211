"""`McpPool`: the configured MCP servers, kept running for the life of the app and lent to runs.

A stdio server runs `pool_size` processes, each serving one tool call at a time: a run checks one out per call,
so a few processes serve many concurrent runs; a server marked `stateful` (its process keeps state between calls)
is instead checked out for the whole run. A URL server (streamable HTTP or SSE) has one connection shared by every
run. Each instance has an owner
task that connects it, serves until told to stop (or until it breaks), and cleans up: the SDK's MCP classes need
connect and cleanup in the same task. A server that fails to start or dies is restarted in the background with
backoff and shows up in `status()`; it never takes the other servers or the pool down.

    async with McpPool.start(load_mcp_config(settings.mcp_config)) as pool:
        async with pool.acquire(session.mcp_servers) as tools:
            agent = Agent(..., mcp_servers=tools.servers)
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections import deque
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from typing import Literal

from agents.mcp import MCPServer as SdkMCPServer
from agents.mcp import MCPServerSse, MCPServerStdio, MCPServerStdioParams, MCPServerStreamableHttp
from mcp.types import Tool as MCPTool

from chinwag.mcp.config import McpConfig, ServerConfig, StdioServerConfig
from chinwag.mcp.tools import OUTPUT_CAP_BYTES, McpTools, PooledServer, ServerInstance
from chinwag.observability.observer import NULL_OBSERVER, Observer

logger = logging.getLogger(__name__)

ServerState = Literal["starting", "ready", "restarting", "failed", "disabled"]
SlotState = Literal["starting", "ready", "restarting", "failed"]


@dataclass(frozen=True)
class McpServerStatus:
    """How one configured server is doing, for `/config` and `/health/ready`."""

    name: str
    status: ServerState
    tools: list[str]
    error: str | None = None


@dataclass
class _Slot:
    """One instance position of a server: the owner task's state, kept across restarts."""

    index: int
    state: SlotState = "starting"
    instance: ServerInstance | None = None
    connecting: bool = False
    task: asyncio.Task[None] | None = field(default=None, repr=False)


class _Server:
    """The pool's side of one enabled server: its slots, idle instances (stdio) or shared instance (URL)."""

    def __init__(self, name: str, config: ServerConfig, *, on_change: Callable[[], None]) -> None:
        self.name = name
        self._on_change = on_change
        self.config = config
        self.exclusive = isinstance(config, StdioServerConfig)
        """An instance serves one borrower at a time (stdio)."""
        self.per_call = self.exclusive and not config.stateful
        """Borrowed for each tool call, not for a whole run."""
        self.timeout_s = config.timeout_s
        size = config.pool_size if isinstance(config, StdioServerConfig) else 1
        self.slots = [_Slot(index=i) for i in range(size)]
        self.idle: deque[ServerInstance] = deque()
        self.tools: list[str] = []
        self.tool_defs: list[MCPTool] = []
        self.error: str | None = None
        self._changed = asyncio.Event()

    def changed(self) -> None:
        """Wake every waiter; each looks again at what is available."""
        self._changed.set()
        self._changed = asyncio.Event()
        self._on_change()

    def status(self) -> McpServerStatus:
        states = {slot.state for slot in self.slots}
        status: ServerState = "failed"
        if "ready" in states:
            status = "ready"
        elif "restarting" in states:
            status = "restarting"
        elif "starting" in states:
            status = "starting"
        return McpServerStatus(name=self.name, status=status, tools=list(self.tools), error=self.error)

    @property
    def down(self) -> bool:
        return all(slot.state == "failed" for slot in self.slots)

    def _take_now(self) -> ServerInstance | None:
        if not self.exclusive:
            shared = self.slots[0].instance
            return shared if shared is not None and shared.usable else None
        while self.idle:
            instance = self.idle.popleft()
            if instance.usable:
                return instance
        return None

    async def take(self, *, deadline: float) -> ServerInstance | None:
        """An instance (exclusive for stdio), waiting until `deadline` (monotonic); None if none came or it is down."""
        while True:
            instance = self._take_now()
            if instance is not None:
                return instance
            remaining = deadline - time.monotonic()
            if self.down or remaining <= 0:
                return None
            try:
                async with asyncio.timeout(None if remaining == float("inf") else remaining):
                    await self._changed.wait()
            except TimeoutError:
                return None

    async def wait_ready(self, *, deadline: float) -> bool:
        """Whether an instance is up (busy or not), waiting until `deadline`: a per-call server is lent to a run
        without an instance, which each call then borrows."""
        while True:
            if any(slot.instance is not None and slot.instance.usable for slot in self.slots):
                return True
            remaining = deadline - time.monotonic()
            if self.down or remaining <= 0:
                return False
            try:
                async with asyncio.timeout(remaining):
                    await self._changed.wait()
            except TimeoutError:
                return False

    def give_back(self, instance: ServerInstance) -> None:
        if self.exclusive and instance.usable:
            self.idle.append(instance)
            self.changed()

    def publish(self, slot: _Slot, instance: ServerInstance) -> None:
        slot.instance = instance
        slot.state = "ready"
        self.tools = [tool.name for tool in instance.tools]
        self.tool_defs = list(instance.tools)
        self.error = None
        if self.exclusive:
            self.idle.append(instance)
        self.changed()

    def retire(self, slot: _Slot, instance: ServerInstance) -> None:
        instance.retired = True
        slot.instance = None
        with contextlib.suppress(ValueError):
            self.idle.remove(instance)
        self.changed()


class McpPool:
    """Every configured MCP server, started once and lent to runs. Build it with `McpPool.start(config)`."""

    def __init__(
        self,
        config: McpConfig,
        *,
        output_cap_bytes: int = OUTPUT_CAP_BYTES,
        health_interval_s: float = 10.0,
        connect_timeout_s: float = 30.0,
        max_backoff_s: float = 30.0,
        observer: Observer = NULL_OBSERVER,
    ) -> None:
        self.config = config
        self.observer = observer
        self._output_cap_bytes = output_cap_bytes
        self._health_interval_s = health_interval_s
        self._connect_timeout_s = connect_timeout_s
        self._max_backoff_s = max_backoff_s
        self._changed = asyncio.Event()
        self._servers = {
            name: _Server(name, cfg, on_change=self._notify) for name, cfg in config.servers.items() if cfg.enabled
        }
        self._stopping = asyncio.Event()

    @classmethod
    @contextlib.asynccontextmanager
    async def start(
        cls,
        config: McpConfig,
        *,
        output_cap_bytes: int = OUTPUT_CAP_BYTES,
        health_interval_s: float = 10.0,
        connect_timeout_s: float = 30.0,
        max_backoff_s: float = 30.0,
        observer: Observer = NULL_OBSERVER,
    ) -> AsyncIterator[McpPool]:
        """Start every enabled server in the background; on exit stop them all and wait for their processes."""
        pool = cls(
            config,
            output_cap_bytes=output_cap_bytes,
            health_interval_s=health_interval_s,
            connect_timeout_s=connect_timeout_s,
            max_backoff_s=max_backoff_s,
            observer=observer,
        )
        # One supervisor task owns every owner task, so entering and leaving may happen in different tasks.
        supervisor = asyncio.create_task(pool._supervise(), name="mcp-pool")
        try:
            yield pool
        finally:
            pool._stop()
            try:
                await asyncio.shield(supervisor)
            except asyncio.CancelledError:
                # Cancelled while stopping: cut the clean-up short rather than leave processes behind.
                supervisor.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await supervisor
                raise

    def status(self) -> list[McpServerStatus]:
        """Every configured server, in configuration order."""
        out = []
        for name, cfg in self.config.servers.items():
            server = self._servers.get(name)
            if server is None or not cfg.enabled:
                out.append(McpServerStatus(name=name, status="disabled", tools=[]))
            else:
                out.append(server.status())
        return out

    async def wait_started(self, timeout_s: float = 30.0) -> None:
        """Wait until no enabled server is still in its first start (ready or failed); for tests and benchmarks."""
        async with asyncio.timeout(timeout_s):
            while any(s.status().status == "starting" for s in self._servers.values()):
                await self._changed.wait()

    def _notify(self) -> None:
        self._changed.set()
        self._changed = asyncio.Event()

    @contextlib.asynccontextmanager
    async def acquire(self, names: Sequence[str] | None = None, *, wait_s: float = 5.0) -> AsyncIterator[McpTools]:
        """Lend the named servers (None: every enabled one) for one run.

        A stdio server's instances are borrowed per tool call; a stateful one's instance is exclusive to this run
        until the block ends. A server not up (or, stateful, not free) within `wait_s`, down, disabled or unknown is
        listed in `tools.unavailable` instead.
        """
        wanted = list(dict.fromkeys(self.config.enabled_names if names is None else names))
        tools = McpTools()
        held: dict[str, PooledServer] = {}
        deadline = time.monotonic() + wait_s

        async def take(server: _Server) -> None:
            if server.per_call:
                if await server.wait_ready(deadline=deadline):
                    held[server.name] = PooledServer(
                        source=server,
                        instance=None,
                        owner=tools,
                        output_cap_bytes=self._output_cap_bytes,
                        observer=self.observer,
                    )
                return
            instance = await server.take(deadline=deadline)
            if instance is not None:
                # No await between the take and this line: a cancelled acquisition still gives the instance back.
                held[server.name] = PooledServer(
                    source=server,
                    instance=instance,
                    owner=tools,
                    output_cap_bytes=self._output_cap_bytes,
                    observer=self.observer,
                )

        try:
            async with asyncio.TaskGroup() as group:
                for name in wanted:
                    server = self._servers.get(name)
                    if server is not None:
                        group.create_task(take(server))
            for name in wanted:
                if name in held:
                    tools._add(held[name])
                else:
                    tools.unavailable.append(name)
            yield tools
        finally:
            for pooled in held.values():
                pooled.release()

    # -- owner tasks ---------------------------------------------------------------------------------------------

    async def _supervise(self) -> None:
        async with asyncio.TaskGroup() as group:
            for server in self._servers.values():
                for slot in server.slots:
                    slot.task = group.create_task(self._own(server, slot), name=f"mcp:{server.name}#{slot.index}")

    def _stop(self) -> None:
        self._stopping.set()
        for server in self._servers.values():
            for slot in server.slots:
                if slot.instance is not None:
                    slot.instance.wake.set()
                elif slot.connecting and slot.task is not None:
                    # A server that hangs while starting must not hold the shutdown for the connect timeout.
                    slot.task.cancel()
            server.changed()

    async def _own(self, server: _Server, slot: _Slot) -> None:
        """Connect, serve, clean up, and again after a failure (with backoff) until the pool stops."""
        failures = 0
        while not self._stopping.is_set():
            sdk = self._make_sdk(server)
            try:
                slot.connecting = True
                try:
                    async with asyncio.timeout(self._connect_timeout_s):
                        # The SDK leaves connect/cleanup unannotated; they return None.
                        connect: Callable[[], Awaitable[object]] = sdk.connect
                        await connect()
                        listed = await sdk.list_tools()
                finally:
                    slot.connecting = False
            except Exception as exc:
                failures += 1
                server.error = _describe(exc)
                slot.state = "failed"
                server.changed()
                # Loud at first, then only now and then: a server that stays down retries for as long as we run.
                level = logging.WARNING if failures == 1 or failures % 10 == 0 else logging.DEBUG
                logger.log(level, "MCP server %s failed to start (attempt %d): %s", server.name, failures, server.error)
                await _cleanup(sdk, server.name)
                await self._backoff(failures)
                continue
            failures = 0
            instance = ServerInstance(sdk, listed)
            server.publish(slot, instance)
            logger.info("MCP server %s#%d ready with %d tools", server.name, slot.index, len(listed))
            try:
                await self._serve(instance)
            finally:
                server.retire(slot, instance)
                await _cleanup(sdk, server.name)
            if not self._stopping.is_set():
                server.error = instance.broken_reason
                slot.state = "restarting"
                server.changed()
                logger.warning("MCP server %s#%d is restarting: %s", server.name, slot.index, instance.broken_reason)

    async def _serve(self, instance: ServerInstance) -> None:
        """Until the pool stops or the instance breaks; an idle instance is checked now and then."""
        while not self._stopping.is_set() and instance.usable:
            try:
                async with asyncio.timeout(self._health_interval_s):
                    await instance.wake.wait()
            except TimeoutError:
                if instance.inflight == 0 and not await instance.alive():
                    instance.mark_broken("the server stopped answering")

    async def _backoff(self, failures: int) -> None:
        delay = min(self._max_backoff_s, 0.5 * 2 ** (failures - 1))
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(delay):
                await self._stopping.wait()

    def _make_sdk(self, server: _Server) -> SdkMCPServer:
        cfg = server.config
        if isinstance(cfg, StdioServerConfig):
            params: MCPServerStdioParams = {"command": cfg.command, "args": list(cfg.args), "env": dict(cfg.env)}
            if cfg.cwd is not None:
                params["cwd"] = cfg.cwd
            return MCPServerStdio(params, name=server.name, cache_tools_list=True, client_session_timeout_seconds=None)
        # Our own timeout bounds each call; the HTTP timeouts only need to be longer.
        if cfg.type == "sse":
            return MCPServerSse(
                {
                    "url": cfg.url,
                    "headers": dict(cfg.headers),
                    "timeout": cfg.timeout_s + 10,
                    "sse_read_timeout": cfg.timeout_s + 10,
                },
                name=server.name,
                cache_tools_list=True,
                client_session_timeout_seconds=None,
            )
        return MCPServerStreamableHttp(
            {
                "url": cfg.url,
                "headers": dict(cfg.headers),
                "timeout": cfg.timeout_s + 10,
                "sse_read_timeout": cfg.timeout_s + 10,
            },
            name=server.name,
            cache_tools_list=True,
            client_session_timeout_seconds=None,
        )


async def _cleanup(sdk: SdkMCPServer, name: str) -> None:
    cleanup: Callable[[], Awaitable[object]] = sdk.cleanup
    try:
        await cleanup()
    except Exception as exc:
        logger.warning("MCP server %s did not clean up: %s", name, _describe(exc))


def _describe(exc: BaseException) -> str:
    while isinstance(exc, BaseExceptionGroup) and exc.exceptions:
        exc = exc.exceptions[0]
    if isinstance(exc, TimeoutError):
        return "timed out while starting"
    text = str(exc) or type(exc).__name__
    return f"{type(exc).__name__}: {text}" if text != type(exc).__name__ else text
