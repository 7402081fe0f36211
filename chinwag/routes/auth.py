"""Accounts, tokens and API keys."""

from __future__ import annotations

from fastapi import APIRouter, Request, Response, status

from chinwag.dependencies import Auth, CurrentUser
from chinwag.errors import error_responses
from chinwag.schemas.users import (
    ApiKeyCreate,
    ApiKeyCreated,
    ApiKeyList,
    LoginRequest,
    LogoutRequest,
    MeUpdate,
    PasswordChange,
    RefreshRequest,
    RegisterRequest,
    Tokens,
    User,
)

router = APIRouter(prefix="/auth", tags=["auth"], responses=error_responses(401, 403, 404, 409))


@router.post("/register", status_code=status.HTTP_201_CREATED)
async def register(body: RegisterRequest, auth: Auth, request: Request) -> User:
    """Create an account (as CHINWAG_REGISTRATION allows)."""
    client = request.client.host if request.client else None
    return await auth.register(email=body.email, password=body.password, display_name=body.display_name, client=client)


@router.post("/login")
async def login(body: LoginRequest, auth: Auth, request: Request) -> Tokens:
    """Sign in with email and password."""
    client = request.client.host if request.client else None
    return await auth.login(email=body.email, password=body.password, client=client)


@router.post("/refresh")
async def refresh(body: RefreshRequest, auth: Auth) -> Tokens:
    """Trade a refresh token for new tokens; the old refresh token stops working."""
    return await auth.refresh(refresh_token=body.refresh_token)


@router.post("/logout", status_code=status.HTTP_204_NO_CONTENT)
async def logout(body: LogoutRequest, auth: Auth) -> Response:
    """End the sign-in the refresh token belongs to."""
    await auth.logout(refresh_token=body.refresh_token)
    return Response(status_code=status.HTTP_204_NO_CONTENT)


@router.get("/me")
async def me(user: CurrentUser) -> User:
    """The signed-in user."""
    return user


@router.patch("/me")
async def update_me(body: MeUpdate, auth: Auth, user: CurrentUser) -> User:
    """Change the signed-in user's display name."""
    return await auth.update_me(user=user, display_name=body.display_name)


@router.post("/password", status_code=status.HTTP_204_NO_CONTENT)
async def change_password(body: PasswordChange, auth: Auth, user: CurrentUser) -> Response:
    """Change the password; every sign-in of the user ends (access tokens run out on their own)."""
    await auth.change_password(user=user, current_password=body.current_password, new_password=body.new_password)
    return Response(status_code=status.HTTP_204_NO_CONTENT)


@router.post("/api-keys", status_code=status.HTTP_201_CREATED)
async def create_api_key(body: ApiKeyCreate, auth: Auth, user: CurrentUser) -> ApiKeyCreated:
    """Create an API key; the key is in this answer only."""
    return await auth.create_api_key(user=user, name=body.name)


@router.get("/api-keys")
async def list_api_keys(auth: Auth, user: CurrentUser) -> ApiKeyList:
    """The user's API keys (without the keys themselves)."""
    return ApiKeyList(items=await auth.list_api_keys(user=user))


@router.delete("/api-keys/{key_id}", status_code=status.HTTP_204_NO_CONTENT)
async def delete_api_key(key_id: str, auth: Auth, user: CurrentUser) -> Response:
    """Delete an API key; it stops working at once."""
    await auth.delete_api_key(user=user, key_id=key_id)
    return Response(status_code=status.HTTP_204_NO_CONTENT)
