"""Uploaded files: streamed to disk under a size cap, typed by content, text extracted and counted.

Bytes live in a `FileStore` at `<data_dir>/files/<session_id>/<file_id>`; both parts are UUIDs the server made, so no
path ever comes from a client. The name a client sends is kept for display only.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import hashlib
import logging
import os
import shutil
import time
import unicodedata
import uuid
from collections.abc import AsyncIterator
from pathlib import Path
from typing import IO, BinaryIO, Protocol

import asyncpg
from python_multipart.exceptions import MultipartParseError
from python_multipart.multipart import MultipartParser, parse_options_header

from chinwag.config import Settings
from chinwag.db import files as files_db
from chinwag.db.files import StoredFile
from chinwag.errors import BadRequest, InsufficientStorage, NotFound, PayloadTooLarge, QuotaExceeded
from chinwag.llm.tokens import TiktokenCounter
from chinwag.schemas.files import File
from chinwag.services.file_extract import Extracted, TextCounter, extract_text, sniff_content_type
from chinwag.services.session_service import SessionService

logger = logging.getLogger(__name__)

UPLOAD_FIELD = "file"
NAME_MAX_CHARS = 255
# Room for the multipart framing (boundaries, part headers) on top of the file itself.
_FORM_OVERHEAD = 64 * 1024
# An upload's temporary file untouched this long was left by a process that died mid-upload.
STALE_UPLOAD_S = 6 * 3600
# Other form fields are ignored, but not read without end.
_MAX_OTHER_FIELD_BYTES = 16 * 1024


def parse_id(value: str, what: str = "file") -> uuid.UUID:
    """An id from a path or a tool argument; one that is not a UUID cannot exist, so it is a 404."""
    try:
        return uuid.UUID(value)
    except (ValueError, AttributeError, TypeError):
        raise NotFound(f"{what} not found") from None


def private_dirs(base: Path, path: Path) -> None:
    """Make `path` and the folders between it and `base` that do not exist yet, each 0700 (whatever the umask);
    folders that already exist, and `base` and above, are left as they are. Blocking."""
    base.mkdir(parents=True, exist_ok=True)
    missing = []
    for folder in (path, *path.parents):
        if folder == base or folder.exists():
            break
        missing.append(folder)
    for folder in reversed(missing):
        with contextlib.suppress(FileExistsError):  # another upload made it first
            folder.mkdir(mode=0o700)
            folder.chmod(0o700)


class FileStore:
    """The bytes of uploaded files on local disk, one folder per session, readable by chinwag's user only."""

    def __init__(self, root: Path) -> None:
        self.root = root

    @classmethod
    def from_settings(cls, settings: Settings) -> FileStore:
        return cls(settings.data_dir / "files")

    def session_dir(self, session_id: str | uuid.UUID) -> Path:
        # str(UUID(...)) is canonical hex and dashes: nothing a path could be steered with.
        return self.root / str(uuid.UUID(str(session_id)))

    def path(self, session_id: str | uuid.UUID, file_id: str | uuid.UUID) -> Path:
        return self.session_dir(session_id) / str(uuid.UUID(str(file_id)))

    def path_of_key(self, storage_key: str) -> Path:
        session_id, _, file_id = storage_key.partition("/")
        return self.path(session_id, file_id)

    @staticmethod
    def storage_key(session_id: uuid.UUID, file_id: uuid.UUID) -> str:
        return f"{session_id}/{file_id}"

    def new_temp_path(self, session_id: uuid.UUID) -> Path:
        """A fresh temporary path in the session's folder (created if needed); renamed into place when complete.

        Blocking (call it in a thread). Temporary files a crashed process left in this folder are removed here.
        """
        folder = self.session_dir(session_id)
        private_dirs(self.root.parent, folder)
        stale = time.time() - STALE_UPLOAD_S
        for old in folder.glob(".upload-*.part"):
            with contextlib.suppress(OSError):
                if old.stat().st_mtime < stale:
                    old.unlink()
        return folder / f".upload-{uuid.uuid4()}.part"

    @staticmethod
    def create(path: Path) -> BinaryIO:
        """A new file readable by chinwag's user only (0600), whatever the umask. Blocking."""
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        os.fchmod(fd, 0o600)
        return os.fdopen(fd, "wb")

    async def remove(self, storage_key: str) -> None:
        """Remove one file's bytes (missing is fine)."""
        await asyncio.to_thread(self.path_of_key(storage_key).unlink, missing_ok=True)

    async def remove_session(self, session_id: str | uuid.UUID) -> None:
        """Remove every file of a session, half-written uploads included. Call after its rows are deleted."""
        folder = self.session_dir(session_id)
        await asyncio.to_thread(shutil.rmtree, folder, ignore_errors=True)

    async def remove_session_files(self, *, session_id: str, storage_keys: list[str]) -> None:
        """`SessionService`'s hook after a session is deleted: each file's bytes, then the session's folder (with
        any half-written upload in it)."""
        for key in storage_keys:
            await self.remove(key)
        await self.remove_session(session_id)


def display_name(raw: str) -> str:
    """A client's file name made safe to show: last path segment, no control or direction-changing characters,
    at most `NAME_MAX_CHARS` characters (keeping the extension). Never used to build a path."""
    name = unicodedata.normalize("NFC", raw).replace("\\", "/").rsplit("/", 1)[-1]
    name = "".join(c for c in name if unicodedata.category(c) not in ("Cc", "Cf", "Cs", "Zl", "Zp"))
    name = name.strip()
    if name in ("", ".", ".."):
        return "file"
    if len(name) > NAME_MAX_CHARS:
        stem, dot, ext = name.rpartition(".")
        if dot and stem and 0 < len(ext) <= 16:
            name = stem[: NAME_MAX_CHARS - len(ext) - 1] + "." + ext
        else:
            name = name[:NAME_MAX_CHARS]
    return name


class _MultipartFile:
    """Feeds a multipart/form-data body to python-multipart's streaming parser, a chunk at a time, and hands back
    the bytes of the one part named `file` as they arrive. Other parts are skipped (within a small cap)."""

    def __init__(self, content_type: str | None) -> None:
        mime, options = parse_options_header(content_type or "")
        boundary = options.get(b"boundary")
        if mime != b"multipart/form-data" or not boundary:
            raise BadRequest(f"send multipart/form-data with the file in a field named {UPLOAD_FIELD!r}")
        try:
            self._parser = MultipartParser(
                boundary,
                {
                    "on_part_begin": self._on_part_begin,
                    "on_header_field": self._on_header_field,
                    "on_header_value": self._on_header_value,
                    "on_header_end": self._on_header_end,
                    "on_headers_finished": self._on_headers_finished,
                    "on_part_data": self._on_part_data,
                    "on_part_end": self._on_part_end,
                    "on_end": self._on_end,
                },
            )
        except Exception as exc:  # a bad boundary
            raise BadRequest(f"malformed multipart body: {exc}") from None
        self._field = bytearray()
        self._value = bytearray()
        self._headers: dict[bytes, bytes] = {}
        self._in_file = False
        self._other_bytes = 0
        self._pending: list[bytes] = []
        self.filename: str | None = None
        self.file_complete = False
        self.ended = False

    def feed(self, chunk: bytes) -> list[bytes]:
        """Parse `chunk`; the file bytes it held."""
        try:
            self._parser.write(chunk)
        except MultipartParseError as exc:
            raise BadRequest(f"malformed multipart body: {exc}") from None
        pending, self._pending = self._pending, []
        return pending

    def _on_part_begin(self) -> None:
        self._headers = {}
        self._in_file = False

    def _on_header_field(self, data: bytes, start: int, end: int) -> None:
        self._field += data[start:end]

    def _on_header_value(self, data: bytes, start: int, end: int) -> None:
        self._value += data[start:end]

    def _on_header_end(self) -> None:
        self._headers[bytes(self._field).lower()] = bytes(self._value)
        self._field.clear()
        self._value.clear()

    def _on_headers_finished(self) -> None:
        # Header bytes are taken as latin-1 and the name's bytes then as UTF-8: what browsers send.
        _, options = parse_options_header(self._headers.get(b"content-disposition", b"").decode("latin-1"))
        if options.get(b"name") != UPLOAD_FIELD.encode():
            return
        if self.filename is not None:
            raise BadRequest(f"send one file per upload (one {UPLOAD_FIELD!r} field)")
        self._in_file = True
        self.filename = options.get(b"filename", b"").decode("utf-8", "replace")

    def _on_part_data(self, data: bytes, start: int, end: int) -> None:
        if self._in_file:
            self._pending.append(data[start:end])
            return
        self._other_bytes += end - start
        if self._other_bytes > _MAX_OTHER_FIELD_BYTES:
            raise BadRequest(f"only the {UPLOAD_FIELD!r} field is read; other fields must be small")

    def _on_part_end(self) -> None:
        if self._in_file:
            self._in_file = False
            self.file_complete = True

    def _on_end(self) -> None:
        self.ended = True


class _Sink:
    """The temporary file an upload goes to, hashed as it is written."""

    def __init__(self, f: IO[bytes]) -> None:
        self._f = f
        self._digest = hashlib.sha256()
        self.size = 0

    def write(self, chunks: list[bytes]) -> None:
        for chunk in chunks:
            self._digest.update(chunk)
            self._f.write(chunk)

    def hexdigest(self) -> str:
        return self._digest.hexdigest()


class Extractor(Protocol):
    """Types a stored upload and extracts its text and token count (`extract_pool.ExtractPool`)."""

    async def inspect(self, path: Path, *, name: str) -> tuple[str, Extracted, int]: ...


class FileService:
    """Files of a user's sessions: upload, list, get, download, delete. Another user's session or file is a 404."""

    def __init__(
        self,
        *,
        pool: asyncpg.Pool,
        settings: Settings,
        sessions: SessionService,
        store: FileStore,
        counter: TextCounter | None = None,
        extractor: Extractor | None = None,
    ) -> None:
        self._pool = pool
        self._extractor = extractor
        self._sessions = sessions
        self._max_bytes = settings.max_upload_bytes
        self._quota = settings.max_storage_bytes_per_user
        self._store = store
        self._counter = counter

    async def _own_session(self, user_id: str, session_id: str) -> uuid.UUID:
        return await self._sessions.check_owner(user_id=user_id, session_id=session_id)

    async def _own_file(self, user_id: str, session_id: str, file_id: str) -> StoredFile:
        sid = await self._own_session(user_id, session_id)
        stored = await files_db.get_file(self._pool, session_id=sid, file_id=parse_id(file_id))
        if stored is None:
            raise NotFound("file not found")
        return stored

    async def upload(
        self,
        *,
        user_id: str,
        session_id: str,
        content_type: str | None,
        content_length: int | None,
        body: AsyncIterator[bytes],
    ) -> File:
        """Store the multipart body's `file` part. 413 as soon as it is known to be too large (before reading the
        rest), 415 when its content is not an allowed type; a failed upload leaves neither a row nor bytes."""
        sid = await self._own_session(user_id, session_id)
        if content_length is not None and content_length > self._max_bytes + _FORM_OVERHEAD:
            raise self._too_large()
        used = await files_db.user_storage_bytes(self._pool, user_id=parse_id(user_id, what="user"))
        if used >= self._quota:
            raise self._over_quota(used)
        form = _MultipartFile(content_type)
        temp = await asyncio.to_thread(self._store.new_temp_path, sid)
        try:
            size, sha256 = await self._receive(form, body, temp)
            if used + size > self._quota:  # checked again on the bytes that came, before any extraction
                raise self._over_quota(used)
            name = display_name(form.filename or "")
            if self._extractor is not None:
                # Untrusted parsing, in worker processes bounded in time and memory (the app's way).
                detected, extracted, tokens = await self._extractor.inspect(temp, name=name)
            else:
                detected, extracted, tokens = await asyncio.to_thread(self._inspect, temp, name)
            file_id = uuid.uuid4()
            final = self._store.path(sid, file_id)
            await asyncio.to_thread(os.replace, temp, final)
            temp = final
            stored = await files_db.insert_file(
                self._pool,
                file_id=file_id,
                session_id=sid,
                name=name,
                size=size,
                content_type=detected,
                sha256=sha256,
                tokens=tokens,
                text=extracted.text,
                extract_error=extracted.error,
                storage_key=self._store.storage_key(sid, file_id),
            )
            if stored is None:
                raise NotFound("session not found")
        except FileNotFoundError:
            # The session was deleted during the upload, and its folder (with the temporary file) with it.
            temp.unlink(missing_ok=True)
            raise NotFound("session not found") from None
        except OSError as exc:
            temp.unlink(missing_ok=True)
            if exc.errno in (errno.ENOSPC, errno.EDQUOT):
                logger.error("upload to session %s refused: the data dir's disk is full", sid)
                raise InsufficientStorage("The server has no room left for this file: nothing was stored.") from None
            raise
        except BaseException:
            # Synchronous on purpose: this also runs when the request is cancelled (the client went away).
            temp.unlink(missing_ok=True)
            raise
        logger.info("stored file %s (%s, %d bytes) in session %s", file_id, detected, size, sid)
        return stored.public

    async def _receive(self, form: _MultipartFile, body: AsyncIterator[bytes], temp: Path) -> tuple[int, str]:
        total = 0
        with await asyncio.to_thread(self._store.create, temp) as f:
            sink = _Sink(f)
            async for chunk in body:
                total += len(chunk)
                if total > self._max_bytes + _FORM_OVERHEAD:
                    raise self._too_large()
                parts = form.feed(chunk)
                if parts:
                    sink.size += sum(len(p) for p in parts)
                    if sink.size > self._max_bytes:
                        raise self._too_large()
                    await asyncio.to_thread(sink.write, parts)
        if form.filename is None:
            raise BadRequest(f"the multipart field {UPLOAD_FIELD!r} is missing")
        if not form.file_complete or not form.ended:
            raise BadRequest("the multipart body ended early")
        return sink.size, sink.hexdigest()

    def _over_quota(self, used: int) -> QuotaExceeded:
        return QuotaExceeded(
            f"your files use {used} of {self._quota} bytes: delete some to upload this one",
            headers={"Connection": "close"},
        )

    def _too_large(self) -> PayloadTooLarge:
        # Closing the connection stops the client sending the rest (the server would otherwise read and discard it).
        return PayloadTooLarge(f"files are limited to {self._max_bytes} bytes", headers={"Connection": "close"})

    def _inspect(self, path: Path, name: str) -> tuple[str, Extracted, int]:
        content_type = sniff_content_type(path, name=name)
        extracted = extract_text(path, content_type)
        tokens = self._count(extracted.text) if extracted.text else 0
        return content_type, extracted, tokens

    def _count(self, text: str) -> int:
        if self._counter is None:
            # Runs in a worker thread: loading the encoding (once per process) does not stall the event loop.
            self._counter = TiktokenCounter()
        return self._counter.count_text(text)

    async def list_files(self, *, user_id: str, session_id: str) -> list[File]:
        sid = await self._own_session(user_id, session_id)
        return [f.public for f in await files_db.list_files(self._pool, session_id=sid)]

    async def get(self, *, user_id: str, session_id: str, file_id: str) -> File:
        return (await self._own_file(user_id, session_id, file_id)).public

    async def content(self, *, user_id: str, session_id: str, file_id: str) -> tuple[File, Path]:
        """The file and the path of its bytes, for a download."""
        stored = await self._own_file(user_id, session_id, file_id)
        path = self._store.path_of_key(stored.storage_key)
        if not await asyncio.to_thread(path.is_file):
            logger.warning("file %s has a row but no bytes at %s", stored.id, path)
            raise NotFound("file not found")
        return stored.public, path

    async def delete(self, *, user_id: str, session_id: str, file_id: str) -> None:
        sid = await self._own_session(user_id, session_id)
        stored = await files_db.delete_file(self._pool, session_id=sid, file_id=parse_id(file_id))
        if stored is None:
            raise NotFound("file not found")
        await self._store.remove(stored.storage_key)
