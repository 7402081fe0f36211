"""Logging set-up for the CLI: one format with the request id, levels from `CHINWAG_LOG_LEVEL`."""

from __future__ import annotations

import logging
import os

from chinwag.middleware.request_id import RequestIdFilter


def configure_logging() -> None:
    level = os.environ.get("CHINWAG_LOG_LEVEL", "INFO").upper()
    handler = logging.StreamHandler()
    handler.addFilter(RequestIdFilter())
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s [%(request_id)s] %(message)s"))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level if level in logging.getLevelNamesMapping() else "INFO")
