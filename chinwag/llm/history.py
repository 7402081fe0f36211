"""A run's Layer 1 history as one item of the SDK's input, sent as JSON encoded once per stored row.

Why: the Agents SDK walks every input item several times per model call (`input_to_new_input_list` copies each one
deeply, twice, then its normalisation, de-duplication, the Chat Completions converter and `_to_dump_compatible`),
and the request body is encoded again; at turn 150 of a session that was most of what a message cost more than at
turn 10. Layer 1 rows never change once written (a rewrite gives new ids), so what a row becomes in a request can
be made once and kept.

How: on the lean path `TokenAwareSession.get_items()` answers one `history_item(...)`: a dict the SDK passes along
untouched (its value is neither a mapping nor iterable, so the SDK's copies stop at it, and it has no type, role,
id or call id the SDK acts on). chinwag's models (`llm.provider`) take it out of the input, give the SDK's own
`_fetch_response` only the run's new items, and hand the history's encoded JSON to the lean client through
`extra_body` (`HistorySplice`), which writes it into the body where the SDK would have put those items. Each group of
rows is converted by the SDK's own functions (the Chat Completions converter; the Responses API's clean-up), so the
result is what the SDK would send; it is kept in `HistoryCache` (owned by `LlmClients`) by its row ids and how it
was converted. Whenever splicing could differ from the SDK (the new items would be merged with the history's last
message by the converter, or share a call id with it), the model gives the SDK the history's items as they are.
"""

from __future__ import annotations

import collections
import functools
from collections.abc import Callable, Hashable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Protocol, cast

import orjson
from agents import TResponseInputItem
from agents.models.fake_id import FAKE_RESPONSES_ID
from agents.run_internal.items import strip_internal_input_item_metadata
from agents.util._json import _to_dump_compatible
from openai._compat import model_dump as _openai_model_dump

HISTORY_TYPE = "chinwag_history"
"""The `type` of the one input item that stands for a run's history (never sent: the model takes it out)."""
SPLICE_KEY = "__chinwag_history__"
"""The `extra_body` key that carries a `HistorySplice` from chinwag's model to the lean client (never sent)."""
DEFAULT_CACHE_BYTES = 64 * 1024 * 1024

Item = dict[str, Any]
Encode = Callable[[Sequence[Item]], bytes]
"""Items of one group -> their request JSON, comma-separated values without brackets (b"" for nothing)."""


class HistoryCache:
    """Encoded history groups by `(how converted, row ids)`, least recently used dropped past `max_bytes`.

    Only a cache: a row's item never changes under its id, so an entry is never stale, and each process (worker)
    keeps its own."""

    def __init__(self, max_bytes: int = DEFAULT_CACHE_BYTES) -> None:
        self.max_bytes = max_bytes
        self._entries: collections.OrderedDict[Hashable, bytes] = collections.OrderedDict()
        self._bytes = 0

    def __len__(self) -> int:
        return len(self._entries)

    def get(self, key: Hashable, make: Callable[[], bytes]) -> bytes:
        found = self._entries.get(key)
        if found is not None:
            self._entries.move_to_end(key)
            return found
        made = make()
        if len(made) <= self.max_bytes:
            self._entries[key] = made
            self._bytes += len(made)
            while self._bytes > self.max_bytes:
                _, dropped = self._entries.popitem(last=False)
                self._bytes -= len(dropped)
        return made


class StoredItem(Protocol):
    """A Layer 1 row sent as stored (`chinwag.db.context.ContextRow`): its id, the role of a message (None for any
    other item), and its item, decoded when read."""

    @property
    def id(self) -> int: ...

    @property
    def role(self) -> str | None: ...

    @property
    def item(self) -> Item: ...


_FRESH_ROLES = frozenset(("user", "system", "developer"))


@dataclass(frozen=True)
class _Group:
    values: tuple[Item | StoredItem, ...]
    rows: tuple[int, ...] | None
    """The ids of the stored rows the items are, unchanged; None when one of them is not a stored row as stored
    (the summary, a cut turn, an item whose images were loaded): such a group is converted again each time."""


class History:
    """The items a run's model calls get as history, with the Layer 1 row of each. Built once per run; not iterable
    on purpose (the SDK must not walk into it).

    Given as `items` with `rows` (an id, or None for an item that is not a stored row as stored), or as `sources`:
    items and stored rows (`StoredItem`), whose items are read (decoded, then `canonical`) only when their group is
    not in the cache, so an old row costs a request nothing but a look-up."""

    def __init__(
        self,
        *,
        cache: HistoryCache,
        items: list[Item] | None = None,
        rows: list[int | None] | None = None,
        sources: Sequence[Item | StoredItem] | None = None,
        canonical: Callable[[Item], Item] = lambda item: item,
    ) -> None:
        self.cache = cache
        self._canonical = canonical
        if sources is not None:
            self._values: list[Item | StoredItem] = list(sources)
            self._ids = [None if isinstance(v, dict) else v.id for v in self._values]
        else:
            self._values = list(items or [])
            self._ids = list(rows) if rows is not None else [None] * len(self._values)
        self._items: list[Item] | None = None
        self._groups: list[_Group] | None = None
        self._keys: frozenset[str] | None = None
        self._duplicates = False

    def _item(self, value: Item | StoredItem) -> Item:
        return value if isinstance(value, dict) else self._canonical(value.item)

    @property
    def items(self) -> list[Item]:
        """Every item as sent (each stored row's item decoded)."""
        if self._items is None:
            self._items = [self._item(value) for value in self._values]
        return self._items

    @property
    def rows(self) -> list[int | None]:
        return self._ids

    def groups(self) -> list[_Group]:
        """The items split before each user or system message: the Chat Completions converter starts afresh at
        those, so converting the groups one by one gives what converting the whole list does."""
        if self._groups is None:
            groups: list[_Group] = []
            values: list[Item | StoredItem] = []
            rows: list[int] | None = []
            keys: set[str] = set()
            duplicates = False
            for value, row in zip(self._values, self._ids, strict=True):
                if isinstance(value, dict):
                    fresh, key = starts_afresh(value), identity_key(value)
                else:
                    # A stored message's role is known without its item; only other items are read for their keys.
                    role = value.role
                    fresh = role in _FRESH_ROLES
                    key = None if role is not None else identity_key(value.item)
                if values and fresh:
                    groups.append(_Group(tuple(values), tuple(rows) if rows is not None else None))
                    values, rows = [], []
                values.append(value)
                if rows is not None and row is not None:
                    rows.append(row)
                else:
                    rows = None
                if key is not None:
                    duplicates = duplicates or key in keys
                    keys.add(key)
            if values:
                groups.append(_Group(tuple(values), tuple(rows) if rows is not None else None))
            self._groups, self._keys, self._duplicates = groups, frozenset(keys), duplicates
        return self._groups

    def fits_before(self, rest: Sequence[Any]) -> bool:
        """Whether the SDK would send these items, followed by `rest`, as the two sent apart: `rest` starts afresh
        for the converter (or the history ends with a user message, after which nothing is pending), and no item
        of either shares the identity (call id, provider id) the SDK de-duplicates by."""
        self.groups()
        if self._duplicates:
            return False
        if rest and self._values:
            first = rest[0]
            if not (isinstance(first, Mapping) and starts_afresh(first)) and not self._ends_with_user_message():
                return False
        keys = self._keys or frozenset()
        return not any(isinstance(item, Mapping) and identity_key(item) in keys for item in rest)

    def _ends_with_user_message(self) -> bool:
        last = self._values[-1]
        return _is_user_message(last) if isinstance(last, dict) else last.role == "user"

    def _encode_group(self, encode: Encode, group: _Group) -> bytes:
        return encode([self._item(value) for value in group.values])

    def encoded(self, how: Hashable, encode: Encode) -> list[bytes]:
        """The history's groups as request JSON, each encoded once per `how` while its rows stay cached."""
        parts: list[bytes] = []
        for group in self.groups():
            make = functools.partial(self._encode_group, encode, group)
            made = make() if group.rows is None else self.cache.get((how, group.rows), make)
            if made:
                parts.append(made)
        return parts


@dataclass(frozen=True)
class HistorySplice:
    """What the lean client writes into a request body: `parts` (encoded JSON values) into the list `key` at
    index `at` of the list the SDK built."""

    key: str
    at: int
    parts: list[bytes]


def history_item(history: History) -> Item:
    """The one SDK input item that stands for `history`."""
    return {"type": HISTORY_TYPE, "history": history}


def split_history(items: str | list[Any]) -> tuple[History | None, str | list[Any]]:
    """The history item of an SDK input taken out: `(history, the other items)`, or `(None, items)`."""
    if isinstance(items, str):
        return None, items
    for index, item in enumerate(items):
        if isinstance(item, Mapping) and item.get("type") == HISTORY_TYPE:
            history = item.get("history")
            if isinstance(history, History):
                return history, [*items[:index], *items[index + 1 :]]
    return None, items


def starts_afresh(item: Mapping[str, Any]) -> bool:
    """A message the Chat Completions converter begins anew at (it flushes what was pending: a user, system or
    developer message)."""
    return item.get("role") in ("user", "system", "developer") and item.get("type", "message") == "message"


def _is_user_message(item: Mapping[str, Any]) -> bool:
    return item.get("role") == "user" and item.get("type", "message") == "message"


def identity_key(item: Mapping[str, Any]) -> str | None:
    """What the SDK's `deduplicate_input_items_preferring_latest` knows an item by (messages by nothing)."""
    if item.get("role") is not None or item.get("type", "message") == "message":
        return None
    kind, call_id, item_id = item.get("type"), item.get("call_id"), item.get("id")
    if isinstance(call_id, str):
        return f"call_id:{kind}:{call_id}"
    if isinstance(item_id, str) and item_id != FAKE_RESPONSES_ID:
        return f"id:{kind}:{item_id}"
    # (The SDK also knows hosted MCP approvals by their request id: any such item keeps the history apart.)
    return "approval" if "approval_request_id" in item else None


def prepared(items: Iterable[Item]) -> list[Any]:
    """Items as the SDK's input handling leaves them for its model: session metadata stripped, plain JSON data."""
    # The items are the SDK's input items as JSON (what Layer 1 stores): the SDK's own type for them.
    return [_to_dump_compatible(strip_internal_input_item_metadata(cast(TResponseInputItem, item))) for item in items]


def _default(value: Any) -> Any:
    # What `openai`'s own JSON encoder takes besides plain data (it dumps pydantic models as set fields).
    if hasattr(value, "model_dump"):
        return _openai_model_dump(value, exclude_unset=True, mode="json")
    raise TypeError(f"not JSON: {type(value).__name__}")


def dumps(value: Any) -> bytes:
    return orjson.dumps(value, default=_default)


def join(values: Iterable[Any]) -> bytes:
    """Values as comma-separated JSON (the inside of a list)."""
    return b",".join(dumps(value) for value in values)
