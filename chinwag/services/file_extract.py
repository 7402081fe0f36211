"""What an uploaded file is, judged by its content (never by the type the client declared), and the text inside it.

Everything here is blocking (reads the file, parses PDFs) and works on untrusted input: the server runs it in
separate worker processes (`extract_pool`), bounded in time and memory. Here every parser is bounded in what it
reads and what it produces: a file that passes a bound is kept with no text, and the reason says which bound.
"""

from __future__ import annotations

import codecs
import io
import json
import re
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any, Protocol

import filetype
import pypdf
from bs4 import BeautifulSoup
from defusedxml import ElementTree

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
# Bounds on the work of one file (each passed bound leaves the file kept, with no text and the reason).
MAX_TEXT_CHARS = 2_000_000
"""Extracted text (PDF, DOCX, HTML) longer than this is not kept."""
MAX_DOCX_XML_BYTES = 50 * 1024 * 1024
"""A DOCX's `word/document.xml` is read (streamed, never built as a tree) up to this many inflated bytes."""
MAX_PDF_PAGES = 1000
MAX_HTML_CHARS = 1_000_000
"""HTML is parsed only up to this size: the parser's time and memory grow with it many times over."""
MAX_JSON_REINDENT_CHARS = 1_000_000
"""JSON is re-indented (one key per line, for reading in ranges) only up to this size; larger is kept as sent."""
_W = "{http://schemas.openxmlformats.org/wordprocessingml/2006/main}"
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


class LimitExceeded(Exception):
    """The file passed one of the extraction bounds; the message (for the agent) says which."""


def sniff_content_type(path: Path, *, name: str, parse_json: bool = True) -> str:
    """The content type of the file at `path`, from its bytes; `name` only tells text flavours apart.

    Raises `UnsupportedMediaType` for anything outside the allowlist. With `parse_json` False (the file's extraction
    failed: parsing may be what failed) a `.json` file is not parsed to check it, and counts as plain text.
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
        return APPLICATION_JSON if parse_json and _parses_as_json(path) else TEXT_PLAIN
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
    except (ValueError, RecursionError, MemoryError):
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
    except LimitExceeded as exc:
        return Extracted(None, f"not read: {exc}")
    except MemoryError:
        return Extracted(None, "not read: extracting its text needed more memory than a file may use")
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
    count = len(reader.pages)
    if count > MAX_PDF_PAGES:
        raise LimitExceeded(f"the PDF has {count} pages; at most {MAX_PDF_PAGES} are read")
    pages: list[str] = []
    chars = 0
    for page in reader.pages:
        text = (page.extract_text() or "").strip()
        chars += len(text)
        if chars > MAX_TEXT_CHARS:
            raise LimitExceeded(f"its text is longer than {MAX_TEXT_CHARS} characters")
        if text:
            pages.append(text)
    return "\n\n".join(pages)


class _CappedReader(io.RawIOBase):
    """A file-like view of a zip member that fails once more than `cap` inflated bytes were read (a zip bomb)."""

    def __init__(self, raw: IO[bytes], cap: int) -> None:
        self._raw = raw
        self._left = cap

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: Any) -> int:
        data = self._raw.read(min(len(buffer), self._left + 1))
        self._left -= len(data)
        if self._left < 0:
            raise LimitExceeded(f"its document inflates to more than {MAX_DOCX_XML_BYTES // (1024 * 1024)} MiB")
        buffer[: len(data)] = data
        return len(data)


def _docx_text(path: Path) -> str:
    """The text of `word/document.xml`, streamed: one line per paragraph, a table row's cells on one line split by
    tabs. Each paragraph's elements are dropped once read, so memory stays bounded whatever the document holds."""
    lines: list[str] = []
    chars = 0
    runs: list[str] = []  # the text of the paragraph (or table row) being read
    cells = 0  # depth of table cells around the reader
    with zipfile.ZipFile(path) as zf, zf.open("word/document.xml") as member:
        stream = io.BufferedReader(_CappedReader(member, MAX_DOCX_XML_BYTES))
        # defusedxml refuses entity expansion (billion laughs) and external entities.
        for event, element in ElementTree.iterparse(stream, events=("start", "end"), forbid_dtd=True):
            tag = element.tag
            if event == "start":
                if tag == f"{_W}tc":
                    cells += 1
                continue
            if tag == f"{_W}t":
                runs.append(element.text or "")
            elif tag == f"{_W}tab":
                runs.append("\t")
            elif tag in (f"{_W}br", f"{_W}cr"):
                runs.append("\n")
            elif tag == f"{_W}tc":
                cells -= 1
                runs.append("\t")
            elif tag == f"{_W}p" and cells:
                runs.append("\n")
            elif tag in (f"{_W}p", f"{_W}tr"):
                text = "".join(runs)
                text = text.replace("\n\t", "\t").rstrip("\t\n") if tag == f"{_W}tr" else text
                lines.append(text)
                chars += len(text) + 1
                runs = []
                element.clear()
                if chars > MAX_TEXT_CHARS:
                    raise LimitExceeded(f"its text is longer than {MAX_TEXT_CHARS} characters")
    return "\n".join(lines).strip()


def _json_text(text: str) -> str:
    # Pretty-ish: one key per line so read_file ranges and search snippets stay readable, little indentation. A
    # large document is kept as sent: re-indenting builds the whole tree and its text, dozens of times its size.
    if len(text) > MAX_JSON_REINDENT_CHARS:
        return text
    try:
        return json.dumps(json.loads(text), indent=1, ensure_ascii=False)
    except RecursionError:
        return text  # nested too deep to walk: as sent


def _html_text(text: str) -> str:
    if len(text) > MAX_HTML_CHARS:
        raise LimitExceeded(f"HTML over {MAX_HTML_CHARS} characters is not parsed")
    soup = BeautifulSoup(io.StringIO(text), "html.parser")
    for tag in soup(["script", "style", "noscript", "template"]):
        tag.decompose()
    lines = (line.strip() for line in soup.get_text("\n").splitlines())
    return _BLANK_LINES.sub("\n\n", "\n".join(lines)).strip()
