"""`/admin/users`: accounts, for administrators only."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Query, Response, status

from chinwag.dependencies import Admin, AdminCaller
from chinwag.errors import error_responses
from chinwag.schemas.users import MAX_EMAIL, AdminUser, AdminUserCreate, AdminUserPage, AdminUserUpdate

router = APIRouter(prefix="/admin/users", tags=["admin"], responses=error_responses(401, 403, 404, 409))

PageLimit = Annotated[int, Query(ge=1, le=100, description="page size, 1-100")]


@router.get("")
async def list_users(
    _admin: AdminCaller,
    admin: Admin,
    limit: PageLimit = 50,
    cursor: Annotated[str | None, Query(max_length=512, description="next_cursor of the previous page")] = None,
    q: Annotated[str | None, Query(max_length=MAX_EMAIL, description="keep emails that start with this")] = None,
) -> AdminUserPage:
    """Every user, by email, with their state and usage."""
    return await admin.list_users(limit=limit, cursor=cursor, q=q)


@router.post("", status_code=status.HTTP_201_CREATED)
async def create_user(body: AdminUserCreate, _admin: AdminCaller, admin: Admin) -> AdminUser:
    """Create a user, whatever CHINWAG_REGISTRATION says."""
    return await admin.create_user(
        email=body.email, password=body.password, display_name=body.display_name, role=body.role
    )


@router.patch("/{user_id}")
async def update_user(user_id: str, body: AdminUserUpdate, _admin: AdminCaller, admin: Admin) -> AdminUser:
    """Change a user's role, disabled state or password; absent fields stay as they are."""
    return await admin.update_user(user_id=user_id, role=body.role, disabled=body.disabled, password=body.password)


@router.delete("/{user_id}", status_code=status.HTTP_204_NO_CONTENT)
async def delete_user(user_id: str, _admin: AdminCaller, admin: Admin) -> Response:
    """Delete a user with all their sessions, messages and files."""
    await admin.delete_user(user_id=user_id)
    return Response(status_code=status.HTTP_204_NO_CONTENT)
