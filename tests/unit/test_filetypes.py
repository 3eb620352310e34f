"""Upload type detection (content AND extension) and file-name sanitising."""

from __future__ import annotations

import pytest

from indexes.errors import UnsupportedFileType
from indexes.filetypes import (
    HEAD_BYTES,
    MAX_FILE_NAME_CHARS,
    detect_file_type,
    safe_file_name,
)
from tests import fixtures_docs as docs


@pytest.mark.parametrize(
    ("name", "data", "extension", "family", "mime"),
    [
        ("报告.pdf", docs.text_pdf(), "pdf", "pdf", "application/pdf"),
        ("REPORT.PDF", docs.text_pdf(), "pdf", "pdf", "application/pdf"),
        ("手册.docx", docs.docx_bytes(), "docx", "word", "wordprocessingml"),
        ("表格.xlsx", docs.xlsx_bytes(), "xlsx", "spreadsheet", "spreadsheetml"),
        ("演示.pptx", docs.pptx_bytes(), "pptx", "presentation", "presentationml"),
        ("页面.html", docs.html_bytes(), "html", "html", "text/html"),
        ("页面.htm", docs.html_bytes("gbk"), "html", "html", "text/html"),
        ("说明.md", docs.markdown_bytes(), "md", "markdown", "text/markdown"),
        ("说明.markdown", docs.markdown_bytes(), "md", "markdown", "text/markdown"),
        ("gbk.txt", docs.text_bytes("gbk"), "txt", "text", "text/plain"),
        ("utf16.txt", docs.text_bytes("utf-16"), "txt", "text", "text/plain"),
        ("数据.csv", docs.csv_bytes("gbk"), "csv", "csv", "text/csv"),
        ("数据.json", docs.json_bytes(), "json", "json", "application/json"),
    ],
)
def test_accepted_types(name: str, data: bytes, extension: str, family: str, mime: str) -> None:
    file_type = detect_file_type(data[:HEAD_BYTES], name)
    assert file_type.extension == extension
    assert file_type.family == family
    assert mime in file_type.mime_type


def test_file_type_is_a_frozen_value() -> None:
    file_type = detect_file_type(b"%PDF-1.7\n", "a.pdf")
    with pytest.raises(AttributeError):
        file_type.extension = "txt"  # type: ignore[misc]
    assert file_type == detect_file_type(b"%PDF-1.4\n", "b.pdf")


@pytest.mark.parametrize("name", ["setup.exe", "archive.zip", "photo.jpeg", "old.doc", "README"])
def test_unknown_extension_lists_the_accepted_types(name: str) -> None:
    with pytest.raises(UnsupportedFileType) as info:
        detect_file_type(b"hello", name)
    message = str(info.value)
    assert "not supported" in message
    for extension in (".pdf", ".docx", ".xlsx", ".pptx", ".html", ".md", ".txt", ".csv", ".json"):
        assert extension in message


def test_windows_executable_renamed_to_pdf() -> None:
    with pytest.raises(UnsupportedFileType) as info:
        detect_file_type(docs.windows_executable(), "invoice.pdf")
    message = str(info.value)
    assert "invoice.pdf is not a PDF" in message
    assert "executable" in message


@pytest.mark.parametrize("name", ["notes.txt", "data.csv", "page.html", "readme.md", "x.json"])
def test_executables_renamed_to_text_types(name: str) -> None:
    for data in (docs.elf_executable(), docs.windows_executable()):
        with pytest.raises(UnsupportedFileType, match="executable"):
            detect_file_type(data, name)


@pytest.mark.parametrize(
    ("data", "what"),
    [
        (b"\x89PNG\r\n\x1a\n" + b"\0" * 20, "PNG image"),
        (docs.plain_zip(), "ZIP archive"),
        (docs.text_pdf(), "a PDF"),
        (b"plain text\0with a NUL byte", "binary data"),
    ],
)
def test_binary_content_named_as_text(data: bytes, what: str) -> None:
    with pytest.raises(UnsupportedFileType) as info:
        detect_file_type(data, "notes.txt")
    assert what in str(info.value)


def test_pdf_must_start_with_the_pdf_header() -> None:
    with pytest.raises(UnsupportedFileType, match="is not a PDF: its content looks like a ZIP"):
        detect_file_type(docs.plain_zip(), "a.pdf")
    with pytest.raises(UnsupportedFileType, match="is not a PDF"):
        detect_file_type(b"just some text", "a.pdf")
    # Junk before the header (allowed by the spec, seen in real files) is accepted.
    assert detect_file_type(b"\r\n  %PDF-1.5\n", "a.pdf").extension == "pdf"


def test_office_types_must_be_zip_containers() -> None:
    with pytest.raises(UnsupportedFileType, match=r"is not a Word document \(.docx\)"):
        detect_file_type(b"This is plain text, not a document.", "a.docx")
    with pytest.raises(UnsupportedFileType, match=r"is not an Excel workbook.*PNG image"):
        detect_file_type(b"\x89PNG\r\n\x1a\n" + b"\0" * 20, "a.xlsx")
    with pytest.raises(UnsupportedFileType, match="executable"):
        detect_file_type(docs.windows_executable(), "a.pptx")


def test_legacy_or_encrypted_office_files_get_a_hint() -> None:
    ole = b"\xd0\xcf\x11\xe0\xa1\xb1\x1a\xe1" + b"\0" * 100
    with pytest.raises(UnsupportedFileType) as info:
        detect_file_type(ole, "合同.docx")
    assert "password-protected or in the old 97-2003 format" in str(info.value)
    assert ".docx" in str(info.value)


def test_text_encodings_are_not_mistaken_for_binary() -> None:
    for encoding in ("utf-8", "utf-8-sig", "gbk", "gb18030", "utf-16", "utf-16-le", "utf-32"):
        data = docs.text_bytes(encoding)
        if encoding == "utf-16-le":
            data = b"\xff\xfe" + data  # BOM-less UTF-16 is not supported; with a BOM it is
        assert detect_file_type(data, "a.txt").family == "text"


@pytest.mark.parametrize(
    ("raw", "safe"),
    [
        ("../../etc/passwd.txt", "passwd.txt"),
        ("..\\..\\evil.md", "evil.md"),
        ("C:\\Users\\张三\\Desktop\\季度报告.pdf", "季度报告.pdf"),
        ("/abs/path/报告 2024.docx", "报告 2024.docx"),
        ("..", "file"),
        ("../..", "file"),
        ("", "file"),
        ("   ", "file"),
        ("\x00\x01\x1f", "file"),
        (".hidden.txt", "hidden.txt"),
        ("...txt", "file.txt"),
        (".pdf", "file.pdf"),
        ("trailing dots...", "trailing dots"),
        ("tab\tnew\nline\r.txt", "tabnewline.txt"),
        ("invoice\u202egpj.exe", "invoicegpj.exe"),  # right-to-left override stripped
        ('a<b>c:d"e|f?g*.txt', "a_b_c_d_e_f_g_.txt"),
        ("第一章 总则.md", "第一章 总则.md"),
    ],
)
def test_safe_file_name(raw: str, safe: str) -> None:
    assert safe_file_name(raw) == safe
    assert safe_file_name(safe) == safe  # idempotent


def test_long_names_are_cut_keeping_the_extension() -> None:
    long_name = "很长的文件名" * 60 + ".pdf"
    safe = safe_file_name(long_name)
    assert len(safe) == MAX_FILE_NAME_CHARS
    assert safe.endswith(".pdf")
    assert safe.startswith("很长的文件名")
    no_extension = "x" * 500
    assert safe_file_name(no_extension) == "x" * MAX_FILE_NAME_CHARS
