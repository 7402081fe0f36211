"""Prometheus metrics (`CHINWAG_METRICS=true`): one `Metrics` per app, owned by its lifespan.

Several workers (`chinwag serve --workers N`): `chinwag serve` points `PROMETHEUS_MULTIPROC_DIR` at a folder of the
data dir (emptied at each start) before any worker starts, every worker writes its values there, and whichever
worker answers `/metrics` sums them all (`MultiProcessCollector`). Gauges of things each worker holds (sockets,
runs, pool connections) are summed over the live workers; an MCP server is up only if it is up in every worker.

One process (the tests, `--workers 1` without the variable): values live in this `Metrics`' own registry, so two
apps in one process never share a counter.

Labels are bounded: a route is its template (`/api/v1/sessions/{session_id}`, or `unmatched`), a finish reason,
tool outcome and token direction come from closed lists, a model and an MCP server from the configuration.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import time
from collections.abc import AsyncIterator, Callable
from typing import TYPE_CHECKING, Any

from fastapi import APIRouter
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client import multiprocess as prometheus_multiprocess
from starlette.requests import Request
from starlette.responses import Response
from starlette.types import ASGIApp, Message, Receive, Scope, Send

if TYPE_CHECKING:
    import asyncpg

    from chinwag.mcp import McpPool

from chinwag.observability.multiproc import multiprocess_dir

logger = logging.getLogger(__name__)

SAMPLE_EVERY_S = 5.0
_LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)
_MODEL_BUCKETS = (0.05, 0.1, 0.25, 0.5, 1.0, 2.0, 5.0, 10.0, 20.0, 30.0, 60.0, 120.0, 300.0)


class Metrics:
    """Every chinwag metric. `observe_*` and `*_started/ended` are what the app's code calls; each is cheap."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        r = self.registry
        self.http_requests = Counter(
            "chinwag_http_requests", "HTTP requests answered", ["method", "route", "status"], registry=r
        )
        self.http_duration = Histogram(
            "chinwag_http_request_duration_seconds",
            "Time to answer an HTTP request, headers to last body byte",
            ["method", "route"],
            buckets=_LATENCY_BUCKETS,
            registry=r,
        )
        self.sockets = Gauge(
            "chinwag_websocket_connections", "Open WebSocket connections", registry=r, multiprocess_mode="livesum"
        )
        self.active_runs = Gauge(
            "chinwag_active_runs", "Runs executing in this server", registry=r, multiprocess_mode="livesum"
        )
        self.runs = Counter("chinwag_runs", "Runs ended, by finish_reason", ["finish_reason"], registry=r)
        self.first_token = Histogram(
            "chinwag_time_to_first_token_seconds",
            "From a run's start to its first streamed text",
            buckets=_MODEL_BUCKETS,
            registry=r,
        )
        self.model_calls = Histogram(
            "chinwag_model_call_duration_seconds",
            "One call to the model provider (a run makes one per turn), by outcome",
            ["model", "outcome"],
            buckets=_MODEL_BUCKETS,
            registry=r,
        )
        self.tokens = Counter("chinwag_tokens", "Model tokens, by direction (input, output)", ["direction"], registry=r)
        self.tool_calls = Counter(
            "chinwag_tool_calls", "MCP tool calls, by server and outcome (ok, error)", ["server", "outcome"], registry=r
        )
        self.db_pool = Gauge(
            "chinwag_db_pool_connections",
            "Database pool connections, by state (in_use, idle, max)",
            ["state"],
            registry=r,
            multiprocess_mode="livesum",
        )
        self.mcp_up = Gauge(
            "chinwag_mcp_server_up",
            "1 when an MCP server is ready (in every worker), else 0",
            ["server"],
            registry=r,
            multiprocess_mode="livemin",
        )

    # --- what the run code reports ------------------------------------------------------------------------------

    def run_started(self) -> None:
        self.active_runs.inc()

    def run_ended(self, finish_reason: str) -> None:
        self.active_runs.dec()
        self.runs.labels(finish_reason).inc()

    def first_text(self, seconds: float) -> None:
        self.first_token.observe(seconds)

    def model_call(self, model: str, seconds: float, *, ok: bool) -> None:
        self.model_calls.labels(model, "ok" if ok else "error").observe(seconds)

    def usage(self, input_tokens: int, output_tokens: int) -> None:
        if input_tokens > 0:
            self.tokens.labels("input").inc(input_tokens)
        if output_tokens > 0:
            self.tokens.labels("output").inc(output_tokens)

    def tool_call(self, server: str, *, ok: bool) -> None:
        self.tool_calls.labels(server, "ok" if ok else "error").inc()

    # --- sampled state ------------------------------------------------------------------------------------------

    def sample(self, pool: asyncpg.Pool | None, mcp: McpPool | None) -> None:
        """The pool's and MCP servers' state now (called every few seconds, and before each scrape)."""
        if pool is not None:
            size, idle = pool.get_size(), pool.get_idle_size()
            self.db_pool.labels("in_use").set(size - idle)
            self.db_pool.labels("idle").set(idle)
            self.db_pool.labels("max").set(pool.get_max_size())
        if mcp is not None:
            for server in mcp.status():
                if server.status != "disabled":
                    self.mcp_up.labels(server.name).set(1 if server.status == "ready" else 0)

    def exposition(self) -> bytes:
        """The text format of every worker's values (multi-process) or of this registry's."""
        path = multiprocess_dir()
        if path is None:
            return generate_latest(self.registry)
        registry = CollectorRegistry()
        prometheus_multiprocess.MultiProcessCollector(registry, path=path)  # type: ignore[no-untyped-call]
        return generate_latest(registry)


@contextlib.asynccontextmanager
async def sampling(metrics: Metrics, *, pool: Callable[[], Any], mcp: Callable[[], Any]) -> AsyncIterator[None]:
    """For the lifespan: samples the pool and MCP servers every few seconds; on the way out this worker's live
    gauges are dropped (a restarted worker has a new pid: its old sockets and runs must not count)."""

    async def loop() -> None:
        while True:
            try:
                metrics.sample(pool(), mcp())
            except Exception:
                logger.exception("sampling metrics failed")
            await asyncio.sleep(SAMPLE_EVERY_S)

    task = asyncio.create_task(loop(), name="chinwag-metrics-sampler")
    try:
        yield
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
        path = multiprocess_dir()
        if path is not None:
            prometheus_multiprocess.mark_process_dead(os.getpid(), path)  # type: ignore[no-untyped-call]


def _route_of(scope: Scope) -> str:
    """The template of the route that answered (`/api/v1/sessions/{session_id}`), or `unmatched`. FastAPI 0.16x
    keeps an included router's prefix in the route context it records in the scope, not on the route itself."""
    fastapi_scope = scope.get("fastapi")
    context = fastapi_scope.get("effective_route_context") if isinstance(fastapi_scope, dict) else None
    for source in (context, getattr(context, "starlette_route", None), scope.get("route")):
        path = getattr(source, "path_format", None) or getattr(source, "path", None)
        if isinstance(path, str) and path:
            return path
    return "unmatched"


class MetricsMiddleware:
    """Counts and times every HTTP request by its route template and status, and counts open WebSockets."""

    def __init__(self, app: ASGIApp, *, metrics: Metrics) -> None:
        self.app = app
        self.metrics = metrics

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "websocket":
            await self._websocket(scope, receive, send)
            return
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        start = time.perf_counter()
        status = 500

        async def send_status(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, send_status)
        finally:
            route = _route_of(scope)
            method = scope.get("method", "GET")
            self.metrics.http_requests.labels(method, route, str(status)).inc()
            self.metrics.http_duration.labels(method, route).observe(time.perf_counter() - start)

    async def _websocket(self, scope: Scope, receive: Receive, send: Send) -> None:
        accepted = False

        async def send_accept(message: Message) -> None:
            nonlocal accepted
            if message["type"] == "websocket.accept" and not accepted:
                accepted = True
                self.metrics.sockets.inc()
            await send(message)

        try:
            await self.app(scope, receive, send_accept)
        finally:
            if accepted:
                self.metrics.sockets.dec()


router = APIRouter()


@router.get("/metrics", include_in_schema=False)
async def metrics_endpoint(request: Request) -> Response:
    """`GET /metrics`: the Prometheus text format (no auth: restrict it at the reverse proxy)."""
    metrics: Metrics = request.app.state.metrics
    state = request.app.state
    metrics.sample(getattr(state, "pool", None), getattr(state, "mcp", None))
    return Response(metrics.exposition(), media_type=CONTENT_TYPE_LATEST)
