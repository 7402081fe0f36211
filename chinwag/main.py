"""`create_app(settings)`: the lifespan owns every resource; this module only wires."""

from __future__ import annotations

import contextlib
import gc
import logging
from collections.abc import AsyncIterator
from concurrent.futures import ThreadPoolExecutor

from fastapi import FastAPI
from fastapi.middleware.cors import CORSMiddleware
from opentelemetry.trace import TracerProvider

from chinwag import __version__
from chinwag.config import Settings, load_or_create_secret
from chinwag.db.pool import database_url, open_pool
from chinwag.dependencies import get_current_user
from chinwag.errors import install_error_handlers
from chinwag.llm.provider import LlmClients
from chinwag.mcp import McpPool, load_mcp_config
from chinwag.middleware.auth import AuthMiddleware
from chinwag.middleware.body_limit import BodyLimitMiddleware
from chinwag.middleware.client_address import ClientAddressMiddleware, TrustedProxies, parse_networks
from chinwag.middleware.request_id import RequestIdMiddleware
from chinwag.observability import tracing
from chinwag.observability.metrics import Metrics, MetricsMiddleware, sampling
from chinwag.observability.metrics import router as metrics_router
from chinwag.observability.observer import Observer
from chinwag.openapi import OPENAPI_TAGS, operation_id
from chinwag.routes import (
    admin,
    auth,
    branches,
    docs,
    files,
    health,
    messages,
    protocol,
    search,
    sessions,
    transfer,
    web,
)
from chinwag.routes import chat as chat_routes
from chinwag.routes import config as config_routes
from chinwag.routes import context as context_routes
from chinwag.services.agent_builder import RunDeps
from chinwag.services.auth_service import AuthService, PasswordHashing
from chinwag.services.chat_service import ChatService
from chinwag.services.extract_pool import ExtractPool
from chinwag.services.rate_limit import ConcurrencySlots, make_rate_limiter
from chinwag.shutdown import Drain
from chinwag.websocket.fanout import open_fanout
from chinwag.websocket.manager import ConnectionManager
from chinwag.websocket.runs import TaskSupervisor

logger = logging.getLogger(__name__)


def create_app(
    settings: Settings, *, tracer_provider: TracerProvider | None = None, drain_on_sigterm: bool = False
) -> FastAPI:
    """Build the application. Nothing is opened until the lifespan starts. `tracer_provider`: where spans go (None:
    an OTLP exporter when `OTEL_EXPORTER_OTLP_ENDPOINT` is set, else no traces). `drain_on_sigterm`: the process
    is `chinwag serve`'s, and SIGTERM drains runs before uvicorn shuts down (`chinwag.shutdown`)."""
    mcp_config = load_mcp_config(settings.mcp_config)  # a bad file fails here, naming the server and field
    own_provider = tracer_provider is None
    provider = tracer_provider if tracer_provider is not None else tracing.otlp_provider()

    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        app.state.secret = load_or_create_secret(settings)
        async with contextlib.AsyncExitStack() as stack:
            dsn = await stack.enter_async_context(database_url(settings))
            app.state.pool = await stack.enter_async_context(
                open_pool(dsn, size=settings.db_pool_size, acquire_timeout=settings.db_acquire_timeout_s)
            )
            # The bus and run buffers (and the one Redis client, which the rate limiter shares).
            fanout = await stack.enter_async_context(open_fanout(settings))
            app.state.bus = fanout.bus
            app.state.mcp = await stack.enter_async_context(McpPool.start(mcp_config, observer=app.state.observer))
            app.state.extractor = await stack.enter_async_context(ExtractPool.open(settings))
            app.state.rate_limiter = make_rate_limiter(settings, fanout.redis)
            app.state.search_slots = ConcurrencySlots()
            # Password hashing has threads of its own: nothing queued on the default executor delays a login, and
            # at most this many hashes (64 MiB each by default) run at once.
            hashing = stack.enter_context(
                ThreadPoolExecutor(settings.password_hash_threads, thread_name_prefix="chinwag-password")
            )
            app.state.auth = AuthService(
                pool=app.state.pool,
                settings=settings,
                secret=app.state.secret,
                limiter=app.state.rate_limiter,
                passwords=PasswordHashing.from_settings(settings, executor=hashing),
            )
            app.state.llm = await stack.enter_async_context(LlmClients.open(settings, observer=app.state.observer))
            run_deps = RunDeps(
                pool=app.state.pool,
                settings=settings,
                bus=fanout.bus,
                buffers=fanout.buffers,
                llm=app.state.llm,
                mcp=app.state.mcp,
                observer=app.state.observer,
            )
            # Runs stop (recorded as interrupted) before the bus, the pool, MCP servers and model clients close.
            app.state.chat = await stack.enter_async_context(
                ChatService.open(run_deps, supervisor=TaskSupervisor(), limiter=app.state.rate_limiter)
            )
            app.state.connections = ConnectionManager(fanout.bus)
            # Objects made during start-up live as long as the process: keep them out of full collections.
            gc.collect()
            gc.freeze()
            if app.state.metrics is not None:
                await stack.enter_async_context(
                    sampling(app.state.metrics, pool=lambda: app.state.pool, mcp=lambda: app.state.mcp)
                )
            if drain_on_sigterm:
                stack.enter_context(app.state.drain.on_sigterm(lambda: _drain(app)))
            logger.info("chinwag %s ready", __version__)
            yield
        tracing.flush(provider)

    app = FastAPI(
        title="chinwag",
        version=__version__,
        summary="A self-hosted, multi-user chat server for LLM agents",
        lifespan=lifespan,
        docs_url=None,  # served by chinwag.routes.docs, with local assets
        redoc_url=None,
        generate_unique_id_function=operation_id,
        openapi_tags=OPENAPI_TAGS,
    )
    app.state.settings = settings
    app.state.metrics = Metrics() if settings.metrics else None
    tracer = tracing.instrument(app, provider, libraries=own_provider) if provider is not None else None
    app.state.observer = Observer(metrics=app.state.metrics, tracer=tracer)
    app.state.drain = Drain(grace_s=settings.shutdown_grace_s)
    app.state.web_assets = web.WebAssets()
    app.state.docs_assets = docs.assets()
    install_error_handlers(app)
    # Innermost of the middleware (the body limit inside it reads who the caller is): a 503 either may answer still
    # passes through CORS and request ids.
    app.add_middleware(
        BodyLimitMiddleware,
        max_bytes=settings.max_body_bytes,
        current_user=get_current_user,
        own_cap=(files.upload_file, transfer.import_conversation),
    )
    app.add_middleware(AuthMiddleware)
    if settings.cors_origins:
        app.add_middleware(
            CORSMiddleware,
            allow_origins=list(settings.cors_origins),
            allow_methods=["*"],
            allow_headers=["*"],
        )
    app.add_middleware(RequestIdMiddleware)
    app.add_middleware(ClientAddressMiddleware, proxies=TrustedProxies(parse_networks(settings.trusted_proxies)))
    if app.state.metrics is not None:
        # Outermost: the answers of every middleware (413, 429, 503) are counted too.
        app.add_middleware(MetricsMiddleware, metrics=app.state.metrics)
        app.include_router(metrics_router)

    app.include_router(health.router)
    app.include_router(docs.router)
    app.include_router(protocol.router)
    # The history page is the busiest REST route: matched first, it skips the other routers' patterns.
    app.include_router(messages.router, prefix="/api/v1")
    app.include_router(chat_routes.router)
    app.include_router(auth.router, prefix="/api/v1")
    app.include_router(admin.router, prefix="/api/v1")
    app.include_router(transfer.router, prefix="/api/v1")
    app.include_router(sessions.router, prefix="/api/v1")
    app.include_router(branches.router, prefix="/api/v1")
    app.include_router(files.router, prefix="/api/v1")
    app.include_router(context_routes.router, prefix="/api/v1")
    app.include_router(search.router, prefix="/api/v1")
    app.include_router(config_routes.router, prefix="/api/v1")
    # Last: the client's pages and assets never shadow the API, the socket, health or the OpenAPI pages.
    app.include_router(web.router)
    return app


async def _drain(app: FastAPI) -> None:
    chat: ChatService = app.state.chat
    connections: ConnectionManager = app.state.connections

    async def interrupt(session_id: str) -> None:
        await chat.interrupt(session_id=session_id)

    await app.state.drain.run(
        runs=lambda: [(live.run.session.id, live.task) for live in chat.live.values()],
        interrupt=interrupt,
        close_sockets=connections.close_all,
    )
