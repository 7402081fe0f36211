"""`/sessions/{id}/files`: files uploaded to a session, their metadata and their bytes."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any
from urllib.parse import quote

from fastapi import APIRouter, Request, Response, status
from fastapi.responses import FileResponse
from starlette.requests import ClientDisconnect

from chinwag.dependencies import CurrentUser, Files
from chinwag.errors import BadRequest, error_responses
from chinwag.schemas.files import File, FileList
from chinwag.services.file_service import UPLOAD_FIELD

router = APIRouter(prefix="/sessions", tags=["files"], responses=error_responses(401, 404, 415))

# The body is parsed as a stream by the service (to stop at the size cap), so FastAPI is told its shape here.
_UPLOAD_BODY: dict[str, Any] = {
    "requestBody": {
        "required": True,
        "content": {
            "multipart/form-data": {
                "schema": {
                    "type": "object",
                    "required": [UPLOAD_FIELD],
                    "properties": {UPLOAD_FIELD: {"type": "string", "format": "binary"}},
                }
            }
        },
    }
}


async def _body(request: Request) -> AsyncIterator[bytes]:
    try:
        async for chunk in request.stream():
            yield chunk
    except ClientDisconnect:
        raise BadRequest("the client went away during the upload") from None


def _content_length(request: Request) -> int | None:
    value = request.headers.get("content-length")
    if value is None:
        return None
    if not value.strip().isdigit():
        raise BadRequest("bad Content-Length")
    return int(value)


def content_disposition(name: str) -> str:
    """`attachment` with an ASCII fallback name and the exact name in RFC 5987 form."""
    fallback = "".join(c if " " <= c <= "~" and c not in '"\\' else "_" for c in name) or "file"
    return f"attachment; filename=\"{fallback}\"; filename*=UTF-8''{quote(name, safe='')}"


@router.post(
    "/{session_id}/files",
    status_code=status.HTTP_201_CREATED,
    openapi_extra=_UPLOAD_BODY,
)
async def upload_file(session_id: str, request: Request, user: CurrentUser, files: Files) -> File:
    """Upload a file (multipart field `file`); its type is judged by its content."""
    return await files.upload(
        user_id=user.id,
        session_id=session_id,
        content_type=request.headers.get("content-type"),
        content_length=_content_length(request),
        body=_body(request),
    )


@router.get("/{session_id}/files")
async def list_files(session_id: str, user: CurrentUser, files: Files) -> FileList:
    """The session's files, oldest first."""
    return FileList(items=await files.list_files(user_id=user.id, session_id=session_id))


@router.get("/{session_id}/files/{file_id}")
async def get_file(session_id: str, file_id: str, user: CurrentUser, files: Files) -> File:
    """One file's metadata."""
    return await files.get(user_id=user.id, session_id=session_id, file_id=file_id)


@router.get(
    "/{session_id}/files/{file_id}/content",
    response_class=FileResponse,
    # The detected type of the file (text/plain, application/pdf, image/png, ...), so any type.
    responses={200: {"description": "The bytes, as an attachment", "content": {"*/*": {}}}},
)
async def download_file(session_id: str, file_id: str, user: CurrentUser, files: Files) -> FileResponse:
    """The file's bytes, as an attachment with its detected content type."""
    file, path = await files.content(user_id=user.id, session_id=session_id, file_id=file_id)
    return FileResponse(
        path,
        media_type=file.content_type,
        headers={
            "Content-Disposition": content_disposition(file.name),
            "X-Content-Type-Options": "nosniff",
            "Content-Security-Policy": "default-src 'none'; sandbox",
            "Cache-Control": "private, no-cache",
        },
    )


@router.delete("/{session_id}/files/{file_id}", status_code=status.HTTP_204_NO_CONTENT, response_class=Response)
async def delete_file(session_id: str, file_id: str, user: CurrentUser, files: Files) -> None:
    """Delete a file and its bytes."""
    await files.delete(user_id=user.id, session_id=session_id, file_id=file_id)
