"""Images to vision models: the image files a message names reach the model as image input.

A run sends each image as a `data:` URL of its bytes, downscaled (a copy; the stored file is kept as uploaded) when
it is larger than providers take. Layer 1 keeps a reference to the file instead of the bytes
(`{"type": "input_image", "image_url": "chinwag-file:<id>"}`): `ImageParts.by_reference` writes that form, and
`ImageParts.resolve` turns it back into a data URL each time a run sends that turn again. A model without vision
gets a short note in the image's place; a file deleted since gets one too.
"""

from __future__ import annotations

import asyncio
import base64
import io
import logging
import uuid
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

import asyncpg
from PIL import Image

from chinwag.db import files as files_db
from chinwag.db.files import StoredFile
from chinwag.errors import BadRequest
from chinwag.services.file_extract import IMAGE_TYPES
from chinwag.services.file_service import FileStore

logger = logging.getLogger(__name__)

REFERENCE_PREFIX = "chinwag-file:"
MAX_SIDE_PX = 2048
"""Providers scale larger images down to fit 2048 x 2048 (OpenAI); sending more only costs bytes."""
MAX_BYTES = 8 * 1024 * 1024
"""An image over this is re-encoded smaller even if its sides fit (requests of tens of MB are refused)."""
JPEG_QUALITY = 85


async def check_images(
    pool: asyncpg.Pool, *, session_id: str, file_ids: Sequence[str], model: str, vision: bool
) -> None:
    """`BadRequest` naming the model when the message names an image file and the model does not accept images."""
    if vision or not file_ids:
        return
    images = await image_files(pool, session_id=session_id, file_ids=file_ids)
    if images:
        raise BadRequest(
            f"The model {model!r} does not accept images ({images[0].name}): choose a model with vision for this"
            " session, or send the message without the image."
        )


async def image_files(pool: asyncpg.Pool, *, session_id: str, file_ids: Iterable[str]) -> list[StoredFile]:
    """The image files among `file_ids` of the session, in the order named."""
    wanted = [uuid.UUID(i) for i in dict.fromkeys(file_ids)]
    if not wanted:
        return []
    files = await files_db.list_files(pool, session_id=uuid.UUID(session_id))
    by_id = {f.id: f for f in files}
    return [by_id[str(i)] for i in wanted if str(i) in by_id and by_id[str(i)].content_type in IMAGE_TYPES]


def data_url(data: bytes, content_type: str) -> str:
    """The image as a `data:` URL, downscaled to `MAX_SIDE_PX` (and re-encoded under `MAX_BYTES`) when larger.
    Blocking: call it in a thread."""
    with Image.open(io.BytesIO(data)) as image:
        too_big = max(image.size) > MAX_SIDE_PX or len(data) > MAX_BYTES
        if too_big:
            image.thumbnail((MAX_SIDE_PX, MAX_SIDE_PX))
            keeps_alpha = image.mode in ("RGBA", "LA", "P")
            out = io.BytesIO()
            if keeps_alpha:
                image.save(out, format="PNG", optimize=True)
                content_type = "image/png"
            else:
                image.convert("RGB").save(out, format="JPEG", quality=JPEG_QUALITY)
                content_type = "image/jpeg"
            data = out.getvalue()
    return f"data:{content_type};base64,{base64.b64encode(data).decode()}"


def reference(file_id: str) -> str:
    return REFERENCE_PREFIX + file_id


@dataclass
class ImageParts:
    """The images of one run's Layer 1: the ones its message sends (data URL -> file id) and how to load any
    referenced one again."""

    pool: asyncpg.Pool
    store: FileStore
    session_id: str
    vision: bool
    sent: dict[str, str] = field(default_factory=dict)
    """Data URL -> file id, for the message's own images (written to Layer 1 by reference)."""

    async def message_parts(self, files: Sequence[StoredFile]) -> list[dict[str, Any]]:
        """The `input_image` parts of the message's image files (read and downscaled in a thread)."""
        parts: list[dict[str, Any]] = []
        for f in files:
            url = await self._load(f)
            if url is None:
                continue
            self.sent[url] = f.id
            parts.append({"type": "input_image", "image_url": url, "detail": "auto"})
        return parts

    def by_reference(self, items: list[Any]) -> list[Any]:
        """The items as Layer 1 stores them: this run's image data URLs replaced by references to their files."""
        if not self.sent:
            return items
        return [_map_parts(item, self._to_reference) for item in items]

    async def resolve(self, items: list[Any]) -> list[Any]:
        """The items as the model gets them: each referenced image loaded (or a note when it cannot be sent)."""
        wanted = {ref for item in items for ref in _references(item)}
        if not wanted:
            return items
        files = await image_files(self.pool, session_id=self.session_id, file_ids=wanted)
        urls: dict[str, str | None] = {}
        if self.vision:
            for f in files:
                urls[f.id] = await self._load(f)
        names = {f.id: f.name for f in files}

        def resolved(part: dict[str, Any]) -> dict[str, Any]:
            file_id = _reference_of(part)
            if file_id is None:
                return part
            url = urls.get(file_id)
            if url is not None:
                return {**part, "image_url": url}
            if file_id not in names:
                note = "[an image that was deleted since]"
            elif not self.vision:
                note = f"[image {names[file_id]}: this model does not accept images]"
            else:
                note = f"[image {names[file_id]}: it could not be read]"
            return {"type": "input_text", "text": note}

        return [_map_parts(item, resolved) for item in items]

    def _to_reference(self, part: dict[str, Any]) -> dict[str, Any]:
        url = part.get("image_url")
        if part.get("type") == "input_image" and isinstance(url, str) and url in self.sent:
            return {**part, "image_url": reference(self.sent[url])}
        return part

    async def _load(self, f: StoredFile) -> str | None:
        try:
            data = await asyncio.to_thread(self.store.path_of_key(f.storage_key).read_bytes)
            return await asyncio.to_thread(data_url, data, f.content_type)
        except Exception as exc:  # a file gone from disk, or one Pillow cannot open: the model gets a note
            logger.warning("session %s: image %s could not be read: %s", self.session_id, f.id, exc)
            return None


def _reference_of(part: dict[str, Any]) -> str | None:
    url = part.get("image_url")
    if part.get("type") == "input_image" and isinstance(url, str) and url.startswith(REFERENCE_PREFIX):
        return url.removeprefix(REFERENCE_PREFIX)
    return None


def _references(item: Any) -> list[str]:
    content = item.get("content") if isinstance(item, dict) else None
    if not isinstance(content, list):
        return []
    return [ref for part in content if isinstance(part, dict) and (ref := _reference_of(part)) is not None]


def _map_parts(item: Any, change: Any) -> Any:
    """The item with `change` applied to each part of its content list (other items unchanged)."""
    content = item.get("content") if isinstance(item, dict) else None
    if not isinstance(content, list):
        return item
    return {**item, "content": [change(part) if isinstance(part, dict) else part for part in content]}
