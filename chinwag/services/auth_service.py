"""Accounts and credentials: registration, login, refresh-token rotation, API keys, and turning a bearer token
into a `User`.

Access tokens are short-lived JWTs (HS256 only). Refresh tokens and API keys are random strings of which only the
sha256 is stored. Argon2id hashing is CPU- and memory-heavy, so it runs in threads of its own (a bounded executor
the lifespan owns), never on the event loop nor behind other work.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import secrets
import time
import uuid
from collections import OrderedDict
from collections.abc import Callable
from concurrent.futures import Executor
from datetime import UTC, datetime, timedelta
from typing import Literal, TypeVar

import asyncpg
import jwt
from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError

from chinwag.config import Settings
from chinwag.db import users as db
from chinwag.errors import (
    AccountDisabled,
    Conflict,
    InvalidCredentials,
    InvalidToken,
    NotFound,
    RateLimited,
    RegistrationClosed,
)
from chinwag.schemas.users import ApiKey, ApiKeyCreated, Tokens, User
from chinwag.services.rate_limit import RateLimiter, retry_after_seconds

logger = logging.getLogger(__name__)

T = TypeVar("T")

JWT_ALGORITHM = "HS256"
API_KEY_PREFIX = "cw_"
REFRESH_TOKEN_PREFIX = "cwr_"
LOGIN_WINDOW_S = 60.0
REGISTER_WINDOW_S = 3600.0
VERIFIED_TOKENS_KEPT = 10_000
"""Access tokens remembered as verified (the most recently used): a bound on memory, not on who may sign in."""


def sha256(value: str) -> bytes:
    return hashlib.sha256(value.encode("utf-8")).digest()


def _parse_uuid(value: object) -> uuid.UUID | None:
    if not isinstance(value, str):
        return None
    try:
        return uuid.UUID(value)
    except ValueError:
        return None


class PasswordHashing:
    """Argon2id via argon2-cffi, run in `executor` (the lifespan gives it threads of its own, so that no other work
    queued on asyncio's default executor, file extraction say, can hold up a login; None: the default executor).
    Owns the dummy hash that unknown emails are checked against, so that a wrong email costs as long as a wrong
    password."""

    def __init__(self, hasher: PasswordHasher | None = None, *, executor: Executor | None = None) -> None:
        self._hasher = hasher or PasswordHasher()
        self._executor = executor
        self._dummy: str | None = None

    @classmethod
    def from_settings(cls, settings: Settings, *, executor: Executor | None = None) -> PasswordHashing:
        hasher = PasswordHasher(
            time_cost=settings.password_hash_time_cost, memory_cost=settings.password_hash_memory_kib
        )
        return cls(hasher, executor=executor)

    async def _run(self, func: Callable[..., T], *args: str) -> T:
        return await asyncio.get_running_loop().run_in_executor(self._executor, func, *args)

    async def hash(self, password: str) -> str:
        return await self._run(self._hasher.hash, password)

    async def verify(self, password_hash: str | None, password: str) -> bool:
        if password_hash is None:
            if self._dummy is None:
                self._dummy = await self.hash(secrets.token_urlsafe(16))
            password_hash = self._dummy
            await self._run(self._check, password_hash, password)
            return False
        return await self._run(self._check, password_hash, password)

    def needs_rehash(self, password_hash: str) -> bool:
        return self._hasher.check_needs_rehash(password_hash)

    def _check(self, password_hash: str, password: str) -> bool:
        try:
            return self._hasher.verify(password_hash, password)
        except (VerificationError, InvalidHashError):
            return False


async def _insert_user(
    conn: db.OneConn,
    *,
    email: str,
    password_hash: str,
    display_name: str,
    role: Literal["admin", "user"],
) -> User:
    try:
        user = await db.insert_user(
            conn, email=email, password_hash=password_hash, display_name=display_name, role=role
        )
    except db.EmailTaken:
        raise Conflict("A user with this email already exists.") from None
    logger.info("user %s created (role %s)", user.id, role)
    return user


async def create_user(
    pool: asyncpg.Pool,
    passwords: PasswordHashing,
    *,
    email: str,
    password: str,
    display_name: str | None = None,
    admin: bool = False,
) -> User:
    """Create an account whatever the registration mode (also what `chinwag user create` runs). The email and
    password are expected valid already (see `RegisterRequest`); a taken email raises `Conflict`."""
    password_hash = await passwords.hash(password)
    name = display_name or email.partition("@")[0]
    async with pool.acquire() as conn:
        return await _insert_user(
            conn, email=email, password_hash=password_hash, display_name=name, role="admin" if admin else "user"
        )


class AuthService:
    """Everything about who a caller is. Built once by the lifespan (`app.state.auth`)."""

    def __init__(
        self,
        *,
        pool: asyncpg.Pool,
        settings: Settings,
        secret: str,
        limiter: RateLimiter,
        passwords: PasswordHashing | None = None,
    ) -> None:
        self._pool = pool
        self._settings = settings
        self._secret = secret
        self._limiter = limiter
        self._verified: OrderedDict[str, tuple[uuid.UUID, float]] = OrderedDict()
        """Access tokens decoded already: their user and expiry (see `_access_token_user`)."""
        self._passwords = passwords or PasswordHashing.from_settings(settings)

    @property
    def passwords(self) -> PasswordHashing:
        return self._passwords

    # --- accounts ---

    async def register(self, *, email: str, password: str, display_name: str | None, client: str | None = None) -> User:
        """Create an account as the registration mode allows. In `first_user` mode the first account is the
        admin and registration closes behind it; concurrent first registrations are serialized by a lock.
        Attempts are limited per client address (`registrations_per_hour`), checked before the costly hash."""
        mode = self._settings.registration
        if mode == "closed":
            raise RegistrationClosed()
        if client is not None:
            wait = await self._limiter.acquire(
                f"register:addr:{client}", limit=self._settings.registrations_per_hour, window_s=REGISTER_WINDOW_S
            )
            if wait:
                raise RateLimited(
                    "Too many registrations from here: try again later.", retry_after=retry_after_seconds(wait)
                )
        if mode == "first_user" and await db.any_user(self._pool):
            raise RegistrationClosed()
        password_hash = await self._passwords.hash(password)
        name = display_name or email.partition("@")[0]
        async with self._pool.acquire() as conn, conn.transaction():
            role: Literal["admin", "user"] = "user"
            if mode == "first_user":
                if await db.lock_first_user(conn):
                    raise RegistrationClosed()
                role = "admin"
            return await self._insert(conn, email=email, password_hash=password_hash, display_name=name, role=role)

    async def create_user(
        self, *, email: str, password: str, display_name: str | None = None, admin: bool = False
    ) -> User:
        """Create an account whatever the registration mode."""
        return await create_user(
            self._pool, self._passwords, email=email, password=password, display_name=display_name, admin=admin
        )

    async def _insert(
        self,
        conn: db.OneConn,
        *,
        email: str,
        password_hash: str,
        display_name: str,
        role: Literal["admin", "user"],
    ) -> User:
        return await _insert_user(conn, email=email, password_hash=password_hash, display_name=display_name, role=role)

    async def login(self, *, email: str, password: str, client: str | None) -> Tokens:
        """Check a password and sign in. Only failures count, per client address and per account:
        - an address past its limit is refused before any password is checked (its own failures, never others');
        - an account past its limit still takes its correct password; a wrong guess for it answers 429 (the
          back-off slows guessing, and nobody can lock the owner out by failing on purpose).
        """
        email = email.strip().lower()
        limit = self._settings.login_attempts_per_minute
        address_key = f"login:addr:{client}" if client else None
        if address_key is not None:
            # Taken before the password is checked, so a burst cannot pass the limit; given back on success.
            wait = await self._limiter.acquire(address_key, limit=limit, window_s=LOGIN_WINDOW_S)
            if wait:
                raise RateLimited(
                    "Too many failed logins from here: try again later.", retry_after=retry_after_seconds(wait)
                )
        found = await db.get_login(self._pool, email)
        ok = await self._passwords.verify(found[1] if found else None, password)
        if not ok or found is None:
            failures = await self._limiter.record(f"login:account:{email}", window_s=LOGIN_WINDOW_S)
            if failures > limit:
                raise RateLimited(
                    "Too many failed logins for this account: try again later.", retry_after=int(LOGIN_WINDOW_S)
                )
            raise InvalidCredentials("Wrong email or password.")
        if address_key is not None:
            await self._limiter.release(address_key)
        account, password_hash = found
        if account.disabled:  # said only to whoever knows the password
            raise AccountDisabled()
        user = account.user
        if self._passwords.needs_rehash(password_hash):
            await db.set_password_hash(self._pool, uuid.UUID(user.id), await self._passwords.hash(password))
        await db.set_last_login(self._pool, uuid.UUID(user.id))
        return await self._issue(user)

    async def refresh(self, *, refresh_token: str) -> Tokens:
        """Rotate a refresh token. A token presented after it was used revokes its whole family: someone else
        holds a copy of it, and every sign-in descended from it ends."""
        async with self._pool.acquire() as conn, conn.transaction():
            rotated = await self._rotate(conn, sha256(refresh_token))
        if rotated is None:
            raise InvalidToken("The refresh token is invalid, expired or already used.")
        user, new_token = rotated
        return self._tokens(user, new_token)

    async def _rotate(self, conn: db.OneConn, token_hash: bytes) -> tuple[User, str] | None:
        found = await db.find_refresh_token(conn, token_hash)
        if found is None:
            return None
        await db.lock_family(conn, found.family_id)
        found = await db.find_refresh_token(conn, token_hash)  # again, now that nothing else moves the family
        if found is None:
            return None
        account = await db.get_account(conn, found.user_id)
        if account is None:
            return None
        if account.disabled:  # before the token's own state: disabling revoked it, and this says why
            raise AccountDisabled()
        if found.revoked:
            return None
        if found.used:
            # Returning normally commits the revocation; only then does the caller refuse the token.
            logger.warning("a used refresh token was presented again: revoking its family %s", found.family_id)
            await db.revoke_family(conn, found.family_id)
            return None
        if found.expired:
            return None
        user = account.user
        await db.mark_used(conn, token_hash)
        return user, await self._new_refresh_token(conn, user=user, family_id=found.family_id)

    async def logout(self, *, refresh_token: str) -> None:
        """End the sign-in the refresh token belongs to. Unknown or dead tokens are fine (idempotent)."""
        async with self._pool.acquire() as conn, conn.transaction():
            found = await db.find_refresh_token(conn, sha256(refresh_token))
            if found is not None:
                await db.lock_family(conn, found.family_id)
                await db.revoke_family(conn, found.family_id)

    async def _issue(self, user: User) -> Tokens:
        async with self._pool.acquire() as conn:
            refresh_token = await self._new_refresh_token(conn, user=user, family_id=uuid.uuid4())
        return self._tokens(user, refresh_token)

    async def _new_refresh_token(self, conn: db.OneConn, *, user: User, family_id: uuid.UUID) -> str:
        refresh_token = REFRESH_TOKEN_PREFIX + secrets.token_urlsafe(32)
        await db.insert_refresh_token(
            conn,
            user_id=uuid.UUID(user.id),
            family_id=family_id,
            token_hash=sha256(refresh_token),
            expires_at=datetime.now(UTC) + timedelta(seconds=self._settings.refresh_token_ttl_s),
        )
        return refresh_token

    def _tokens(self, user: User, refresh_token: str) -> Tokens:
        return Tokens(
            access_token=self.access_token(user),
            refresh_token=refresh_token,
            expires_in=self._settings.access_token_ttl_s,
            user=user,
        )

    def access_token(self, user: User) -> str:
        now = int(time.time())
        claims = {
            "sub": user.id,
            "typ": "access",
            "iat": now,
            "exp": now + self._settings.access_token_ttl_s,
            "jti": secrets.token_urlsafe(8),
        }
        return jwt.encode(claims, self._secret, algorithm=JWT_ALGORITHM)

    # --- bearer tokens ---

    def _access_token_user(self, token: str) -> uuid.UUID:
        """The user id of a valid access token; `InvalidToken` otherwise. A token is decoded (signature, claims)
        once: what that proved cannot change but its expiry, so later calls (every request, every chat message of
        a socket) check only that, from `_verified`."""
        known = self._verified.get(token)
        if known is not None:
            user_id, expires_at = known
            if time.time() < expires_at:
                self._verified.move_to_end(token)
                return user_id
            del self._verified[token]
            raise InvalidToken("The access token has expired.")
        try:
            claims = jwt.decode(
                token,
                self._secret,
                algorithms=[JWT_ALGORITHM],
                options={"require": ["exp", "iat", "sub"]},
            )
        except jwt.ExpiredSignatureError:
            raise InvalidToken("The access token has expired.") from None
        except jwt.InvalidTokenError:
            raise InvalidToken("The access token is invalid.") from None
        subject = _parse_uuid(claims.get("sub"))
        if claims.get("typ") != "access" or subject is None:
            raise InvalidToken("The access token is invalid.")
        self._verified[token] = (subject, float(claims["exp"]))
        if len(self._verified) > VERIFIED_TOKENS_KEPT:
            self._verified.popitem(last=False)
        return subject

    async def authenticate(self, token: str) -> User:
        """The user a bearer token (access token or API key) stands for; `InvalidToken` otherwise."""
        if token.startswith(API_KEY_PREFIX):
            account = await db.user_by_api_key(self._pool, sha256(token))
            if account is None:
                raise InvalidToken("The API key is invalid or was deleted.")
            if account.disabled:
                raise AccountDisabled()
            return account.user
        found = await db.get_account(self._pool, self._access_token_user(token))
        if found is None:
            raise InvalidToken("The access token's user no longer exists.")
        if found.disabled:
            raise AccountDisabled()
        return found.user

    # --- the signed-in user's own account ---

    async def update_me(self, *, user: User, display_name: str) -> User:
        updated = await db.set_display_name(self._pool, uuid.UUID(user.id), display_name)
        if updated is None:
            raise InvalidToken("The access token's user no longer exists.")
        return updated

    async def change_password(self, *, user: User, current_password: str, new_password: str) -> None:
        """Check the current password, set the new one, and end every sign-in of the user (each refresh family);
        access tokens already issued keep working until they expire. Wrong guesses count against the account's
        login limit, so this is no way around it."""
        user_id = uuid.UUID(user.id)
        ok = await self._passwords.verify(await db.get_password_hash(self._pool, user_id), current_password)
        if not ok:
            failures = await self._limiter.record(f"login:account:{user.email}", window_s=LOGIN_WINDOW_S)
            if failures > self._settings.login_attempts_per_minute:
                raise RateLimited("Too many wrong passwords: try again later.", retry_after=int(LOGIN_WINDOW_S))
            raise InvalidCredentials("The current password is wrong.")
        password_hash = await self._passwords.hash(new_password)
        async with self._pool.acquire() as conn, conn.transaction():
            await db.set_password_hash(conn, user_id, password_hash)
            await db.revoke_user_refresh_tokens(conn, user_id)
        logger.info("user %s changed their password; their refresh tokens are revoked", user.id)

    # --- API keys ---

    async def create_api_key(self, *, user: User, name: str) -> ApiKeyCreated:
        key = API_KEY_PREFIX + secrets.token_urlsafe(32)
        row = await db.insert_api_key(self._pool, user_id=uuid.UUID(user.id), name=name, key_hash=sha256(key))
        return ApiKeyCreated(id=row.id, name=row.name, key=key, created_at=row.created_at)

    async def list_api_keys(self, *, user: User) -> list[ApiKey]:
        return await db.list_api_keys(self._pool, uuid.UUID(user.id))

    async def delete_api_key(self, *, user: User, key_id: str) -> None:
        parsed = _parse_uuid(key_id)
        if parsed is None or not await db.delete_api_key(self._pool, user_id=uuid.UUID(user.id), key_id=parsed):
            raise NotFound("No such API key.")
