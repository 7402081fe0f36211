"""Ids from the wire and the session list's opaque cursor."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta, timezone

import pytest

from chinwag.errors import BadRequest, NotFound
from chinwag.services.message_utils import SessionCursor, parse_id


@pytest.mark.parametrize(
    "when",
    [
        datetime(2026, 11, 26, 7, 0, 0, 123456, tzinfo=UTC),
        datetime(1999, 1, 1, tzinfo=UTC),
        datetime(2026, 3, 1, 12, 0, tzinfo=timezone(timedelta(hours=-5))),
        datetime(9999, 12, 31, 23, 59, 59, 999999, tzinfo=UTC),
    ],
)
@pytest.mark.parametrize("pinned", [True, False])
def test_cursor_round_trip_keeps_every_microsecond(when: datetime, pinned: bool) -> None:
    cursor = SessionCursor(pinned=pinned, updated_at=when, id=uuid.uuid4())
    encoded = cursor.encode()
    assert encoded.isascii()
    assert "=" not in encoded  # URL-safe without padding: fits a query string as is
    decoded = SessionCursor.decode(encoded)
    assert decoded == cursor
    assert decoded.updated_at == when


@pytest.mark.parametrize(
    "raw",
    ["", "x", "WzEsMl0", "W251bGwsMCwiMDAiXQ", "WzEsIjEiLCIwMCJd", "WzIsMCwiMDAiXQ", "eyJhIjogMX0", "\u00e9\u00e9"],
)
def test_cursor_refuses_what_it_did_not_make(raw: str) -> None:
    with pytest.raises(BadRequest):
        SessionCursor.decode(raw)


def test_parse_id_is_not_found_for_anything_but_a_uuid() -> None:
    some = uuid.uuid4()
    assert parse_id(str(some)) == some
    for bad in ("", "nope", "1234", str(some) + "0", "../../etc"):
        with pytest.raises(NotFound):
            parse_id(bad)
