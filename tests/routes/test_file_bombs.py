"""Document bombs uploaded to a real server: each is kept, marked with why its text was not read (`tokens: 0`, and
the agent is told), the answer comes within the extraction bounds, and the server answers others meanwhile.

The bombs are made here: a DOCX whose XML inflates a thousandfold, a PDF of thousands of pages, a huge HTML page,
a large JSON document, and a PDF slow enough to pass a short extraction timeout (its worker is killed)."""

from __future__ import annotations

import asyncio
import io
import json
import os
import uuid
import zipfile
from pathlib import Path
from typing import Any

import asyncpg
import httpx
import pytest
from fpdf import FPDF

from chinwag.llm.tokens import TiktokenCounter
from chinwag.services.file_context import build_file_context
from tests.conftest import RunningServer, ServerFactory, TestUser, UserFactory

UPLOAD_TIMEOUT_S = 120.0  # generous: the point is that it ends, and is marked


def docx_bomb(inflated_mib: int) -> bytes:
    """A valid DOCX whose `word/document.xml` inflates to `inflated_mib` MiB (it compresses ~1000:1)."""
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w", compression=zipfile.ZIP_DEFLATED) as zf:
        zf.writestr("[Content_Types].xml", '<?xml version="1.0"?><Types/>')
        with zf.open("word/document.xml", "w") as xml:
            xml.write(
                b'<?xml version="1.0" encoding="UTF-8"?>'
                b'<w:document xmlns:w="http://schemas.openxmlformats.org/wordprocessingml/2006/main"><w:body>'
            )
            paragraph = b'<w:p w:rsidR="' + b"A" * 1000 + b'"/>'  # 1 KiB of markup, no text
            chunk = paragraph * 1024  # about 1 MiB
            for _ in range(inflated_mib):
                xml.write(chunk)
            xml.write(b"</w:body></w:document>")
    return out.getvalue()


def pdf_of(pages: int, *, lines: int = 0) -> bytes:
    """`pages` pages, each with `lines` lines of text (text takes pypdf about 5 ms a page to extract)."""
    pdf = FPDF()
    pdf.set_font("helvetica", size=8)
    for i in range(pages):
        pdf.add_page()
        for k in range(lines):
            pdf.text(10, 10 + 4 * k, f"page {i} line {k} lorem ipsum dolor sit amet consectetur adipiscing elit")
    return bytes(pdf.output())


async def upload(client: httpx.AsyncClient, user: TestUser, session_id: str, name: str, data: bytes) -> dict[str, Any]:
    answer = await client.post(
        f"/sessions/{session_id}/files",
        files={"file": (name, data, "application/octet-stream")},
        headers=user.headers,
        timeout=UPLOAD_TIMEOUT_S,
    )
    assert answer.status_code == 201, answer.text
    body: dict[str, Any] = answer.json()
    return body


async def marked(db: asyncpg.Connection, file_id: str) -> str:
    row = await db.fetchrow("SELECT text, tokens, extract_error FROM files WHERE id = $1", uuid.UUID(file_id))
    assert row is not None
    assert row["text"] is None
    assert row["tokens"] == 0
    error: str = row["extract_error"]
    assert error.startswith("not read: ")
    return error


@pytest.fixture
async def setup(server_factory: ServerFactory, user_factory: UserFactory) -> tuple[RunningServer, TestUser, str]:
    server = await server_factory(max_upload_bytes=30 * 1024 * 1024)
    user = await user_factory(server)
    async with httpx.AsyncClient(base_url=server.url + "/api/v1", headers=user.headers, timeout=60) as c:
        session_id = (await c.post("/sessions", json={})).json()["id"]
    return server, user, session_id


async def test_bombs_are_kept_marked_and_told_to_the_agent(
    setup: tuple[RunningServer, TestUser, str], db: asyncpg.Connection
) -> None:
    server, user, session_id = setup
    wide_json = json.dumps({f"key{i}": [i, str(i), {"n": i}] for i in range(120_000)})  # ~5 MB
    async with httpx.AsyncClient(base_url=server.url + "/api/v1", timeout=60) as client:
        docx = await upload(client, user, session_id, "bomb.docx", docx_bomb(120))
        pdf = await upload(client, user, session_id, "pages.pdf", pdf_of(3000))
        html = await upload(client, user, session_id, "page.html", b"<html><body>" + b"<p>x</p>" * 600_000)
        nested = await upload(client, user, session_id, "deep.json", b"[" * 200_000 + b"]" * 200_000)
        wide = await upload(client, user, session_id, "wide.json", wide_json.encode())
    assert docx["content_type"].endswith("wordprocessingml.document")
    assert "inflates to more than" in await marked(db, docx["id"])
    assert pdf["content_type"] == "application/pdf"
    assert "3000 pages" in await marked(db, pdf["id"])
    assert html["content_type"] == "text/html"
    assert "HTML over" in await marked(db, html["id"])
    for bomb in (docx, pdf, html):
        assert bomb["tokens"] == 0
    # JSON too deep to parse is kept as text; a large one is kept as sent, not re-indented.
    assert nested["tokens"] > 0
    assert await db.fetchval("SELECT text FROM files WHERE id = $1", uuid.UUID(wide["id"])) == wide_json
    # The agent is told why, in its file context.
    async with asyncpg.create_pool(server.app.state.settings.database_url, min_size=1, max_size=2) as pool:
        context = await build_file_context(
            pool=pool, session_id=session_id, budget_tokens=1000, counter=TiktokenCounter()
        )
    for name in ("bomb.docx", "pages.pdf", "page.html"):
        line = next(line for line in context.instructions.splitlines() if name in line)
        assert "not read: " in line


async def test_an_extraction_past_the_timeout_kills_its_worker_and_the_next_upload_works(
    server_factory: ServerFactory, user_factory: UserFactory, db: asyncpg.Connection
) -> None:
    server = await server_factory(extract_timeout_s=0.3, extract_workers=1)
    user = await user_factory(server)
    slow = pdf_of(300, lines=60)  # under the page cap, a second or more of text extraction
    async with httpx.AsyncClient(base_url=server.url + "/api/v1", headers=user.headers, timeout=60) as client:
        session_id = (await client.post("/sessions", json={})).json()["id"]
        first = await upload(client, user, session_id, "slow.pdf", slow)
        assert "took longer than 0.3 s" in await marked(db, first["id"])
        # A fresh worker serves the next file.
        after = await upload(client, user, session_id, "notes.txt", b"plain words after the slow one")
    assert after["tokens"] > 0


async def test_the_server_answers_others_while_a_file_is_extracted(
    server_factory: ServerFactory, user_factory: UserFactory, db: asyncpg.Connection
) -> None:
    server = await server_factory(extract_timeout_s=60.0)
    user = await user_factory(server)
    slow = pdf_of(600, lines=30)  # seconds of text extraction, under the text cap
    async with httpx.AsyncClient(base_url=server.url + "/api/v1", headers=user.headers, timeout=60) as client:
        session_id = (await client.post("/sessions", json={})).json()["id"]
        uploading = asyncio.create_task(upload(client, user, session_id, "slow.pdf", slow))
        extractor = server.app.state.extractor
        async with asyncio.timeout(60):
            while not extractor._all:  # the worker has the file
                await asyncio.sleep(0.05)
        answers = 0
        async with httpx.AsyncClient(base_url=server.url, timeout=30) as other:
            while not uploading.done():
                assert (await other.get("/health/live")).status_code == 200
                login = await other.post("/api/v1/auth/login", json={"email": user.email, "password": user.password})
                assert login.status_code == 200
                answers += 1
                await asyncio.sleep(0.05)
        stored = await uploading
    assert answers > 0
    assert stored["tokens"] > 0


async def test_a_worker_runs_under_an_address_space_cap(
    server_factory: ServerFactory, user_factory: UserFactory
) -> None:
    server = await server_factory(extract_memory_mib=300)
    user = await user_factory(server)
    async with httpx.AsyncClient(base_url=server.url + "/api/v1", headers=user.headers, timeout=60) as client:
        session_id = (await client.post("/sessions", json={})).json()["id"]
        await upload(client, user, session_id, "a.txt", b"hello")
    (worker,) = server.app.state.extractor._all
    pid = worker.process.pid
    assert pid is not None
    assert pid != os.getpid()
    limits = Path(f"/proc/{pid}/limits").read_text()
    line = next(line for line in limits.splitlines() if line.startswith("Max address space"))
    assert line.split()[3] == str(300 * 1024 * 1024)
