"""What an uploaded file is, judged by its content (never by the type the client declared), and the text inside it.

Everything here is blocking (reads the file, parses PDFs); callers run it in a thread.
"""

from __future__ import annotations

import codecs
import io
import json
import re
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

import filetype
import pypdf
from bs4 import BeautifulSoup

from chinwag.errors import UnsupportedMediaType

TEXT_PLAIN = "text/plain"
TEXT_MARKDOWN = "text/markdown"
TEXT_CSV = "text/csv"
TEXT_HTML = "text/html"
APPLICATION_JSON = "application/json"
APPLICATION_PDF = "application/pdf"
APPLICATION_DOCX = "application/vnd.openxmlformats-officedocument.wordprocessingml.document"
IMAGE_TYPES = frozenset({"image/png", "image/jpeg", "image/gif", "image/webp"})
TEXT_TYPES = frozenset({TEXT_PLAIN, TEXT_MARKDOWN, TEXT_CSV, TEXT_HTML, APPLICATION_JSON})
ALLOWED_CONTENT_TYPES = TEXT_TYPES | IMAGE_TYPES | {APPLICATION_PDF, APPLICATION_DOCX}

# Human-readable, for `GET /config` `limits.file_types`.
ALLOWED_TYPES: list[str] = [
    "plain text",
    "Markdown",
    "source code",
    "CSV",
    "JSON",
    "HTML",
    "PDF",
    "DOCX",
    "PNG",
    "JPEG",
    "GIF",
    "WebP",
]

_HEAD_BYTES = 8192
_CHUNK = 1024 * 1024
# Control characters other than those real text files hold (tab, newlines, form feed, escape) mark a file as binary.
_BINARY_CONTROLS = re.compile("[\x00-\x08\x0e-\x1a\x1c-\x1f\x7f-\x9f]")
# A DOCX is a zip; refuse to inflate one that would grow past this (a zip bomb).
_MAX_DOCX_INFLATED = 200 * 1024 * 1024
_EXTENSION_TYPES = {
    ".md": TEXT_MARKDOWN,
    ".markdown": TEXT_MARKDOWN,
    ".csv": TEXT_CSV,
    ".htm": TEXT_HTML,
    ".html": TEXT_HTML,
    ".xhtml": TEXT_HTML,
    ".json": APPLICATION_JSON,
}
_HTML_START = re.compile(rb"^\s*(<!doctype\s+html|<html[\s>])", re.IGNORECASE)
_BLANK_LINES = re.compile(r"\n\s*\n(\s*\n)+")


class TextCounter(Protocol):
    """Counts the tokens of a text (chinwag.llm.tokens.TokenCounter is one)."""

    def count_text(self, text: str) -> int: ...


@dataclass(frozen=True)
class Extracted:
    """The text of a file, or why there is none (`error`, told to the agent)."""

    text: str | None
    error: str | None = None


def sniff_content_type(path: Path, *, name: str) -> str:
    """The content type of the file at `path`, from its bytes; `name` only tells text flavours apart.

    Raises `UnsupportedMediaType` for anything outside the allowlist.
    """
    with path.open("rb") as f:
        head = f.read(_HEAD_BYTES)
    kind = filetype.guess(head) if head else None
    if kind is not None:
        mime: str = kind.mime
        if mime in IMAGE_TYPES or mime == APPLICATION_PDF:
            return mime
        zipped = mime == "application/zip" or mime.startswith("application/vnd.openxmlformats-officedocument")
        if zipped and _is_docx(path):
            return APPLICATION_DOCX
        raise UnsupportedMediaType(f"files of type {mime} are not allowed")
    if not _is_utf8_text(path):
        raise UnsupportedMediaType("this file is neither UTF-8 text nor an allowed document or image type")
    suffix = Path(name).suffix.lower()
    declared = _EXTENSION_TYPES.get(suffix)
    if declared == APPLICATION_JSON:
        return APPLICATION_JSON if _parses_as_json(path) else TEXT_PLAIN
    if declared is not None:
        return declared
    if _HTML_START.match(head):
        return TEXT_HTML
    return TEXT_PLAIN


def _is_docx(path: Path) -> bool:
    try:
        with zipfile.ZipFile(path) as zf:
            return "word/document.xml" in zf.namelist()
    except (zipfile.BadZipFile, OSError):
        return False


def _is_utf8_text(path: Path) -> bool:
    decoder = codecs.getincrementaldecoder("utf-8")(errors="strict")
    with path.open("rb") as f:
        try:
            while chunk := f.read(_CHUNK):
                if b"\x00" in chunk:
                    return False
                if _BINARY_CONTROLS.search(decoder.decode(chunk)):
                    return False
            decoder.decode(b"", final=True)
        except UnicodeDecodeError:
            return False
    return True


def _parses_as_json(path: Path) -> bool:
    try:
        json.loads(path.read_bytes().decode("utf-8-sig"))
    except (ValueError, RecursionError):
        return False
    return True


def extract_text(path: Path, content_type: str) -> Extracted:
    """The text of a stored file of `content_type` (as returned by `sniff_content_type`).

    A file whose text cannot be read gives `Extracted(None, reason)`; it never raises for bad content.
    """
    try:
        if content_type in IMAGE_TYPES:
            return Extracted(None, "an image: it has no text to read")
        if content_type == APPLICATION_PDF:
            return _clean(_pdf_text(path), what="PDF")
        if content_type == APPLICATION_DOCX:
            return _clean(_docx_text(path), what="DOCX")
        text = path.read_bytes().decode("utf-8-sig")
        if content_type == APPLICATION_JSON:
            return _clean(_json_text(text), what="JSON")
        if content_type == TEXT_HTML:
            return _clean(_html_text(text), what="HTML", empty_ok=True)
        return _clean(text, what="text", empty_ok=True)
    except Exception as exc:  # parsers of untrusted input fail in many ways; the file is kept and marked
        return Extracted(None, f"could not read the text: {type(exc).__name__}: {exc}"[:500])


def _clean(text: str, *, what: str, empty_ok: bool = False) -> Extracted:
    # PostgreSQL text holds neither NUL nor unpaired surrogates, which PDF text layers sometimes contain.
    text = text.replace("\x00", "").encode("utf-8", "replace").decode("utf-8")
    if not text.strip() and not empty_ok:
        return Extracted(None, f"this {what} file has no text layer (a scan or images only?)")
    return Extracted(text)


def _pdf_text(path: Path) -> str:
    reader = pypdf.PdfReader(path)
    # Many PDFs are "encrypted" with an empty user password (only editing is restricted); those still read.
    if reader.is_encrypted and reader.decrypt("") == pypdf.PasswordType.NOT_DECRYPTED:
        raise ValueError("the PDF is password-protected")
    pages = [page.extract_text() or "" for page in reader.pages]
    return "\n\n".join(p.strip() for p in pages if p.strip())


def _docx_text(path: Path) -> str:
    import docx  # python-docx is slow to import; only DOCX uploads pay for it

    with zipfile.ZipFile(path) as zf:
        if sum(info.file_size for info in zf.infolist()) > _MAX_DOCX_INFLATED:
            raise ValueError("the DOCX inflates to more than 200 MiB")
    document = docx.Document(str(path))
    parts = [p.text for p in document.paragraphs]
    for table in document.tables:
        for row in table.rows:
            parts.append("\t".join(cell.text for cell in row.cells))
    return "\n".join(parts).strip()


def _json_text(text: str) -> str:
    # Pretty-ish: one key per line so read_file ranges and search snippets stay readable, little indentation.
    return json.dumps(json.loads(text), indent=1, ensure_ascii=False)


def _html_text(text: str) -> str:
    soup = BeautifulSoup(io.StringIO(text), "html.parser")
    for tag in soup(["script", "style", "noscript", "template"]):
        tag.decompose()
    lines = (line.strip() for line in soup.get_text("\n").splitlines())
    return _BLANK_LINES.sub("\n\n", "\n".join(lines)).strip()
