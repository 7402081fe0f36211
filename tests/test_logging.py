"""Log lines never carry a credential from a URL, however its parameter name is spelled."""

from __future__ import annotations

import logging
import sys

import pytest

from chinwag.logging import RedactingFormatter, redact


@pytest.mark.parametrize(
    "name", ["token", "TOKEN", "%74oken", "%54%4F%4B%45%4E", "to%6Ben", "access_token", "api_key", "refresh_token"]
)
def test_secret_parameters_are_masked_whatever_their_spelling(name: str) -> None:
    line = f'"WebSocket /ws/chat/abc?x=1&{name}=eyJ.secret.value&y=2" [accepted]'
    masked = redact(line)
    assert "eyJ.secret.value" not in masked
    assert f"{name}=***" in masked
    assert "x=1" in masked
    assert "y=2" in masked


def test_other_parameters_and_text_are_kept() -> None:
    assert redact("GET /api/v1/search?q=tokens&limit=5 200") == "GET /api/v1/search?q=tokens&limit=5 200"
    assert redact("no url here? none") == "no url here? none"


def test_the_formatter_masks_messages_and_tracebacks() -> None:
    formatter = RedactingFormatter("%(message)s")
    try:
        raise ValueError("failed on /ws/chat/s?%74oken=cw_secret_key")
    except ValueError:
        record = logging.LogRecord("x", logging.ERROR, __file__, 1, "at %s", ("/ws?token=abc123",), sys.exc_info())
    out = formatter.format(record)
    assert "at /ws?token=***" in out
    assert "?%74oken=***" in out
    assert "abc123" not in out
    assert "cw_secret_key" not in out
