"""Logging set-up for the CLI: one format with the request id, levels from `CHINWAG_LOG_LEVEL`, secrets redacted."""

from __future__ import annotations

import logging
import os
import re
from urllib.parse import unquote_plus

from chinwag.middleware.request_id import RequestIdFilter

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


def configure_logging() -> None:
    level = os.environ.get("CHINWAG_LOG_LEVEL", "INFO").upper()
    handler = logging.StreamHandler()
    handler.addFilter(RequestIdFilter())
    handler.setFormatter(RedactingFormatter("%(asctime)s %(levelname)s %(name)s [%(request_id)s] %(message)s"))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level if level in logging.getLevelNamesMapping() else "INFO")
