"""Logging set-up for the CLI: one format with the request id, levels from `CHINWAG_LOG_LEVEL`, secrets redacted."""

from __future__ import annotations

import logging
import os
import re

from chinwag.middleware.request_id import RequestIdFilter

# uvicorn logs each WebSocket's path with its query string, and browsers can only send the token there.
_SECRET_PARAMS = re.compile(r"([?&](?:token|access_token|api_key)=)[^&\s\"']+", re.IGNORECASE)


class RedactingFormatter(logging.Formatter):
    """Replaces token values in URLs (`?token=...`) with `***` in every formatted line, tracebacks included."""

    def format(self, record: logging.LogRecord) -> str:
        return _SECRET_PARAMS.sub(r"\1***", super().format(record))


def configure_logging() -> None:
    level = os.environ.get("CHINWAG_LOG_LEVEL", "INFO").upper()
    handler = logging.StreamHandler()
    handler.addFilter(RequestIdFilter())
    handler.setFormatter(RedactingFormatter("%(asctime)s %(levelname)s %(name)s [%(request_id)s] %(message)s"))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level if level in logging.getLevelNamesMapping() else "INFO")
