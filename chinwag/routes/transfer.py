"""`/sessions/{id}/export` and `/sessions/import`: a conversation out of chinwag and into it."""

from __future__ import annotations

from typing import Annotated, Any, Literal
from urllib.parse import quote

import orjson
from fastapi import APIRouter, Query, Request, status
from fastapi.exceptions import RequestValidationError
from fastapi.responses import StreamingResponse
from pydantic import ValidationError

from chinwag.dependencies import AppSettings, CurrentUser, Llm, Pool
from chinwag.errors import PayloadTooLarge, error_responses
from chinwag.schemas.sessions import Session
from chinwag.schemas.transfer import ChatImport, ChinwagExport
from chinwag.services.transfer import ImportInvalid, export_json, export_markdown, import_session, markdown_filename

router = APIRouter(prefix="/sessions", tags=["sessions"], responses=error_responses(401, 404))


@router.get(
    "/{session_id}/export",
    response_class=StreamingResponse,
    responses={
        200: {
            "description": "`format=json`: the session, every message of every branch and the files' metadata."
            " `format=markdown`: the active branch as a Markdown attachment.",
            "content": {"application/json": {}, "text/markdown": {}},
        }
    },
)
async def export_session(
    session_id: str,
    user: CurrentUser,
    pool: Pool,
    llm: Llm,
    format: Annotated[Literal["json", "markdown"], Query(description="json (every branch) or markdown")] = "json",
) -> StreamingResponse:
    """Export a session: JSON of every branch (streamed), or Markdown of the active branch."""
    window = llm.catalog.context_window
    if format == "markdown":
        export = await export_markdown(pool, user_id=user.id, session_id=session_id, window=window)
        fallback, name = markdown_filename(export.session.title)
        disposition = f"attachment; filename=\"{fallback}\"; filename*=UTF-8''{quote(name, safe='')}"
        return StreamingResponse(
            export.chunks, media_type="text/markdown; charset=utf-8", headers={"Content-Disposition": disposition}
        )
    export = await export_json(pool, user_id=user.id, session_id=session_id, window=window)
    return StreamingResponse(export.chunks, media_type="application/json")


def _invalid(loc: tuple[str | int, ...], message: str, kind: str = "value_error") -> RequestValidationError:
    return RequestValidationError([{"type": kind, "loc": loc, "msg": message}])


async def _read_body(request: Request, limit: int) -> bytes:
    """The body, refused (413) past `limit` bytes: before reading when `Content-Length` says so, else as it comes."""
    length = request.headers.get("content-length")
    if length is not None and length.isdigit() and int(length) > limit:
        raise PayloadTooLarge(f"An import is at most {limit} bytes.")
    chunks: list[bytes] = []
    seen = 0
    async for chunk in request.stream():
        seen += len(chunk)
        if seen > limit:
            raise PayloadTooLarge(f"An import is at most {limit} bytes.")
        chunks.append(chunk)
    return b"".join(chunks)


def _parse(body: bytes) -> ChinwagExport | ChatImport:
    try:
        data: Any = orjson.loads(body)
    except orjson.JSONDecodeError as exc:
        raise _invalid(("body",), f"not valid JSON: {exc}", "json_invalid") from None
    if not isinstance(data, dict):
        raise _invalid(("body",), "must be a JSON object", "dict_type")
    model: type[ChinwagExport] | type[ChatImport] = ChinwagExport if "format" in data else ChatImport
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        errors = [
            {"type": e["type"], "loc": ("body", *e["loc"]), "msg": e["msg"]}
            for e in exc.errors(include_url=False, include_input=False)[:20]
        ]
        raise RequestValidationError(errors) from None


def _inlined(schema: dict[str, Any]) -> dict[str, Any]:
    """A model's JSON Schema with its `$defs` put in place (none of them recursive): the OpenAPI document has no
    `$defs` section for these `#/$defs/...` references to point into."""
    defs = schema.pop("$defs", {})

    def resolve(node: Any) -> Any:
        if isinstance(node, dict):
            ref = node.get("$ref")
            if isinstance(ref, str) and ref.startswith("#/$defs/"):
                return resolve(defs[ref.removeprefix("#/$defs/")])
            return {k: resolve(v) for k, v in node.items()}
        if isinstance(node, list):
            return [resolve(v) for v in node]
        return node

    resolved: dict[str, Any] = resolve(schema)
    return resolved


@router.post(
    "/import",
    status_code=status.HTTP_201_CREATED,
    responses={
        **error_responses(413),
        # The body is read and validated here (not by FastAPI, which would read it whole first): declared by hand.
        422: {
            "description": "Validation Error",
            "content": {"application/json": {"schema": {"$ref": "#/components/schemas/HTTPValidationError"}}},
        },
    },
    openapi_extra={
        "requestBody": {
            "required": True,
            "content": {
                "application/json": {
                    "schema": {
                        "anyOf": [_inlined(ChinwagExport.model_json_schema()), _inlined(ChatImport.model_json_schema())]
                    }
                }
            },
        }
    },
)
async def import_conversation(
    request: Request, user: CurrentUser, pool: Pool, settings: AppSettings, llm: Llm
) -> Session:
    """Import a conversation: a `chinwag.session.v1` export, or `{title?, messages: [{role, content}]}`."""
    body = await _read_body(request, settings.max_import_bytes)
    data = _parse(body)
    try:
        return await import_session(
            pool, settings, user_id=user.id, data=data, counter=llm.counter, window=llm.catalog.context_window
        )
    except ImportInvalid as exc:
        raise _invalid(exc.loc, exc.message) from None
