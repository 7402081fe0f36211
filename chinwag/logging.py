"""Logging set-up for the CLI: `CHINWAG_LOG_FORMAT` text (one line with the request id) or json (one object per
line with the request, user, session and run ids), level `CHINWAG_LOG_LEVEL`, secrets in URLs redacted in both."""

from __future__ import annotations

import logging
import re
from datetime import UTC, datetime
from typing import Any, Literal
from urllib.parse import unquote_plus

import orjson

from chinwag.middleware.request_id import RequestIdFilter
from chinwag.observability.context import LogContextFilter

# uvicorn logs each WebSocket's path with its query string, and browsers can only send the token there. The query is
# judged as the server parses it (percent-decoded names: `?%74oken=` is `token`), never by its raw spelling.
_SECRET_NAMES = frozenset({"token", "access_token", "api_key", "refresh_token"})
_QUERY = re.compile(r"\?([^\s\"'#]+)")


def _redact_query(match: re.Match[str]) -> str:
    pairs = match.group(1).split("&")
    for i, pair in enumerate(pairs):
        name, eq, _ = pair.partition("=")
        if eq and unquote_plus(name).strip().lower() in _SECRET_NAMES:
            pairs[i] = f"{name}=***"
    return "?" + "&".join(pairs)


def redact(text: str) -> str:
    """`text` with the value of every secret query parameter of every URL in it replaced by `***`."""
    return _QUERY.sub(_redact_query, text) if "?" in text else text


class RedactingFormatter(logging.Formatter):
    """Replaces token values in URLs (`?token=...`) with `***` in every formatted line, tracebacks included."""

    def format(self, record: logging.LogRecord) -> str:
        return redact(super().format(record))


class JsonFormatter(logging.Formatter):
    """One JSON object per line, for log collectors: time (UTC, ISO 8601), level, logger, message, the ids of the
    request, user, session and run it is about (null when none), and `exc` (the traceback) when there is one.

    Only what the code put in the log message is written: chinwag never logs a message body or a credential, and
    URLs are redacted like in text lines."""

    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, Any] = {
            "time": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname,
            "logger": record.name,
            "message": redact(record.getMessage()),
            "request_id": _id(getattr(record, "request_id", None)),
            "user_id": getattr(record, "user_id", None),
            "session_id": getattr(record, "session_id", None),
            "run_id": getattr(record, "run_id", None),
        }
        if record.exc_info:
            entry["exc"] = redact(self.formatException(record.exc_info))
        return orjson.dumps(entry).decode()


def _id(value: object) -> str | None:
    return value if isinstance(value, str) and value != "-" else None


def configure_logging(level: str = "INFO", fmt: Literal["text", "json"] = "text") -> None:
    """The root logger's one handler (stderr). Called before the settings are read with the defaults, and again
    with `settings.log_level` and `settings.log_format` once they are."""
    handler = logging.StreamHandler()
    handler.addFilter(RequestIdFilter())
    handler.addFilter(LogContextFilter())
    if fmt == "json":
        handler.setFormatter(JsonFormatter())
    else:
        handler.setFormatter(RedactingFormatter("%(asctime)s %(levelname)s %(name)s [%(request_id)s] %(message)s"))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level if level in logging.getLevelNamesMapping() else "INFO")
