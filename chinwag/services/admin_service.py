"""Administration of accounts: list, create, change, disable and delete users (also what `chinwag user ...` runs).

The last-admin rule: there is always at least one active (not disabled) administrator. Demoting, disabling or
deleting one locks every active admin row in the same transaction first, so two of these at once (two admins
demoting each other, say) run one after the other and the second is refused with `Conflict`.

Disabling takes effect at once: every credential check reads the flag, the user's refresh tokens are revoked, their
running runs are interrupted and their open sockets (on any worker, through the bus) check their credential again
and close with 4401.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import contextlib
import logging
import uuid
from typing import Literal

import asyncpg
import orjson

from chinwag.db import users as db
from chinwag.errors import BadRequest, Conflict, NotFound
from chinwag.schemas.users import AdminUser, AdminUserPage
from chinwag.services.auth_service import PasswordHashing, create_user
from chinwag.services.file_service import FileStore
from chinwag.websocket.bus import RECHECK_CREDENTIALS, Bus, Envelope

logger = logging.getLogger(__name__)

Role = Literal["admin", "user"]
# How long a delete waits for the user's interrupted runs to record their end before removing their rows.
RUN_END_WAIT_S = 10.0
LAST_ADMIN = "This is the last active administrator: make another user an admin first."


def encode_cursor(email: str, user_id: str) -> str:
    raw = orjson.dumps([email, uuid.UUID(user_id).hex])
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode("ascii")


def decode_cursor(cursor: str) -> tuple[str, uuid.UUID]:
    """Parse a cursor given back by a client; anything we did not make is a 400."""
    try:
        email, hex_id = orjson.loads(base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)))
        if not isinstance(email, str) or not isinstance(hex_id, str) or "\x00" in email:
            raise ValueError(cursor)
        return email, uuid.UUID(hex=hex_id)
    except (ValueError, TypeError, binascii.Error, orjson.JSONDecodeError):
        raise BadRequest("invalid cursor: pass back the next_cursor of a previous page") from None


def _user_id(value: str) -> uuid.UUID:
    try:
        return uuid.UUID(value)
    except ValueError:
        raise NotFound("No such user.") from None


class AdminService:
    """Accounts as an administrator (or the operator at the console) manages them. `bus` is None in the CLI, which
    has no sockets or runs of its own: there a disabled user's sockets close at their next periodic check."""

    def __init__(
        self, *, pool: asyncpg.Pool, passwords: PasswordHashing, files: FileStore, bus: Bus | None = None
    ) -> None:
        self._pool = pool
        self._passwords = passwords
        self._files = files
        self._bus = bus

    async def list_users(self, *, limit: int = 50, cursor: str | None = None, q: str | None = None) -> AdminUserPage:
        """Users by email; `q` keeps those whose email starts with it (case-insensitively)."""
        after = decode_cursor(cursor) if cursor is not None else None
        if q is not None and "\x00" in q:
            raise BadRequest("q must not contain NUL characters")
        prefix = q.strip().lower() if q else None
        items = await db.list_admin_users(self._pool, limit=limit + 1, after=after, email_prefix=prefix or None)
        next_cursor = None
        if len(items) > limit:
            items = items[:limit]
            next_cursor = encode_cursor(items[-1].email, items[-1].id)
        return AdminUserPage(items=items, next_cursor=next_cursor)

    async def get_user(self, *, user_id: str) -> AdminUser:
        found = await db.get_admin_user(self._pool, _user_id(user_id))
        if found is None:
            raise NotFound("No such user.")
        return found

    async def create_user(
        self, *, email: str, password: str, display_name: str | None = None, role: Role = "user"
    ) -> AdminUser:
        """Create an account whatever the registration mode; a taken email is `Conflict`."""
        user = await create_user(
            self._pool,
            self._passwords,
            email=email,
            password=password,
            display_name=display_name,
            admin=role == "admin",
        )
        return await self.get_user(user_id=user.id)

    async def update_user(
        self,
        *,
        user_id: str,
        role: Role | None = None,
        disabled: bool | None = None,
        password: str | None = None,
    ) -> AdminUser:
        """Change a user's role, disabled state or password (None: leave it). A new password or disabling ends
        every sign-in of theirs."""
        uid = _user_id(user_id)
        password_hash = await self._passwords.hash(password) if password is not None else None
        async with self._pool.acquire() as conn, conn.transaction():
            admins = await db.lock_active_admins(conn)
            account = await db.lock_account(conn, uid)
            if account is None:
                raise NotFound("No such user.")
            leaves_admins = role == "user" or disabled is True
            if leaves_admins and admins == {uid}:
                raise Conflict(LAST_ADMIN)
            await db.update_account(conn, uid, role=role, disabled=disabled, password_hash=password_hash)
            if password_hash is not None or disabled is True:
                await db.revoke_user_refresh_tokens(conn, uid)
        if disabled is True and not account.disabled:
            logger.info("user %s disabled", user_id)
            await self._end_activity(uid)
        elif disabled is False and account.disabled:
            logger.info("user %s enabled again", user_id)
        if role is not None and role != account.user.role:
            logger.info("user %s is now %s", user_id, role)
        return await self.get_user(user_id=user_id)

    async def delete_user(self, *, user_id: str) -> None:
        """Delete a user with every session, message, file (bytes too), token and key of theirs. Their runs are
        interrupted first and given `RUN_END_WAIT_S` to record their end, so their sockets hear of it."""
        uid = _user_id(user_id)
        async with self._pool.acquire() as conn, conn.transaction():
            admins = await db.lock_active_admins(conn)
            if await db.lock_account(conn, uid) is None:
                raise NotFound("No such user.")
            if admins == {uid}:
                raise Conflict(LAST_ADMIN)
        await self._end_activity(uid, wait=True)
        async with self._pool.acquire() as conn, conn.transaction():
            admins = await db.lock_active_admins(conn)  # again: another admin may have gone meanwhile
            if await db.lock_account(conn, uid) is None:
                raise NotFound("No such user.")
            if admins == {uid}:
                raise Conflict(LAST_ADMIN)
            files = await db.delete_user(conn, uid)
        for session_id, keys in files.items():
            await self._files.remove_session_files(session_id=session_id, storage_keys=keys)
        logger.info("user %s deleted with %d session(s)", user_id, len(files))

    async def _end_activity(self, user_id: uuid.UUID, *, wait: bool = False) -> None:
        """Interrupt the user's runs and make their sockets check their credential now, on every worker."""
        if self._bus is None:
            return
        runs = await db.user_active_runs(self._pool, user_id)
        for session_id, run_id in runs:
            await self._bus.interrupt(session_id, run_id)
        for session_id in await db.user_session_ids(self._pool, user_id):
            await self._bus.publish(Envelope(session_id=session_id, frame=RECHECK_CREDENTIALS))
        if wait and runs:
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(RUN_END_WAIT_S):
                    # They may run in other processes: the run slots, freed as each run ends, say when.
                    while True:
                        if not await db.user_active_runs(self._pool, user_id):
                            break
                        await asyncio.sleep(0.05)

    async def id_of(self, email: str) -> str:
        """The id of the user with this email (the CLI names users by email)."""
        found = await db.get_login(self._pool, email.strip().lower())
        if found is None:
            raise NotFound(f"No user with the email {email.strip().lower()}.")
        return found[0].user.id
