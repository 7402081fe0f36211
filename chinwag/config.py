"""Settings: read once from the environment (and an optional `.env`), frozen, passed down."""

from __future__ import annotations

import difflib
import ipaddress
import os
import secrets
import time
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import (
    AliasChoices,
    BaseModel,
    Field,
    SecretStr,
    ValidationError,
    field_validator,
    model_validator,
)
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

DEFAULT_MODEL = "gpt-4.1-mini"
DEFAULT_CONTEXT_WINDOW = 128_000
MiB = 1024 * 1024
MIN_SECRET_BYTES = 32


class ModelSpec(BaseModel, frozen=True):
    """A model offered to users; `context_window` and `vision` None mean "look it up in the catalog"."""

    id: str
    context_window: int | None = None
    vision: bool | None = None
    """Accepts images (`id:window:vision` in `CHINWAG_MODELS`)."""


class Settings(BaseSettings):
    """Everything chinwag reads from its environment. Build it once with `load_settings()`."""

    model_config = SettingsConfigDict(
        env_prefix="CHINWAG_", env_file=".env", extra="ignore", frozen=True, populate_by_name=True
    )

    database_url: str | None = None
    data_dir: Path = Path(".chinwag")
    redis_url: str | None = None
    redis_prefix: str = "chinwag:"
    """Start of every Redis key and channel chinwag uses: several deployments (or test runs) may share one Redis."""
    secret_key: SecretStr | None = None

    openai_api_key: SecretStr | None = Field(default=None, validation_alias=AliasChoices("OPENAI_API_KEY"))
    openai_base_url: str | None = Field(default=None, validation_alias=AliasChoices("OPENAI_BASE_URL"))
    azure_openai_api_key: SecretStr | None = Field(default=None, validation_alias=AliasChoices("AZURE_OPENAI_API_KEY"))
    azure_openai_endpoint: str | None = Field(default=None, validation_alias=AliasChoices("AZURE_OPENAI_ENDPOINT"))
    openai_api_version: str | None = Field(default=None, validation_alias=AliasChoices("OPENAI_API_VERSION"))
    llm_api: Literal["chat_completions", "responses"] = "chat_completions"

    models: Annotated[tuple[ModelSpec, ...], NoDecode] = (ModelSpec(id=DEFAULT_MODEL),)
    default_model: str | None = None
    instructions: str = "You are a helpful assistant."
    max_turns: int = Field(default=20, ge=1, le=200)
    max_output_tokens: int = Field(default=4096, ge=1, le=1_000_000)
    """The most tokens one model answer may take; never more than the model's window leaves after the context."""

    mcp_config: Path | None = None

    registration: Literal["open", "first_user", "closed"] = "first_user"
    cors_origins: Annotated[tuple[str, ...], NoDecode] = ()
    trusted_proxies: Annotated[tuple[str, ...], NoDecode] = ()
    """Addresses or CIDRs of the reverse proxies whose `X-Forwarded-For` names the client; none by default."""
    max_upload_bytes: int = Field(default=20 * MiB, gt=0)
    max_body_bytes: int = Field(default=1 * MiB, gt=0)
    """Largest JSON request body (uploads have `max_upload_bytes`, imports `max_import_bytes`)."""
    max_import_bytes: int = Field(default=32 * MiB, gt=0)
    """Largest body of `POST /sessions/import` (a session's JSON export, at most 10,000 messages)."""
    max_message_chars: int = Field(default=100_000, gt=0, le=10_000_000)

    access_token_ttl_s: int = Field(default=15 * 60, gt=0)
    refresh_token_ttl_s: int = Field(default=30 * 24 * 3600, gt=0)
    ws_auth_recheck_s: float = Field(default=60.0, gt=0, le=60)
    """How often an open chat socket checks that its credential still works (it also does when it starts a run)."""
    login_attempts_per_minute: int = Field(default=10, gt=0)
    registrations_per_hour: int = Field(default=10, gt=0)
    """Registration attempts per client address per hour (each costs a password hash)."""
    max_sockets_per_user: int = Field(default=32, gt=0)
    """Chat sockets one user may hold open at once, per process (then `rate_limited` and close 4429)."""
    max_active_runs_per_user: int = Field(default=4, gt=0)
    """Runs one user may have going at once, over all their sessions and every worker (the runs table)."""
    max_storage_bytes_per_user: int = Field(default=1024 * MiB, gt=0)
    """Bytes of uploaded files one user may keep (then uploads answer 413 `quota_exceeded`)."""
    search_timeout_s: float = Field(default=5.0, gt=0, le=300)
    """Longest a search query may run in PostgreSQL (then 503)."""
    search_concurrency_per_user: int = Field(default=2, gt=0, le=100)
    """Searches one user may have running at once, per process (then 429)."""
    chat_messages_per_minute: int = Field(default=0, ge=0)
    """Chat messages one user may send per minute, over all their sessions; 0: no limit."""
    # Argon2id cost: the defaults are argon2-cffi's (RFC 9106 low-memory profile); tests lower them.
    password_hash_time_cost: int = Field(default=3, ge=1, le=20)
    password_hash_memory_kib: int = Field(default=65536, ge=1024, le=4 * 1024 * 1024)
    password_hash_threads: int = Field(default=2, ge=1, le=64)
    """Threads that hash passwords (their own: no other work can delay a login); also how many hashes run at once."""
    db_pool_size: int = Field(default=10, ge=1, le=500)
    db_acquire_timeout_s: float = Field(default=10.0, gt=0, le=300)
    """How long a request waits for a free database connection before it answers 503."""
    # A process's lease on the runs it executes (docs/reliability.md): stamped every `run_heartbeat_s`; a run
    # whose stamp is older than `run_stale_s` was left by a dead process, and the sweep (every `run_sweep_s`, in
    # every process) ends it and tells its sockets.
    run_heartbeat_s: float = Field(default=2.0, gt=0, le=60)
    run_stale_s: float = Field(default=6.0, gt=0, le=600)
    run_sweep_s: float = Field(default=2.0, gt=0, le=600)
    # Text extraction of uploads runs in worker processes (docs/reliability.md): how many, how long one file may
    # take before its worker is killed, and the address space each worker may use.
    llm_stall_timeout_s: float = Field(default=60.0, gt=0, le=3600)
    """The model server sending nothing for this long (before its answer or between two chunks) ends the run with
    `llm_error`; before anything streamed the `openai` client first retries (twice, with backoff)."""
    lean_stream: bool = True
    """Streamed model answers parsed by chinwag (`chinwag/llm/lean_stream.py`: the same objects, a fraction of the
    CPU); false: by the `openai` client's own stream, for a provider the lean parser would not read."""
    extract_workers: int = Field(default=2, ge=1, le=64)
    extract_timeout_s: float = Field(default=30.0, gt=0, le=3600)
    extract_memory_mib: int = Field(default=1024, ge=256, le=65536)

    log_level: Literal["DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL"] = "INFO"
    log_format: Literal["text", "json"] = "text"
    """`json`: one JSON object per line (time, level, logger, message and the request, user, session and run ids)."""
    metrics: bool = False
    """Serve Prometheus metrics at `/metrics` (no auth: restrict it at the reverse proxy)."""
    shutdown_grace_s: float = Field(default=30.0, ge=0, le=3600)
    """On SIGTERM, how long runs in flight may go on before they are interrupted."""

    @field_validator("log_level", mode="before")
    @classmethod
    def _upper_level(cls, value: Any) -> Any:
        return value.strip().upper() if isinstance(value, str) else value

    @field_validator("data_dir", mode="after")
    @classmethod
    def _absolute_data_dir(cls, value: Path) -> Path:
        # Resolved once: every worker, the embedded database and the logs name the same place whatever the cwd.
        return value.expanduser().resolve()

    @field_validator("models", mode="before")
    @classmethod
    def _parse_models(cls, value: Any) -> Any:
        if not isinstance(value, str):
            return value
        specs = []
        for part in (p.strip() for p in value.split(",")):
            if not part:
                continue
            # `id:window` when what follows the last colon is a number; otherwise the colon belongs to the id
            # (Ollama tags such as `llama3.2:3b`). `id:window:vision` marks a model that accepts images.
            vision = None
            if part.endswith(":vision"):
                part, vision = part.removesuffix(":vision"), True
            model_id, _, window = part.rpartition(":")
            if not (model_id and window.strip().isdigit()):
                model_id, window = part, ""
            model_id = model_id.strip()
            if window and int(window) <= 0:
                raise ValueError(f"context window of {model_id!r} must be a positive integer, got {window!r}")
            if vision and not window:
                raise ValueError(f"{model_id!r}: write a model that accepts images as id:window:vision")
            specs.append(ModelSpec(id=model_id, context_window=int(window) if window else None, vision=vision))
        if not specs:
            raise ValueError("at least one model is required")
        ids = [spec.id for spec in specs]
        if len(set(ids)) != len(ids):
            raise ValueError(f"a model id is listed twice: {ids}")
        return tuple(specs)

    @field_validator("cors_origins", mode="before")
    @classmethod
    def _parse_origins(cls, value: Any) -> Any:
        if isinstance(value, str):
            return tuple(o.strip() for o in value.split(",") if o.strip())
        return value

    @field_validator("trusted_proxies", mode="before")
    @classmethod
    def _parse_proxies(cls, value: Any) -> Any:
        if isinstance(value, str):
            value = tuple(p.strip() for p in value.split(",") if p.strip())
        for proxy in value:
            try:
                ipaddress.ip_network(proxy, strict=False)
            except ValueError:
                raise ValueError(f"{proxy!r} is not an IP address or network (CIDR)") from None
        return value

    @field_validator("secret_key")
    @classmethod
    def _check_secret(cls, value: SecretStr | None) -> SecretStr | None:
        if value is not None and len(value.get_secret_value().encode()) < MIN_SECRET_BYTES:
            raise ValueError(
                f"must be at least {MIN_SECRET_BYTES} bytes (e.g. `python -c 'import secrets; "
                "print(secrets.token_urlsafe(48))'`), or unset to have one generated"
            )
        return value

    @model_validator(mode="after")
    def _check_default_model(self) -> Settings:
        ids = [m.id for m in self.models]
        if self.default_model is not None and self.default_model not in ids:
            raise ValueError(f"CHINWAG_DEFAULT_MODEL {self.default_model!r} is not one of CHINWAG_MODELS {ids}")
        if self.run_stale_s <= 2 * self.run_heartbeat_s:
            raise ValueError("CHINWAG_RUN_STALE_S must be more than twice CHINWAG_RUN_HEARTBEAT_S")
        return self

    @property
    def model_ids(self) -> list[str]:
        return [m.id for m in self.models]

    @property
    def resolved_default_model(self) -> str:
        return self.default_model or self.models[0].id

    @property
    def uses_azure(self) -> bool:
        return self.azure_openai_endpoint is not None

    @property
    def model_problem(self) -> str | None:
        """Why no model can be reached as configured (what to set), or None when it is configured.

        Without a key or a base URL the `openai` client would call api.openai.com with no key and every chat would
        fail with a 401 from the provider: better to say so at start, in health and config, and in each run."""
        if self.uses_azure:
            if self.azure_openai_api_key is None and self.openai_api_key is None:
                return "AZURE_OPENAI_ENDPOINT is set but no key: set AZURE_OPENAI_API_KEY"
            return None
        if self.openai_api_key is None and self.openai_base_url is None:
            return (
                "no model provider is configured: set OPENAI_API_KEY (OpenAI), OPENAI_BASE_URL (an "
                "OpenAI-compatible server such as Ollama, vLLM or llama.cpp), or AZURE_OPENAI_ENDPOINT with "
                "AZURE_OPENAI_API_KEY"
            )
        return None


class SettingsError(Exception):
    """Settings could not be read; the message names each offending variable."""


_ALIASES = {
    "openai_api_key": "OPENAI_API_KEY",
    "openai_base_url": "OPENAI_BASE_URL",
    "azure_openai_api_key": "AZURE_OPENAI_API_KEY",
    "azure_openai_endpoint": "AZURE_OPENAI_ENDPOINT",
    "openai_api_version": "OPENAI_API_VERSION",
}


def env_name(field: str) -> str:
    return _ALIASES.get(field, f"CHINWAG_{field.upper()}")


def known_env_names() -> list[str]:
    """Every `CHINWAG_*` variable the settings read."""
    return sorted(env_name(f) for f in Settings.model_fields if env_name(f).startswith("CHINWAG_"))


# Read outside `Settings` (by the test suite and the benchmarks): never worth a warning.
_OTHER_PREFIXES = ("CHINWAG_TEST_", "CHINWAG_BENCH_", "CHINWAG_REQUIRE_SERVICES", "CHINWAG_LLAMA_")


def unknown_env_warnings(environ: dict[str, str] | None = None) -> list[str]:
    """One line per `CHINWAG_*` variable that no setting reads, with the nearest known name when one is close:
    a typo (`CHINWAG_DATABSE_URL`) would otherwise be silently ignored."""
    names = known_env_names()
    env = os.environ if environ is None else environ
    lines = []
    for name in sorted(env):
        upper = name.upper()
        if not upper.startswith("CHINWAG_") or upper in names or upper.startswith(_OTHER_PREFIXES):
            continue
        close = difflib.get_close_matches(upper, names, n=1, cutoff=0.6)
        hint = f": did you mean {close[0]}?" if close else ""
        lines.append(f"{name} is not a chinwag setting and is ignored{hint}")
    return lines


def load_settings(**overrides: Any) -> Settings:
    """Read the environment once; a bad value raises `SettingsError` naming the variable."""
    try:
        return Settings(**overrides)
    except ValidationError as exc:
        lines = []
        for err in exc.errors():
            field = str(err["loc"][0]) if err["loc"] else ""
            where = env_name(field) if field else "settings"
            lines.append(f"{where}: {err['msg']}")
        raise SettingsError("invalid configuration:\n  " + "\n  ".join(lines)) from None


def load_or_create_secret(settings: Settings) -> str:
    """The token-signing secret: from settings, else generated once and kept in the data dir (mode 0600).

    Several processes may start at once: the first to create the file wins, the others read it.
    """
    if settings.secret_key is not None:
        return settings.secret_key.get_secret_value()
    settings.data_dir.mkdir(parents=True, exist_ok=True)
    path = settings.data_dir / "secret_key"
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        for _ in range(50):
            value = path.read_text().strip()
            if value:
                if len(value.encode()) < MIN_SECRET_BYTES:
                    raise SettingsError(
                        f"{path} holds a secret shorter than {MIN_SECRET_BYTES} bytes; delete it (a new one is "
                        "generated, and every token signed with the old one stops working) or set CHINWAG_SECRET_KEY"
                    ) from None
                return value
            time.sleep(0.02)
        raise SettingsError(f"{path} is empty; delete it or set CHINWAG_SECRET_KEY") from None
    value = secrets.token_urlsafe(48)
    with os.fdopen(fd, "w") as f:
        f.write(value)
    return value
