"""Type sniffing and text extraction on real files made here with real libraries (fpdf2, python-docx, Pillow)."""

from __future__ import annotations

import json
import sys
import zipfile
from pathlib import Path

import docx
import pytest
from fpdf import FPDF
from fpdf.enums import EncryptionMethod
from PIL import Image

from chinwag.errors import UnsupportedMediaType
from chinwag.services.file_extract import (
    ALLOWED_CONTENT_TYPES,
    ALLOWED_TYPES,
    APPLICATION_DOCX,
    APPLICATION_JSON,
    APPLICATION_PDF,
    TEXT_CSV,
    TEXT_HTML,
    TEXT_MARKDOWN,
    TEXT_PLAIN,
    extract_text,
    sniff_content_type,
)


def make_pdf(path: Path, *pages: str) -> Path:
    pdf = FPDF()
    pdf.set_font("Helvetica", size=12)
    for text in pages:
        pdf.add_page()
        pdf.multi_cell(0, 10, text)
    pdf.output(str(path))
    return path


def make_docx(path: Path, *paragraphs: str, table: list[list[str]] | None = None) -> Path:
    document = docx.Document()
    for text in paragraphs:
        document.add_paragraph(text)
    if table:
        t = document.add_table(rows=len(table), cols=len(table[0]))
        for r, row in enumerate(table):
            for c, value in enumerate(row):
                t.cell(r, c).text = value
    document.save(str(path))
    return path


def write(path: Path, data: bytes | str) -> Path:
    path.write_bytes(data.encode() if isinstance(data, str) else data)
    return path


def test_pdf_is_sniffed_and_its_pages_extracted(tmp_path: Path) -> None:
    path = make_pdf(tmp_path / "report.bin", "First page marker-PDF-ONE", "Second page marker-PDF-TWO")
    # The name says nothing: the bytes decide.
    assert sniff_content_type(path, name="report.txt") == APPLICATION_PDF
    result = extract_text(path, APPLICATION_PDF)
    assert result.error is None
    assert result.text is not None
    assert "marker-PDF-ONE" in result.text
    assert "marker-PDF-TWO" in result.text
    assert result.text.index("marker-PDF-ONE") < result.text.index("marker-PDF-TWO")


def test_pdf_without_text_is_kept_but_marked(tmp_path: Path) -> None:
    pdf = FPDF()
    pdf.add_page()
    pdf.rect(10, 10, 50, 50)
    pdf.output(str(tmp_path / "drawing.pdf"))
    path = tmp_path / "drawing.pdf"
    assert sniff_content_type(path, name="drawing.pdf") == APPLICATION_PDF
    result = extract_text(path, APPLICATION_PDF)
    assert result.text is None
    assert result.error is not None
    assert "no text" in result.error


def test_broken_pdf_is_marked_not_raised(tmp_path: Path) -> None:
    good = make_pdf(tmp_path / "good.pdf", "some text").read_bytes()
    # A real PDF header, then nothing a PDF reader can use.
    path = write(tmp_path / "broken.pdf", good[:9] + b"garbage " * 100)
    assert sniff_content_type(path, name="broken.pdf") == APPLICATION_PDF
    result = extract_text(path, APPLICATION_PDF)
    assert result.text is None
    assert result.error is not None
    assert result.error.startswith("could not read the text")


def test_encrypted_pdfs(tmp_path: Path) -> None:
    def encrypted(path: Path, text: str, *, owner_password: str, user_password: str | None = None) -> Path:
        pdf = FPDF()
        pdf.set_font("Helvetica", size=12)
        pdf.add_page()
        pdf.multi_cell(0, 10, text)
        pdf.set_encryption(
            owner_password=owner_password, user_password=user_password, encryption_method=EncryptionMethod.RC4
        )
        pdf.output(str(path))
        return path

    # Restricted editing only (no password to open): the text reads.
    open_pdf = encrypted(tmp_path / "open.pdf", "open marker-ENC", owner_password="owner")
    assert extract_text(open_pdf, APPLICATION_PDF).text == "open marker-ENC"
    # A password to open: kept, marked.
    locked = encrypted(tmp_path / "locked.pdf", "locked marker", owner_password="owner", user_password="user")
    assert sniff_content_type(locked, name="locked.pdf") == APPLICATION_PDF
    result = extract_text(locked, APPLICATION_PDF)
    assert result.text is None
    assert result.error is not None
    assert "password-protected" in result.error


def test_docx_paragraphs_and_tables(tmp_path: Path) -> None:
    path = make_docx(
        tmp_path / "notes.docx",
        "Minutes: marker-DOCX-alpha",
        "Ünïcödé line",
        table=[["name", "value"], ["answer", "marker-DOCX-42"]],
    )
    assert sniff_content_type(path, name="whatever.pdf") == APPLICATION_DOCX
    result = extract_text(path, APPLICATION_DOCX)
    assert result.error is None
    assert result.text is not None
    assert "marker-DOCX-alpha" in result.text
    assert "Ünïcödé line" in result.text
    assert "answer\tmarker-DOCX-42" in result.text


def test_other_zip_files_are_refused(tmp_path: Path) -> None:
    path = tmp_path / "archive.docx"
    with zipfile.ZipFile(path, "w") as zf:
        zf.writestr("readme.txt", "not a word document")
    with pytest.raises(UnsupportedMediaType):
        sniff_content_type(path, name="archive.docx")


@pytest.mark.parametrize(
    ("name", "content", "expected_type", "expected_text"),
    [
        ("notes.txt", "plain marker-TXT\nsecond line\n", TEXT_PLAIN, "plain marker-TXT\nsecond line\n"),
        ("README.md", "# Title\n\n*marker-MD*\n", TEXT_MARKDOWN, "# Title\n\n*marker-MD*\n"),
        ("main.py", "def f():\n\treturn 'marker-PY'\n", TEXT_PLAIN, "def f():\n\treturn 'marker-PY'\n"),
        ("data.csv", "a,b\n1,marker-CSV\n", TEXT_CSV, "a,b\n1,marker-CSV\n"),
        ("noext", "just words, marker-NOEXT", TEXT_PLAIN, "just words, marker-NOEXT"),
        ("bom.txt", "\ufeffwith a BOM marker-BOM", TEXT_PLAIN, "with a BOM marker-BOM"),
        ("empty.txt", "", TEXT_PLAIN, ""),
    ],
)
def test_text_types(tmp_path: Path, name: str, content: str, expected_type: str, expected_text: str) -> None:
    path = write(tmp_path / "stored", content)
    assert sniff_content_type(path, name=name) == expected_type
    result = extract_text(path, expected_type)
    assert result.error is None
    assert result.text == expected_text


def test_json_is_pretty_printed(tmp_path: Path) -> None:
    value = {"b": [1, 2, {"deep": "marker-JSON"}], "a": "Zürich"}
    path = write(tmp_path / "stored", json.dumps(value, separators=(",", ":")))
    assert sniff_content_type(path, name="data.json") == APPLICATION_JSON
    result = extract_text(path, APPLICATION_JSON)
    assert result.text is not None
    assert json.loads(result.text) == value
    assert "Zürich" in result.text  # not \u-escaped
    assert result.text.count("\n") >= 5  # one value per line, unlike the minified input


def test_invalid_json_is_plain_text(tmp_path: Path) -> None:
    path = write(tmp_path / "stored", "{not json, marker-BADJSON")
    assert sniff_content_type(path, name="data.json") == TEXT_PLAIN
    assert extract_text(path, TEXT_PLAIN).text == "{not json, marker-BADJSON"


def test_html_text_without_markup_or_scripts(tmp_path: Path) -> None:
    html = (
        "<!DOCTYPE html><html><head><title>T</title><style>body{color:red}</style>"
        "<script>var secret = 'marker-SCRIPT';</script></head>"
        "<body><h1>Heading marker-HTML</h1><p>Para &amp; <b>bold</b></p></body></html>"
    )
    path = write(tmp_path / "stored", html)
    # Recognized by content even without an .html name.
    assert sniff_content_type(path, name="page") == TEXT_HTML
    assert sniff_content_type(path, name="page.htm") == TEXT_HTML
    result = extract_text(path, TEXT_HTML)
    assert result.text is not None
    assert "Heading marker-HTML" in result.text
    assert "Para &" in result.text
    assert "bold" in result.text
    assert "<h1>" not in result.text
    assert "marker-SCRIPT" not in result.text
    assert "color:red" not in result.text


@pytest.mark.parametrize(("fmt", "mime"), [("PNG", "image/png"), ("JPEG", "image/jpeg"), ("GIF", "image/gif")])
def test_images_are_allowed_and_have_no_text(tmp_path: Path, fmt: str, mime: str) -> None:
    path = tmp_path / "picture"
    Image.new("RGB", (8, 8), (200, 10, 10)).save(path, format=fmt)
    assert sniff_content_type(path, name="picture.txt") == mime
    result = extract_text(path, mime)
    assert result.text is None
    assert result.error is not None
    assert "image" in result.error


def test_executables_are_refused_whatever_their_name(tmp_path: Path) -> None:
    elf = write(tmp_path / "elf", Path(sys.executable).resolve().read_bytes()[:65536])
    with pytest.raises(UnsupportedMediaType):
        sniff_content_type(elf, name="notes.txt")


def test_random_bytes_named_text_are_refused(tmp_path: Path) -> None:
    # Bytes that are not UTF-8 (0xff never occurs in UTF-8) and match no known magic number.
    path = write(tmp_path / "noise", bytes(range(256)) * 64)
    with pytest.raises(UnsupportedMediaType):
        sniff_content_type(path, name="notes.txt")


@pytest.mark.parametrize(
    "data",
    [
        b"looks like text\x00but holds NUL",
        b"text with a bell \x07 and backspace \x08 controls",
        "valid utf-8 but cut in the middle: \u00e9".encode()[:-1],
        "latin-1 caf\xe9".encode("latin-1"),
    ],
)
def test_binary_or_non_utf8_text_is_refused(tmp_path: Path, data: bytes) -> None:
    path = write(tmp_path / "stored", data)
    with pytest.raises(UnsupportedMediaType):
        sniff_content_type(path, name="notes.txt")


def test_utf8_split_across_read_chunks_is_text(tmp_path: Path) -> None:
    # 1 MiB reads: put a multi-byte character across the boundary.
    data = b"a" * (1024 * 1024 - 1) + "é marker".encode()
    path = write(tmp_path / "stored", data)
    assert sniff_content_type(path, name="big.txt") == TEXT_PLAIN


def test_allowed_types_are_listed() -> None:
    assert "PDF" in ALLOWED_TYPES
    assert "DOCX" in ALLOWED_TYPES
    assert "Markdown" in ALLOWED_TYPES
    assert {APPLICATION_PDF, APPLICATION_DOCX, TEXT_PLAIN, APPLICATION_JSON} <= ALLOWED_CONTENT_TYPES
