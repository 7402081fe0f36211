"""What a run holds while it uses MCP servers: `McpTools`, and `PooledServer`, the SDK-facing side of one server.

`PooledServer` satisfies the Agents SDK's `MCPServer` ABC but owns no connection: calls go to a `ServerInstance`
that the pool's owner task connected (anyio wants connect and cleanup in one task). It adds what a chat server needs
around every call: a timeout, a cap on the output, and a dead process turned into an error the model reads (the run
goes on, the instance is replaced). Failures raise `McpToolError`; the server's own `failure_error_function` turns
them into the tool output and records the call as failed, so the chat can send `tool_done` with `ok: false`.
"""

from __future__ import annotations

import asyncio
import logging
from typing import TYPE_CHECKING, Any, Protocol

from agents.exceptions import AgentsException, UserError
from agents.mcp import MCPServer as SdkMCPServer
from agents.run_context import RunContextWrapper
from mcp.shared.exceptions import MCPError
from mcp.types import CONNECTION_CLOSED, CallToolResult, GetPromptResult, ListPromptsResult, TextContent
from mcp.types import Tool as MCPTool

from chinwag.observability.observer import NULL_OBSERVER, Observer

if TYPE_CHECKING:
    from agents.agent import AgentBase

logger = logging.getLogger(__name__)

OUTPUT_CAP_BYTES = 100_000
_PROBE_TIMEOUT_S = 3.0


class McpToolError(UserError):
    """A tool call that gave no normal result (an error result, a timeout, a dead server); the text is for the model."""


class ServerInstance:
    """One connected SDK server. Its owner task (in the pool) connected it and is the only one to clean it up."""

    def __init__(self, sdk: SdkMCPServer, tools: list[MCPTool]) -> None:
        self.sdk = sdk
        self.tools = tools
        self.inflight = 0
        self.broken_reason: str | None = None
        self.retired = False
        self.wake = asyncio.Event()

    @property
    def usable(self) -> bool:
        return self.broken_reason is None and not self.retired

    def mark_broken(self, reason: str) -> None:
        """Ask the owner task to clean this instance up and start a fresh one."""
        if self.broken_reason is None:
            self.broken_reason = reason
            self.wake.set()

    async def alive(self) -> bool:
        """A round trip on the session: is the server still answering?"""
        if not self.usable:
            return False
        try:
            async with asyncio.timeout(_PROBE_TIMEOUT_S):
                session = getattr(self.sdk, "session", None)
                if session is None:
                    return False
                await session.list_tools()
        except Exception:
            return False
        return True


class InstanceSource(Protocol):
    """The pool's side of one configured server, as a `PooledServer` sees it."""

    name: str
    exclusive: bool
    per_call: bool
    timeout_s: float
    tool_defs: list[MCPTool]

    async def take(self, *, deadline: float) -> ServerInstance | None: ...

    def give_back(self, instance: ServerInstance) -> None: ...


class McpTools:
    """The MCP servers a run holds: pass `servers` to `Agent(mcp_servers=...)`, tell the model about `unavailable`."""

    def __init__(self) -> None:
        self.servers: list[SdkMCPServer] = []
        self.unavailable: list[str] = []
        self._tool_servers: dict[str, str] = {}
        self._errors: dict[str, str] = {}

    def server_of(self, tool_name: str) -> str | None:
        """The name of the MCP server that offers this tool (for `tool_start.server`); None for other tools."""
        return self._tool_servers.get(tool_name)

    def failed(self, call_id: str) -> bool:
        """Whether this tool call ended in an error, a timeout or a dead server (for `tool_done.ok`)."""
        return call_id in self._errors

    def error_of(self, call_id: str) -> str | None:
        """The error text the model was given for this tool call, if it failed."""
        return self._errors.get(call_id)

    def _add(self, server: PooledServer) -> None:
        self.servers.append(server)
        for tool in server.current_tools:
            self._tool_servers.setdefault(tool.name, server.name)

    def _record_failure(self, ctx: RunContextWrapper[Any], error: Exception) -> str:
        message = str(error) if isinstance(error, AgentsException) else "An error occurred while running the tool."
        call_id = getattr(ctx, "tool_call_id", None)
        if isinstance(call_id, str):
            self._errors[call_id] = message
        return message


class PooledServer(SdkMCPServer):
    """One configured MCP server as lent to one run. `connect`/`cleanup` do nothing: the pool owns the process.

    With `instance` None (a per-call server), each call borrows an instance from the pool and gives it back."""

    def __init__(
        self,
        *,
        source: InstanceSource,
        instance: ServerInstance | None,
        owner: McpTools,
        output_cap_bytes: int,
        observer: Observer = NULL_OBSERVER,
    ) -> None:
        super().__init__(failure_error_function=owner._record_failure)
        self._observer = observer
        self._source = source
        self._instance = instance
        self._output_cap_bytes = output_cap_bytes
        self._released = False

    @property
    def name(self) -> str:
        return self._source.name

    @property
    def current_tools(self) -> list[MCPTool]:
        return list(self._source.tool_defs if self._instance is None else self._instance.tools)

    @property
    def cached_tools(self) -> list[MCPTool] | None:
        return self.current_tools

    async def connect(self) -> None:
        """Nothing to do: the pool connected the server before lending it."""

    async def cleanup(self) -> None:
        """Nothing to do: the pool cleans the server up when it stops."""

    async def list_tools(
        self, run_context: RunContextWrapper[Any] | None = None, agent: AgentBase | None = None
    ) -> list[MCPTool]:
        return self.current_tools

    async def call_tool(
        self, tool_name: str, arguments: dict[str, Any] | None, meta: dict[str, Any] | None = None
    ) -> CallToolResult:
        """One tool call (counted and traced by server and outcome): an `McpToolError` for any failure."""
        async with self._observer.tool_call(self.name, tool_name):
            return await self._call_tool(tool_name, arguments, meta)

    async def _call_tool(
        self, tool_name: str, arguments: dict[str, Any] | None, meta: dict[str, Any] | None
    ) -> CallToolResult:
        if self._released:
            raise McpToolError(f"MCP server '{self.name}' is no longer held by this run.")
        instance: ServerInstance | None = None
        scope = asyncio.timeout(self._source.timeout_s)
        try:
            async with scope:
                instance = await self._instance_for_call()
                instance.inflight += 1
                try:
                    if meta is None:
                        result = await instance.sdk.call_tool(tool_name, arguments)
                    else:
                        result = await instance.sdk.call_tool(tool_name, arguments, meta=meta)
                finally:
                    instance.inflight -= 1
        except Exception as exc:
            # Judged (a dead process marked broken) before it goes back: the next borrower never gets a dead one.
            error = await self._failure(exc, tool_name, instance, timed_out=scope.expired())
            self._end_call(instance)
            raise error from exc
        except BaseException:
            self._end_call(instance)
            raise
        self._end_call(instance)
        result = cap_output(result, self._output_cap_bytes)
        if result.is_error:
            text = "\n".join(item.text for item in result.content if isinstance(item, TextContent))
            raise McpToolError(f"Tool '{tool_name}' on MCP server '{self.name}' reported an error: {text}")
        return result

    async def list_prompts(self) -> ListPromptsResult:
        instance = await self._instance_for_call()
        try:
            return await instance.sdk.list_prompts()
        finally:
            self._end_call(instance)

    async def get_prompt(self, name: str, arguments: dict[str, Any] | None = None) -> GetPromptResult:
        instance = await self._instance_for_call()
        try:
            return await instance.sdk.get_prompt(name, arguments)
        finally:
            self._end_call(instance)

    def release(self) -> None:
        """Hand the instance back to the pool (exclusive servers); later calls through this object fail."""
        if self._released:
            return
        self._released = True
        if self._instance is not None and self._source.exclusive and self._instance.usable:
            self._source.give_back(self._instance)

    def _end_call(self, instance: ServerInstance | None) -> None:
        """A per-call borrow ends with its call (a broken instance is not taken back)."""
        if self._instance is None and instance is not None:
            self._source.give_back(instance)

    async def _instance_for_call(self) -> ServerInstance:
        if self._instance is None:
            # Per call: whichever instance is free first; the caller's timeout bounds the wait.
            borrowed = await self._source.take(deadline=float("inf"))
            if borrowed is None:
                raise McpToolError(f"MCP server '{self.name}' is down; its tools cannot be used now.")
            return borrowed
        if self._instance.usable:
            return self._instance
        # The instance died (or was replaced); take a fresh one for the rest of the run.
        fresh = await self._source.take(deadline=float("inf"))
        if fresh is None:
            raise McpToolError(f"MCP server '{self.name}' is down; its tools cannot be used now.")
        self._instance = fresh
        return fresh

    async def _failure(
        self, exc: Exception, tool_name: str, instance: ServerInstance | None, *, timed_out: bool
    ) -> McpToolError:
        where = f"Tool '{tool_name}' on MCP server '{self.name}'"
        if isinstance(exc, McpToolError):
            return exc
        if timed_out:
            if instance is None:
                return McpToolError(
                    f"{where}: no server instance became available within {self._source.timeout_s:g} s."
                )
            if self._source.exclusive:
                # The process may be stuck on this call; a fresh one is safer for whoever comes next.
                instance.mark_broken(f"a call to {tool_name} timed out")
            return McpToolError(f"{where} timed out after {self._source.timeout_s:g} s.")
        if instance is None:
            return McpToolError(f"{where} could not be called: {exc}")
        if isinstance(exc, MCPError) and exc.code != CONNECTION_CLOSED:
            return McpToolError(f"{where} failed: {exc.message}")
        if isinstance(exc, MCPError) or not await instance.alive():
            instance.mark_broken(f"the connection closed during a call to {tool_name}")
            logger.warning("MCP server %s stopped during a call to %s; restarting it", self.name, tool_name)
            return McpToolError(
                f"{where} failed: the server stopped during the call. It is being restarted; "
                "anything it held in memory is lost."
            )
        if isinstance(exc, UserError):
            return McpToolError(f"{where} failed: {exc}")
        logger.warning("MCP tool %s on %s raised %s", tool_name, self.name, type(exc).__name__)
        return McpToolError(f"{where} failed: {type(exc).__name__}")


def cap_output(result: CallToolResult, cap_bytes: int) -> CallToolResult:
    """Cut the content to `cap_bytes` (UTF-8 for text, JSON for other blocks), ending with a visible marker."""
    # UTF-8 needs at most four bytes a character: most results are clearly small without encoding anything.
    if (
        sum(len(item.text) * 4 if isinstance(item, TextContent) else cap_bytes + 1 for item in result.content)
        <= cap_bytes
    ):
        return result
    sizes = [_size(item) for item in result.content]
    total = sum(sizes)
    if total <= cap_bytes:
        return result
    kept: list[Any] = []
    room = cap_bytes
    for item, size in zip(result.content, sizes, strict=True):
        if size <= room:
            kept.append(item)
            room -= size
        elif isinstance(item, TextContent) and room > 0:
            cut = item.text.encode("utf-8")[:room].decode("utf-8", errors="ignore")
            kept.append(item.model_copy(update={"text": cut}))
            room = 0
        else:
            room = 0
    marker = f"\n[output truncated: {total} bytes, only the first {cap_bytes} shown]"
    kept.append(TextContent(type="text", text=marker))
    return result.model_copy(update={"content": kept, "structured_content": None})


def _size(item: Any) -> int:
    if isinstance(item, TextContent):
        return len(item.text.encode("utf-8"))
    return len(item.model_dump_json())
