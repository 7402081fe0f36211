"""Dependency aliases: everything a route needs comes from the app's state through these, never from a global."""

from __future__ import annotations

from typing import Annotated

import asyncpg
from fastapi import Depends
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from starlette.requests import HTTPConnection

from chinwag.config import Settings
from chinwag.errors import AccountDisabled, Forbidden, InvalidToken, Unauthorized
from chinwag.llm.catalog import ModelCatalog
from chinwag.llm.provider import LlmClients
from chinwag.mcp import McpPool
from chinwag.schemas.users import User
from chinwag.services.admin_service import AdminService
from chinwag.services.auth_service import AuthService
from chinwag.services.chat_service import ChatService
from chinwag.services.file_service import FileService, FileStore
from chinwag.services.session_service import SessionService
from chinwag.websocket.manager import ConnectionManager


def get_settings(conn: HTTPConnection) -> Settings:
    settings: Settings = conn.app.state.settings
    return settings


def get_pool(conn: HTTPConnection) -> asyncpg.Pool:
    pool: asyncpg.Pool = conn.app.state.pool
    return pool


AppSettings = Annotated[Settings, Depends(get_settings)]
Pool = Annotated[asyncpg.Pool, Depends(get_pool)]


def get_auth_service(conn: HTTPConnection) -> AuthService:
    auth: AuthService = conn.app.state.auth
    return auth


# Declares the scheme in OpenAPI (every route that needs a user shows it); the middleware does the checking.
bearer_scheme = HTTPBearer(auto_error=False, description="An access token (from /auth/login) or an API key (`cw_...`).")


async def get_current_user(
    conn: HTTPConnection, _credential: Annotated[HTTPAuthorizationCredentials | None, Depends(bearer_scheme)]
) -> User:
    """The caller (see `AuthMiddleware`): 401 `unauthorized` without a token, `invalid_token` with a bad one."""
    state = conn.scope.get("state", {})
    user: User | None = state.get("user")
    if user is not None:
        return user
    headers = {"WWW-Authenticate": "Bearer"}
    error: str | None = state.get("auth_error")
    if error:
        if state.get("auth_error_code") == AccountDisabled.code:
            raise AccountDisabled(error, headers=headers)
        raise InvalidToken(error, headers=headers)
    raise Unauthorized("Authentication is required: send Authorization: Bearer <token>.", headers=headers)


Auth = Annotated[AuthService, Depends(get_auth_service)]
CurrentUser = Annotated[User, Depends(get_current_user)]


async def get_admin_user(user: CurrentUser) -> User:
    """The caller, who must be an administrator: 403 `forbidden` for anyone else."""
    if user.role != "admin":
        raise Forbidden("Only administrators may do this.")
    return user


AdminCaller = Annotated[User, Depends(get_admin_user)]


def get_admin_service(conn: HTTPConnection) -> AdminService:
    state = conn.app.state
    return AdminService(
        pool=state.pool,
        passwords=state.auth.passwords,
        files=FileStore.from_settings(state.settings),
        bus=state.bus,
    )


Admin = Annotated[AdminService, Depends(get_admin_service)]


async def get_session_service(conn: HTTPConnection) -> SessionService:
    state = conn.app.state
    return SessionService(
        state.pool,
        state.settings,
        files=FileStore.from_settings(state.settings),
        window=state.llm.catalog.context_window,
        search_slots=state.search_slots,
    )


Sessions = Annotated[SessionService, Depends(get_session_service)]


def get_file_service(conn: HTTPConnection, sessions: Sessions) -> FileService:
    settings: Settings = conn.app.state.settings
    # The app's token counter when the model clients are up (lifespan); else the file service loads its own.
    llm = getattr(conn.app.state, "llm", None)
    return FileService(
        pool=conn.app.state.pool,
        settings=settings,
        sessions=sessions,
        store=FileStore.from_settings(settings),
        counter=getattr(llm, "counter", None),
        extractor=getattr(conn.app.state, "extractor", None),
    )


Files = Annotated[FileService, Depends(get_file_service)]


def get_mcp_pool(conn: HTTPConnection) -> McpPool:
    mcp: McpPool = conn.app.state.mcp
    return mcp


Mcp = Annotated[McpPool, Depends(get_mcp_pool)]


def get_llm(conn: HTTPConnection) -> LlmClients:
    llm: LlmClients = conn.app.state.llm
    return llm


def get_catalog(conn: HTTPConnection) -> ModelCatalog:
    return get_llm(conn).catalog


Llm = Annotated[LlmClients, Depends(get_llm)]
Catalog = Annotated[ModelCatalog, Depends(get_catalog)]


def get_chat_service(conn: HTTPConnection) -> ChatService:
    chat: ChatService = conn.app.state.chat
    return chat


def get_connections(conn: HTTPConnection) -> ConnectionManager:
    connections: ConnectionManager = conn.app.state.connections
    return connections


Chat = Annotated[ChatService, Depends(get_chat_service)]
Connections = Annotated[ConnectionManager, Depends(get_connections)]
