"""`/sessions/{id}/files` over real HTTP on a real PostgreSQL: upload, list, get, download, delete; size and type
limits, hostile names, ownership, and the bytes on disk."""

from __future__ import annotations

import asyncio
import hashlib
import io
import os
import sys
import time
import uuid
from collections.abc import AsyncIterator, Iterable
from pathlib import Path
from typing import Any
from urllib.parse import quote, urlsplit

import asyncpg
import docx
import httpx
from fpdf import FPDF

from chinwag.llm.tokens import TiktokenCounter
from chinwag.routes.files import content_disposition
from chinwag.services.file_extract import ALLOWED_TYPES
from tests.conftest import RunningServer, ServerFactory, TestUser, UserFactory

FILE_KEYS = {"id", "name", "size", "content_type", "sha256", "tokens", "created_at"}
BOUNDARY = "chinwag-test-boundary-7f3a"


async def new_session(client: httpx.AsyncClient, user: TestUser) -> str:
    response = await client.post("/sessions", json={}, headers=user.headers)
    assert response.status_code == 201, response.text
    session_id: str = response.json()["id"]
    return session_id


async def upload(
    client: httpx.AsyncClient,
    user: TestUser,
    session_id: str,
    name: str,
    data: bytes,
    content_type: str = "text/plain",
) -> httpx.Response:
    return await client.post(
        f"/sessions/{session_id}/files", files={"file": (name, data, content_type)}, headers=user.headers
    )


def raw_multipart(filename: bytes, data: bytes, *, field: bytes = b"file") -> bytes:
    """A multipart body written by hand, for names no client library would send as they are."""
    return (
        f"--{BOUNDARY}\r\n".encode()
        + b'Content-Disposition: form-data; name="'
        + field
        + b'"; filename="'
        + filename
        + b'"\r\nContent-Type: text/plain\r\n\r\n'
        + data
        + f"\r\n--{BOUNDARY}--\r\n".encode()
    )


async def upload_raw(client: httpx.AsyncClient, user: TestUser, session_id: str, body: bytes) -> httpx.Response:
    headers = {**user.headers, "Content-Type": f"multipart/form-data; boundary={BOUNDARY}"}
    return await client.post(f"/sessions/{session_id}/files", content=body, headers=headers)


def files_dir(server: RunningServer) -> Path:
    root: Path = server.app.state.settings.data_dir / "files"
    return root


def stored_paths(server: RunningServer) -> list[Path]:
    """Every file under the files folder, relative to it."""
    root = files_dir(server)
    return sorted(p.relative_to(root) for p in root.rglob("*") if p.is_file()) if root.exists() else []


def pdf_bytes(text: str) -> bytes:
    pdf = FPDF()
    pdf.set_font("Helvetica", size=12)
    pdf.add_page()
    pdf.multi_cell(0, 10, text)
    return bytes(pdf.output())


def docx_bytes(text: str) -> bytes:
    document = docx.Document()
    document.add_paragraph(text)
    out = io.BytesIO()
    document.save(out)
    return out.getvalue()


async def test_upload_list_get_download(server: RunningServer, client: httpx.AsyncClient, alice: TestUser) -> None:
    session_id = await new_session(client, alice)
    data = b"Hello from a text file: marker-UPLOAD-1\n" * 50
    response = await upload(client, alice, session_id, "hello.txt", data, "application/octet-stream")
    assert response.status_code == 201, response.text
    file = response.json()
    assert set(file) == FILE_KEYS
    assert file["name"] == "hello.txt"
    assert file["size"] == len(data)
    assert file["sha256"] == hashlib.sha256(data).hexdigest()
    assert file["content_type"] == "text/plain"  # from the content, not the declared octet-stream
    assert file["tokens"] == TiktokenCounter().count_text(data.decode())
    uuid.UUID(file["id"])

    # The bytes are at <data>/files/<session>/<file>, nowhere else.
    assert stored_paths(server) == [Path(session_id) / file["id"]]
    assert (files_dir(server) / session_id / file["id"]).read_bytes() == data

    listed = await client.get(f"/sessions/{session_id}/files", headers=alice.headers)
    assert listed.status_code == 200
    assert listed.json() == {"items": [file]}

    got = await client.get(f"/sessions/{session_id}/files/{file['id']}", headers=alice.headers)
    assert got.status_code == 200
    assert got.json() == file

    content = await client.get(f"/sessions/{session_id}/files/{file['id']}/content", headers=alice.headers)
    assert content.status_code == 200
    assert content.content == data
    assert content.headers["content-type"].startswith("text/plain")
    assert content.headers["x-content-type-options"] == "nosniff"
    assert content.headers["content-disposition"] == "attachment; filename=\"hello.txt\"; filename*=UTF-8''hello.txt"


async def test_files_are_listed_oldest_first(client: httpx.AsyncClient, alice: TestUser) -> None:
    session_id = await new_session(client, alice)
    ids = []
    for i in range(3):
        response = await upload(client, alice, session_id, f"f{i}.md", f"# file {i}\n".encode())
        assert response.status_code == 201
        assert response.json()["content_type"] == "text/markdown"
        ids.append(response.json()["id"])
    listed = await client.get(f"/sessions/{session_id}/files", headers=alice.headers)
    assert [f["id"] for f in listed.json()["items"]] == ids


async def test_pdf_and_docx_are_extracted(client: httpx.AsyncClient, alice: TestUser, db: asyncpg.Connection) -> None:
    session_id = await new_session(client, alice)
    pdf = await upload(client, alice, session_id, "report.pdf", pdf_bytes("Quarterly marker-PDF-REPORT"), "text/plain")
    assert pdf.status_code == 201, pdf.text
    assert pdf.json()["content_type"] == "application/pdf"
    assert pdf.json()["tokens"] > 0
    word = await upload(client, alice, session_id, "memo.docx", docx_bytes("Memo marker-DOCX-MEMO"))
    assert word.status_code == 201, word.text
    assert word.json()["content_type"] == "application/vnd.openxmlformats-officedocument.wordprocessingml.document"

    rows = {
        str(r["id"]): r
        for r in await db.fetch(
            "SELECT id, text, extract_error FROM files WHERE session_id = $1", uuid.UUID(session_id)
        )
    }
    assert "marker-PDF-REPORT" in rows[pdf.json()["id"]]["text"]
    assert "marker-DOCX-MEMO" in rows[word.json()["id"]]["text"]
    assert rows[pdf.json()["id"]]["extract_error"] is None


async def test_spoofed_types_are_refused(
    server: RunningServer, client: httpx.AsyncClient, alice: TestUser, db: asyncpg.Connection
) -> None:
    session_id = await new_session(client, alice)
    elf = Path(sys.executable).resolve().read_bytes()[:200_000]
    noise = hashlib.sha512(b"seed").digest() * 2000  # not UTF-8, no magic number
    for name, data in (("notes.txt", elf), ("readme.md", noise), ("setup.exe.txt", b"MZ" + b"\x90\x00" * 500)):
        response = await upload(client, alice, session_id, name, data, "text/plain")
        assert response.status_code == 415, (name, response.text)
        assert response.json()["code"] == "unsupported_type"
    assert await db.fetchval("SELECT count(*) FROM files") == 0
    assert stored_paths(server) == []  # no half-written upload left behind


async def test_hostile_names_are_display_only(
    server: RunningServer, client: httpx.AsyncClient, alice: TestUser
) -> None:
    session_id = await new_session(client, alice)
    cases = [
        (b"../../etc/passwd", "passwd"),
        (b"..\\..\\windows\\win.ini", "win.ini"),
        (b"evil\x00name.txt", "evilname.txt"),
        (b"/absolute/path.txt", "path.txt"),
        (b"..", "file"),
        (b"", "file"),
        ("r\u00e9sum\u00e9 \u202egnp.txt".encode(), "r\u00e9sum\u00e9 gnp.txt"),  # direction override dropped
    ]
    for raw, expected in cases:
        response = await upload_raw(client, alice, session_id, raw_multipart(raw, b"some text"))
        assert response.status_code == 201, (raw, response.text)
        assert response.json()["name"] == expected, raw

    long_name = "a" * 1000 + ".txt"
    response = await upload(client, alice, session_id, long_name, b"long name")
    assert response.status_code == 201
    name = response.json()["name"]
    assert len(name) == 255
    assert name.endswith(".txt")

    # Whatever the names, every stored file is <session>/<uuid>, inside the files folder.
    paths = stored_paths(server)
    assert len(paths) == len(cases) + 1
    for path in paths:
        assert path.parent == Path(session_id)
        uuid.UUID(path.name)
    assert not (server.app.state.settings.data_dir / "etc").exists()


async def test_download_name_is_rfc5987(client: httpx.AsyncClient, alice: TestUser) -> None:
    session_id = await new_session(client, alice)
    name = "Grüße; 📄 100%.txt"
    file = (await upload(client, alice, session_id, name, b"text")).json()
    assert file["name"] == name
    response = await client.get(f"/sessions/{session_id}/files/{file['id']}/content", headers=alice.headers)
    disposition = response.headers["content-disposition"]
    assert disposition == "attachment; filename=\"Gr__e; _ 100%.txt\"; filename*=UTF-8''" + quote(name, safe="")
    assert disposition.isascii()


def test_content_disposition_escapes_quotes_and_backslashes() -> None:
    value = content_disposition('a "b" \\ c.txt')
    assert value == "attachment; filename=\"a _b_ _ c.txt\"; filename*=UTF-8''a%20%22b%22%20%5C%20c.txt"


async def test_another_users_files_are_not_found(
    server: RunningServer, client: httpx.AsyncClient, alice: TestUser, bob: TestUser
) -> None:
    session_id = await new_session(client, alice)
    file_id = (await upload(client, alice, session_id, "private.txt", b"alice only")).json()["id"]
    base = f"/sessions/{session_id}/files"
    attempts = [
        await upload(client, bob, session_id, "intruder.txt", b"bob was here"),
        await client.get(base, headers=bob.headers),
        await client.get(f"{base}/{file_id}", headers=bob.headers),
        await client.get(f"{base}/{file_id}/content", headers=bob.headers),
        await client.delete(f"{base}/{file_id}", headers=bob.headers),
    ]
    for response in attempts:
        assert response.status_code == 404, response.text
        assert response.json()["code"] == "not_found"

    # Bob's own session does not open Alice's file either.
    bob_session = await new_session(client, bob)
    for response in (
        await client.get(f"/sessions/{bob_session}/files/{file_id}", headers=bob.headers),
        await client.get(f"/sessions/{bob_session}/files/{file_id}/content", headers=bob.headers),
        await client.delete(f"/sessions/{bob_session}/files/{file_id}", headers=bob.headers),
    ):
        assert response.status_code == 404

    # Nothing changed for Alice.
    assert stored_paths(server) == [Path(session_id) / file_id]
    listed = await client.get(base, headers=alice.headers)
    assert [f["id"] for f in listed.json()["items"]] == [file_id]


async def test_unknown_and_malformed_ids_are_not_found(client: httpx.AsyncClient, alice: TestUser) -> None:
    session_id = await new_session(client, alice)
    for path in (
        f"/sessions/{uuid.uuid4()}/files",
        "/sessions/not-a-uuid/files",
        f"/sessions/{session_id}/files/{uuid.uuid4()}",
        f"/sessions/{session_id}/files/not-a-uuid",
        f"/sessions/{session_id}/files/..%2F..%2Fetc%2Fpasswd/content",
    ):
        response = await client.get(path, headers=alice.headers)
        assert response.status_code == 404, (path, response.text)
    response = await upload(client, alice, "not-a-uuid", "a.txt", b"x")
    assert response.status_code == 404


async def test_requires_authentication(client: httpx.AsyncClient, alice: TestUser) -> None:
    session_id = await new_session(client, alice)
    response = await client.post(f"/sessions/{session_id}/files", files={"file": ("a.txt", b"x")})
    assert response.status_code == 401
    assert (await client.get(f"/sessions/{session_id}/files")).status_code == 401


async def test_bad_multipart_requests(client: httpx.AsyncClient, alice: TestUser, db: asyncpg.Connection) -> None:
    session_id = await new_session(client, alice)
    url = f"/sessions/{session_id}/files"
    cases: list[dict[str, Any]] = [
        {"content": b"plain body", "headers": {"Content-Type": "text/plain"}},
        {"json": {"file": "x"}},
        {"files": {"other": ("a.txt", b"x")}},
        {"content": b"--nope\r\ngarbage", "headers": {"Content-Type": "multipart/form-data; boundary=nope"}},
        {
            "content": raw_multipart(b"a.txt", b"cut short")[:-20],
            "headers": {"Content-Type": f"multipart/form-data; boundary={BOUNDARY}"},
        },
    ]
    for case in cases:
        headers = {**alice.headers, **case.pop("headers", {})}
        response = await client.post(url, headers=headers, **case)
        assert response.status_code == 400, response.text
        assert response.json()["code"] == "bad_request"
    two = raw_multipart(b"a.txt", b"one")[: -len(f"--{BOUNDARY}--\r\n")] + raw_multipart(b"b.txt", b"two")
    response = await upload_raw(client, alice, session_id, two)
    assert response.status_code == 400
    assert await db.fetchval("SELECT count(*) FROM files") == 0


async def test_empty_file_and_extra_fields(client: httpx.AsyncClient, alice: TestUser) -> None:
    session_id = await new_session(client, alice)
    response = await client.post(
        f"/sessions/{session_id}/files",
        files={"file": ("empty.txt", b"")},
        data={"note": "ignored"},
        headers=alice.headers,
    )
    assert response.status_code == 201, response.text
    assert response.json()["size"] == 0
    assert response.json()["tokens"] == 0


async def test_delete_file_removes_its_bytes(server: RunningServer, client: httpx.AsyncClient, alice: TestUser) -> None:
    session_id = await new_session(client, alice)
    keep = (await upload(client, alice, session_id, "keep.txt", b"keep")).json()["id"]
    gone = (await upload(client, alice, session_id, "gone.txt", b"gone")).json()["id"]
    assert len(stored_paths(server)) == 2

    response = await client.delete(f"/sessions/{session_id}/files/{gone}", headers=alice.headers)
    assert response.status_code == 204
    assert response.content == b""
    assert stored_paths(server) == [Path(session_id) / keep]
    for path in (f"/sessions/{session_id}/files/{gone}", f"/sessions/{session_id}/files/{gone}/content"):
        assert (await client.get(path, headers=alice.headers)).status_code == 404
    assert (await client.delete(f"/sessions/{session_id}/files/{gone}", headers=alice.headers)).status_code == 404
    listed = await client.get(f"/sessions/{session_id}/files", headers=alice.headers)
    assert [f["id"] for f in listed.json()["items"]] == [keep]


async def test_delete_session_removes_its_files_bytes(
    server: RunningServer, client: httpx.AsyncClient, alice: TestUser, db: asyncpg.Connection
) -> None:
    doomed = await new_session(client, alice)
    kept = await new_session(client, alice)
    for i in range(2):
        assert (await upload(client, alice, doomed, f"d{i}.txt", b"doomed")).status_code == 201
    kept_file = (await upload(client, alice, kept, "k.txt", b"kept")).json()["id"]

    response = await client.delete(f"/sessions/{doomed}", headers=alice.headers)
    assert response.status_code == 204
    assert not (files_dir(server) / doomed).exists()
    assert stored_paths(server) == [Path(kept) / kept_file]
    assert await db.fetchval("SELECT count(*) FROM files WHERE session_id = $1", uuid.UUID(doomed)) == 0
    assert (await client.get(f"/sessions/{doomed}/files", headers=alice.headers)).status_code == 404


# --- size limits -------------------------------------------------------------------------------------------------

LIMIT = 256 * 1024


async def sized_server(server_factory: ServerFactory, user_factory: UserFactory) -> tuple[RunningServer, TestUser]:
    server = await server_factory(max_upload_bytes=LIMIT)
    return server, await user_factory(server)


async def test_limit_is_exact(server_factory: ServerFactory, user_factory: UserFactory, db: asyncpg.Connection) -> None:
    server, user = await sized_server(server_factory, user_factory)
    async with httpx.AsyncClient(base_url=server.url + "/api/v1", timeout=30) as client:
        session_id = await new_session(client, user)
        fits = await upload(client, user, session_id, "fits.txt", b"x" * LIMIT)
        assert fits.status_code == 201, fits.text
        over = await upload(client, user, session_id, "over.txt", b"x" * (LIMIT + 1))
        assert over.status_code == 413
        assert over.json()["code"] == "too_large"
    assert await db.fetchval("SELECT count(*) FROM files") == 1
    assert stored_paths(server) == [Path(session_id) / fits.json()["id"]]


class _RawClient(asyncio.Protocol):
    """An HTTP/1.1 client at the socket level that keeps what it received even if the server resets the
    connection (asyncio's StreamReader drops buffered data on a reset, and a server refusing an upload may reset)."""

    def __init__(self) -> None:
        self.received = bytearray()
        self.event = asyncio.Event()  # something happened: data, room to write, or the end
        self.writable = True
        self.lost = False

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.WriteTransport)
        self.transport = transport

    def data_received(self, data: bytes) -> None:
        self.received += data
        self.event.set()

    def connection_lost(self, exc: Exception | None) -> None:
        self.lost = True
        self.event.set()

    def pause_writing(self) -> None:
        self.writable = False

    def resume_writing(self) -> None:
        self.writable = True
        self.event.set()

    def response(self) -> tuple[int, bytes] | None:
        """(status, body) once a whole response is in."""
        head, sep, body = bytes(self.received).partition(b"\r\n\r\n")
        if not sep:
            return None
        lines = head.decode().split("\r\n")
        length = next(int(v) for k, _, v in (h.partition(":") for h in lines[1:]) if k.lower() == "content-length")
        if len(body) < length:
            return None
        return int(lines[0].split(" ", 2)[1]), body[:length]

    async def wait(self) -> None:
        self.event.clear()
        await asyncio.wait_for(self.event.wait(), 10)


async def _raw_post(
    server: RunningServer, path: str, headers: dict[str, str], chunks: Iterable[bytes]
) -> tuple[int, bytes, int]:
    """POST over a plain socket, sending `chunks` one by one and stopping as soon as the server answers.

    Returns (status, response body, bytes of the body sent before the answer came); asserts the server then closed
    the connection."""
    url = urlsplit(server.url)
    assert url.port is not None
    loop = asyncio.get_running_loop()
    _, client = await loop.create_connection(_RawClient, "127.0.0.1", url.port)
    head = f"POST /api/v1{path} HTTP/1.1\r\nHost: {url.netloc}\r\n"
    head += "".join(f"{k}: {v}\r\n" for k, v in headers.items()) + "\r\n"
    client.transport.write(head.encode())
    sent = 0
    try:
        for chunk in chunks:
            # Flow control: wait while the server is not reading, unless it answers meanwhile.
            while not client.writable and client.response() is None and not client.lost:
                await client.wait()
            if client.response() is not None or client.lost:
                break
            client.transport.write(chunk)
            sent += len(chunk)
            await asyncio.sleep(0)
        while (answer := client.response()) is None:
            assert not client.lost, bytes(client.received)
            await client.wait()
        # The server closes the connection after refusing, so the client stops sending.
        for _ in range(500):
            if client.lost:
                break
            await asyncio.sleep(0.01)
        assert client.lost, "the server kept the connection open"
    finally:
        client.transport.close()
    return answer[0], answer[1], sent


async def test_oversize_content_length_is_refused_before_the_body(
    server_factory: ServerFactory, user_factory: UserFactory, db: asyncpg.Connection
) -> None:
    server, user = await sized_server(server_factory, user_factory)
    async with httpx.AsyncClient(base_url=server.url + "/api/v1", timeout=30) as client:
        session_id = await new_session(client, user)
    announced = 100 * 1024 * 1024
    headers = {
        **user.headers,
        "Content-Type": f"multipart/form-data; boundary={BOUNDARY}",
        "Content-Length": str(announced),
    }
    # Not one byte of the body is sent: the answer comes from the Content-Length alone.
    status, body, sent = await _raw_post(server, f"/sessions/{session_id}/files", headers, [])
    assert status == 413
    assert b'"too_large"' in body
    assert sent == 0
    assert await db.fetchval("SELECT count(*) FROM files") == 0


async def test_oversize_stream_is_refused_while_it_is_sent(
    server_factory: ServerFactory, user_factory: UserFactory, db: asyncpg.Connection
) -> None:
    server, user = await sized_server(server_factory, user_factory)
    async with httpx.AsyncClient(base_url=server.url + "/api/v1", timeout=30) as client:
        session_id = await new_session(client, user)
    # Chunked: no Content-Length to judge by, so the server must count as it reads.
    total = 256 * LIMIT  # 64 MiB, generated lazily
    part_head = f'--{BOUNDARY}\r\nContent-Disposition: form-data; name="file"; filename="big.txt"\r\n\r\n'.encode()

    def chunks() -> Iterable[bytes]:
        yield b"%x\r\n%s\r\n" % (len(part_head), part_head)
        piece = b"y" * 16384
        for _ in range(total // len(piece)):
            yield b"%x\r\n%s\r\n" % (len(piece), piece)
        tail = f"\r\n--{BOUNDARY}--\r\n".encode()
        yield b"%x\r\n%s\r\n0\r\n\r\n" % (len(tail), tail)

    headers = {
        **user.headers,
        "Content-Type": f"multipart/form-data; boundary={BOUNDARY}",
        "Transfer-Encoding": "chunked",
    }
    status, body, sent = await _raw_post(server, f"/sessions/{session_id}/files", headers, chunks())
    assert status == 413
    assert b'"too_large"' in body
    # The answer came while the body was far from sent (what was sent sits mostly in the kernel's socket buffers).
    assert LIMIT < sent < total // 2, sent
    assert await db.fetchval("SELECT count(*) FROM files") == 0
    await asyncio.sleep(0.1)
    assert stored_paths(server) == []


async def test_config_lists_the_allowed_types(client: httpx.AsyncClient) -> None:
    body = (await client.get("/config")).json()
    assert body["limits"]["file_types"] == ALLOWED_TYPES
    assert {"PDF", "DOCX", "plain text", "Markdown", "CSV", "JSON", "HTML"} <= set(ALLOWED_TYPES)


async def test_uploads_left_half_written_by_a_dead_process_are_swept(
    server: RunningServer, client: httpx.AsyncClient, alice: TestUser
) -> None:
    session_id = await new_session(client, alice)
    folder = files_dir(server) / session_id
    folder.mkdir(parents=True)
    stale = folder / f".upload-{uuid.uuid4()}.part"
    recent = folder / f".upload-{uuid.uuid4()}.part"  # maybe another upload, still running
    stale.write_bytes(b"half")
    recent.write_bytes(b"half")
    day_ago = time.time() - 24 * 3600
    os.utime(stale, (day_ago, day_ago))
    file_id = (await upload(client, alice, session_id, "a.txt", b"a")).json()["id"]
    assert sorted(p.name for p in folder.iterdir()) == sorted([file_id, recent.name])


async def test_session_deleted_during_an_upload(
    server: RunningServer, client: httpx.AsyncClient, alice: TestUser, db: asyncpg.Connection
) -> None:
    session_id = await new_session(client, alice)
    folder = files_dir(server) / session_id
    whole = raw_multipart(b"late.txt", b"x" * 100_000)
    resume = asyncio.Event()

    async def body() -> AsyncIterator[bytes]:
        yield whole[:50_000]
        await resume.wait()
        yield whole[50_000:]

    headers = {**alice.headers, "Content-Type": f"multipart/form-data; boundary={BOUNDARY}"}
    uploading = asyncio.ensure_future(client.post(f"/sessions/{session_id}/files", content=body(), headers=headers))
    for _ in range(500):  # until the server has its temporary file
        if folder.exists() and any(folder.iterdir()):
            break
        await asyncio.sleep(0.01)
    assert any(folder.iterdir())
    assert (await client.delete(f"/sessions/{session_id}", headers=alice.headers)).status_code == 204
    resume.set()
    response = await uploading
    assert response.status_code == 404
    assert await db.fetchval("SELECT count(*) FROM files") == 0
    assert stored_paths(server) == []


async def test_stored_files_are_private_to_chinwags_user(
    server: RunningServer, client: httpx.AsyncClient, alice: TestUser
) -> None:
    data_dir = server.app.state.settings.data_dir
    data_dir.mkdir(parents=True, exist_ok=True)
    data_dir.chmod(0o755)  # made by the operator: chinwag leaves its mode alone
    old_umask = os.umask(0o022)  # the usual umask, which would leave files world-readable
    try:
        session_id = await new_session(client, alice)
        file = (await upload(client, alice, session_id, "private.txt", b"for alice only")).json()
    finally:
        os.umask(old_umask)
    path = files_dir(server) / session_id / file["id"]
    assert path.stat().st_mode & 0o777 == 0o600
    assert path.parent.stat().st_mode & 0o777 == 0o700
    assert files_dir(server).stat().st_mode & 0o777 == 0o700
    assert data_dir.stat().st_mode & 0o777 == 0o755


async def test_uploads_past_the_users_storage_quota_are_refused(
    server_factory: ServerFactory, user_factory: UserFactory
) -> None:
    server = await server_factory(max_storage_bytes_per_user=1000)
    alice, bob = await user_factory(server), await user_factory(server)
    async with httpx.AsyncClient(base_url=server.url + "/api/v1", timeout=30) as client:
        first, second = await new_session(client, alice), await new_session(client, alice)
        kept = await upload(client, alice, first, "a.txt", b"a" * 600)
        assert kept.status_code == 201, kept.text
        over = await upload(client, alice, second, "b.txt", b"b" * 600)  # the quota spans all her sessions
        assert over.status_code == 413
        assert over.json()["code"] == "quota_exceeded"
        assert (await client.get(f"/sessions/{second}/files", headers=alice.headers)).json()["items"] == []
        assert (await upload(client, alice, second, "c.txt", b"c" * 300)).status_code == 201  # what still fits
        assert (await upload(client, bob, await new_session(client, bob), "d.txt", b"d" * 600)).status_code == 201
        await client.delete(f"/sessions/{first}/files/{kept.json()['id']}", headers=alice.headers)
        assert (await upload(client, alice, second, "b.txt", b"b" * 600)).status_code == 201  # room again
    assert len(stored_paths(server)) == 3
