"""Users, tokens and API keys on the wire."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Literal

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, JsonValue, StringConstraints

from chinwag.schemas.sessions import TokenUsage

MIN_PASSWORD = 8
MAX_PASSWORD = 1024
MAX_EMAIL = 254
MAX_DISPLAY_NAME = 100
MAX_KEY_NAME = 100
MAX_TOKEN = 1024


def _storable(value: str) -> str:
    """PostgreSQL text takes neither NUL nor lone surrogates; refuse them here rather than fail later."""
    if "\x00" in value:
        raise ValueError("must not contain NUL characters")
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        raise ValueError("must be valid Unicode (no unpaired surrogates)") from None
    return value


def normalize_email(value: str) -> str:
    """Emails compare case-insensitively; they are stored trimmed and lower-cased."""
    email = _storable(value).strip().lower()
    local, at, domain = email.rpartition("@")
    if not at or not local or not domain or "." not in domain.strip(".") or domain.startswith("."):
        raise ValueError("is not a valid email address")
    if any(c.isspace() or not c.isprintable() for c in email):
        raise ValueError("is not a valid email address")
    return email


def _display_name(value: str) -> str:
    name = " ".join(_storable(value).split())
    if not name:
        raise ValueError("must not be blank")
    if not name.isprintable():
        raise ValueError("must contain printable characters only")
    return name


def validate_password(value: str) -> str:
    return _storable(value)


Email = Annotated[str, Field(min_length=3, max_length=MAX_EMAIL), AfterValidator(normalize_email)]
Password = Annotated[str, Field(min_length=MIN_PASSWORD, max_length=MAX_PASSWORD), AfterValidator(validate_password)]
DisplayName = Annotated[str, Field(min_length=1, max_length=MAX_DISPLAY_NAME), AfterValidator(_display_name)]
Secret = Annotated[str, StringConstraints(min_length=1, max_length=MAX_TOKEN), AfterValidator(_storable)]


class _Request(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)


_USER_EXAMPLE: dict[str, JsonValue] = {
    "id": "0b9f6a52-6f1c-4c1e-9a3e-6c2f0d5e8a71",
    "email": "ada@example.com",
    "display_name": "Ada",
    "role": "user",
    "created_at": "2026-12-01T09:30:00Z",
}


class User(BaseModel):
    """A user as clients see it (never the password hash)."""

    model_config = ConfigDict(json_schema_extra={"examples": [_USER_EXAMPLE]})

    id: str
    email: str
    display_name: str
    role: Literal["admin", "user"]
    created_at: datetime


class AdminUser(User):
    """A user as administrators see them: with their state and what they use."""

    disabled: bool
    last_login_at: datetime | None
    session_count: int
    usage: TokenUsage


class AdminUserPage(BaseModel):
    items: list[AdminUser]
    next_cursor: str | None


class Tokens(BaseModel):
    """What a login or refresh returns. `expires_in` is the access token's lifetime in seconds."""

    model_config = ConfigDict(
        json_schema_extra={
            "examples": [
                {
                    "access_token": "eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiIwYjlmIn0.c2lnbmF0dXJl",
                    "refresh_token": "rt_4f3c2b1a0e9d8c7b6a5f4e3d2c1b0a99",
                    "token_type": "bearer",
                    "expires_in": 900,
                    "user": _USER_EXAMPLE,
                }
            ]
        }
    )

    access_token: str
    refresh_token: str
    token_type: Literal["bearer"] = "bearer"
    expires_in: int
    user: User


class RegisterRequest(_Request):
    model_config = ConfigDict(
        extra="forbid",
        strict=True,
        json_schema_extra={
            "examples": [
                {"email": "ada@example.com", "password": "correct horse battery staple", "display_name": "Ada"}
            ]
        },
    )

    email: Email
    password: Password
    display_name: DisplayName | None = None


class LoginRequest(_Request):
    model_config = ConfigDict(
        extra="forbid",
        strict=True,
        json_schema_extra={"examples": [{"email": "ada@example.com", "password": "correct horse battery staple"}]},
    )

    # Only bounded here: a password shorter than today's minimum may still be a valid old one.
    email: Annotated[str, Field(min_length=1, max_length=MAX_EMAIL), AfterValidator(_storable)]
    password: Annotated[str, Field(min_length=1, max_length=MAX_PASSWORD), AfterValidator(_storable)]


class RefreshRequest(_Request):
    refresh_token: Secret


class LogoutRequest(_Request):
    refresh_token: Secret


class MeUpdate(_Request):
    display_name: DisplayName


class PasswordChange(_Request):
    # The current one only bounded: it may be shorter than today's minimum.
    current_password: Annotated[str, Field(min_length=1, max_length=MAX_PASSWORD), AfterValidator(_storable)]
    new_password: Password


class AdminUserCreate(_Request):
    email: Email
    password: Password
    display_name: DisplayName | None = None
    role: Literal["admin", "user"] = "user"


class AdminUserUpdate(_Request):
    role: Literal["admin", "user"] | None = None
    disabled: bool | None = None
    password: Password | None = None


class ApiKeyCreate(_Request):
    name: DisplayName


class ApiKey(BaseModel):
    """An API key as listed: the key itself is shown only once, at creation."""

    id: str
    name: str
    created_at: datetime
    last_used_at: datetime | None = None


class ApiKeyCreated(BaseModel):
    """A new API key, with the key (shown this once)."""

    id: str
    name: str
    key: str
    created_at: datetime


class ApiKeyList(BaseModel):
    items: list[ApiKey]
