"""What a run is made of: the seams to the model and MCP layers, and the agent (instructions + session
instructions + file context + MCP tools + file tools)."""

from __future__ import annotations

import contextlib
import json
from collections.abc import AsyncIterator
from contextlib import AbstractAsyncContextManager
from dataclasses import dataclass, field
from typing import Any, Protocol

import asyncpg
from agents import Agent, ModelSettings, Tool
from agents.mcp import MCPServer
from agents.models.interface import ModelProvider
from openai.types.shared import Reasoning

from chinwag.config import Settings
from chinwag.llm.catalog import ModelCatalog
from chinwag.llm.history import HistoryCache
from chinwag.observability.observer import NULL_OBSERVER, Observer
from chinwag.schemas.sessions import Session
from chinwag.services.file_context import FileContext
from chinwag.services.postgres_session import ItemCounter
from chinwag.services.run_store import PendingEnds
from chinwag.websocket.bus import Bus
from chinwag.websocket.runs import RunBuffers

FILE_BUDGET_SHARE = 0.25
"""Share of the model's window the file context may take in the instructions."""


class McpToolsLike(Protocol):
    """What a run holds of the MCP pool (`chinwag.mcp.tools.McpTools`)."""

    servers: list[Any]
    unavailable: list[str]

    def server_of(self, tool_name: str) -> str | None: ...

    def failed(self, call_id: str) -> bool: ...


class McpSource(Protocol):
    """`app.state.mcp`: lends the session's MCP servers to one run."""

    def acquire(self, names: list[str] | None) -> AbstractAsyncContextManager[McpToolsLike]: ...


class LlmSource(Protocol):
    """What a run needs of `chinwag.llm`: a model provider of its own (closed after the run), a one-shot completion
    (titles, summaries) and the offline token counter."""

    @property
    def counter(self) -> ItemCounter: ...

    @property
    def catalog(self) -> ModelCatalog:
        """The one model catalog: which models are offered, and every model's context window."""
        ...

    @property
    def history_cache(self) -> HistoryCache | None:
        """Where the models of `run_provider` keep history rows as request JSON; None when they take the history
        as plain items (`chinwag.llm.history`: only chinwag's own models on the lean client take a history item)."""
        ...

    def run_provider(self) -> AbstractAsyncContextManager[ModelProvider]: ...

    async def complete(self, *, model: str, instructions: str, prompt: str, max_tokens: int | None = None) -> str: ...


class _NoTools:
    servers: list[Any] = []
    unavailable: list[str] = []

    def server_of(self, tool_name: str) -> str | None:
        return None

    def failed(self, call_id: str) -> bool:
        return False


@contextlib.asynccontextmanager
async def no_mcp(names: list[str] | None) -> AsyncIterator[McpToolsLike]:
    yield _NoTools()


@dataclass
class RunDeps:
    """Everything a run uses, owned by the app's lifespan."""

    pool: asyncpg.Pool
    settings: Settings
    bus: Bus
    buffers: RunBuffers
    llm: LlmSource
    mcp: McpSource | None = None
    pending: PendingEnds = field(default_factory=PendingEnds)
    """Ends of runs the database did not take yet (written once it is back)."""
    observer: Observer = NULL_OBSERVER
    """Metrics and spans of each run (`chinwag.observability`): no-ops unless the operator turned them on."""


def build_instructions(settings: Settings, session: Session, files: FileContext, unavailable: list[str]) -> str:
    parts = [settings.instructions.strip(), session.instructions.strip(), files.instructions]
    if unavailable:
        parts.append(
            "These tool servers are unavailable right now, so their tools are missing: " + ", ".join(unavailable)
        )
    return "\n\n".join(p for p in parts if p)


def build_agent(*, settings: Settings, session: Session, files: FileContext, tools: McpToolsLike) -> Agent[Any]:
    """The run's agent; the model name is resolved by the run's own provider."""
    return Agent(
        name="chinwag",
        instructions=build_instructions(settings, session, files, tools.unavailable),
        model=session.model,
        tools=list[Tool](files.tools),
        mcp_servers=list[MCPServer](tools.servers),
        model_settings=model_settings(session),
    )


def model_settings(session: Session) -> ModelSettings:
    """The SDK's settings for each model call of the session's runs: only what the session set is sent (the
    provider's defaults apply to the rest); the output cap is the run's to add."""
    chosen = session.settings
    return ModelSettings(
        include_usage=True,
        temperature=chosen.temperature,
        top_p=chosen.top_p,
        reasoning=Reasoning(effort=chosen.reasoning_effort) if chosen.reasoning_effort is not None else None,
    )


def overhead_tokens(agent: Agent[Any], counter: ItemCounter) -> int:
    """Offline count of what each model call gets besides the history: the instructions (file context included)
    and every tool's definition as the request carries it, the MCP servers' tools as well as the function tools.

    MCP tools are taken from what the pool listed when it started the server (`cached_tools`): no round trip."""
    instructions = agent.instructions if isinstance(agent.instructions, str) else ""
    definitions: list[dict[str, Any]] = [
        _tool_definition(t.name, getattr(t, "description", ""), getattr(t, "params_json_schema", None))
        for t in agent.tools
    ]
    for server in agent.mcp_servers:
        for tool in getattr(server, "cached_tools", None) or []:
            definitions.append(_tool_definition(tool.name, tool.description or "", tool.input_schema))
    total = counter.count_text(instructions)
    if definitions:
        total += counter.count_text("\n".join(json.dumps(d, ensure_ascii=False) for d in definitions))
    return total


def _tool_definition(name: str, description: str, parameters: Any) -> dict[str, Any]:
    """A tool as a Chat Completions request defines it (the Responses API's flat form has the same text)."""
    return {"type": "function", "function": {"name": name, "description": description, "parameters": parameters}}
