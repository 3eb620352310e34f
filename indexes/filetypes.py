"""Which uploads we accept, decided from the file name AND the first bytes of the content.

The extension alone is not trusted: a renamed executable or archive must be refused before it
reaches a parser, with a message that says what the content really looks like. Only the head of
the file is needed here (a few KB), so the check can run before the upload is stored; the
full-content checks (ZIP central directory, OOXML parts) happen in `indexes.readers`.
"""

from __future__ import annotations

import re
import unicodedata
from dataclasses import dataclass
from typing import Literal

from indexes.errors import UnsupportedFileType

Family = Literal[
    "pdf", "word", "spreadsheet", "presentation", "html", "markdown", "text", "csv", "json"
]

# How many leading bytes callers should pass to detect_file_type.
HEAD_BYTES = 8192
MAX_FILE_NAME_CHARS = 200


@dataclass(frozen=True)
class FileType:
    extension: str  # canonical, without the dot: "htm" is reported as "html", "markdown" as "md"
    mime_type: str
    family: Family
    label: str  # for messages: "a PDF", "a Word document (.docx)"


_TYPES: dict[str, FileType] = {
    t.extension: t
    for t in (
        FileType("pdf", "application/pdf", "pdf", "a PDF"),
        FileType(
            "docx",
            "application/vnd.openxmlformats-officedocument.wordprocessingml.document",
            "word",
            "a Word document (.docx)",
        ),
        FileType(
            "xlsx",
            "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet",
            "spreadsheet",
            "an Excel workbook (.xlsx)",
        ),
        FileType(
            "pptx",
            "application/vnd.openxmlformats-officedocument.presentationml.presentation",
            "presentation",
            "a PowerPoint presentation (.pptx)",
        ),
        FileType("html", "text/html", "html", "an HTML page"),
        FileType("md", "text/markdown", "markdown", "a Markdown file"),
        FileType("txt", "text/plain", "text", "a text file"),
        FileType("csv", "text/csv", "csv", "a CSV file"),
        FileType("json", "application/json", "json", "a JSON file"),
    )
}
_ALIASES = {"htm": "html", "markdown": "md"}
ACCEPTED_EXTENSIONS: tuple[str, ...] = (*_TYPES, *_ALIASES)

_TEXT_BOMS = (b"\xef\xbb\xbf", b"\xff\xfe", b"\xfe\xff")  # UTF-32 BOMs start with these too
_ZIP_MAGIC = b"PK\x03\x04"
_OLE_MAGIC = b"\xd0\xcf\x11\xe0\xa1\xb1\x1a\xe1"
# Signatures of binary content that people rename by mistake (or on purpose); checked first so
# the message can name what the file really is.
_BINARY_SIGNATURES: tuple[tuple[bytes, str], ...] = (
    (b"\x7fELF", "an executable program (ELF)"),
    (b"\xcf\xfa\xed\xfe", "an executable program (Mach-O)"),
    (b"\xfe\xed\xfa\xcf", "an executable program (Mach-O)"),
    (b"\x89PNG\r\n\x1a\n", "a PNG image"),
    (b"\xff\xd8\xff", "a JPEG image"),
    (b"GIF87a", "a GIF image"),
    (b"GIF89a", "a GIF image"),
    (b"\x1f\x8b", "a gzip archive"),
    (b"Rar!\x1a\x07", "a RAR archive"),
    (b"7z\xbc\xaf\x27\x1c", "a 7-Zip archive"),
    (_OLE_MAGIC, "an encrypted or legacy (97-2003) Office file"),
    (_ZIP_MAGIC, "a ZIP archive"),
    (b"%PDF-", "a PDF"),
)


def accepted_types_text() -> str:
    return ", ".join(f".{ext}" for ext in ACCEPTED_EXTENSIONS)


def _extension(file_name: str) -> str:
    base = re.split(r"[\\/]", file_name)[-1]
    return base.rsplit(".", 1)[-1].lower().strip() if "." in base else ""


def _looks_like(head: bytes) -> str | None:
    """What binary content this head belongs to, or None if nothing recognisable."""
    # MZ alone could start a text file; a real PE header has NUL bytes right after it.
    if head.startswith(b"MZ") and b"\0" in head[:64]:
        return "an executable program (Windows .exe/.dll)"
    for signature, what in _BINARY_SIGNATURES:
        if head.startswith(signature):
            return what
    return None


def _looks_binary(head: bytes) -> bool:
    if head.startswith(_TEXT_BOMS):
        return False  # UTF-16/32 text legitimately contains NUL bytes
    if b"\0" in head:
        return True
    # Many C0 control characters (other than tab, newlines, form feed, escape) mean binary.
    controls = sum(1 for byte in head if byte < 0x20 and byte not in b"\t\n\r\f\x1b\x08")
    return controls > max(8, len(head) // 20)


def detect_file_type(head: bytes, file_name: str) -> FileType:
    """The type of an upload from its name and first bytes (pass at least HEAD_BYTES if the
    file is that long). Raises UnsupportedFileType with a message for the user."""
    extension = _extension(file_name)
    extension = _ALIASES.get(extension, extension)
    file_type = _TYPES.get(extension)
    if file_type is None:
        shown = f"'.{extension}' files are" if extension else "Files without an extension are"
        raise UnsupportedFileType(
            f"{shown} not supported; accepted types: {accepted_types_text()}."
        )
    actual = _looks_like(head)
    if file_type.family == "pdf":
        # The spec allows junk before the header (within 1 KB) and real files do have it.
        if b"%PDF-" not in head[:1024]:
            raise UnsupportedFileType(
                f"{file_name} is not a PDF: its content looks like {actual or 'something else'}."
            )
    elif file_type.family in ("word", "spreadsheet", "presentation"):
        if not head.startswith(_ZIP_MAGIC):
            if head.startswith(_OLE_MAGIC):
                raise UnsupportedFileType(
                    f"{file_name} is not {file_type.label}: it is password-protected or in the "
                    "old 97-2003 format. Remove the password or save it again as "
                    f".{file_type.extension}."
                )
            raise UnsupportedFileType(
                f"{file_name} is not {file_type.label}: "
                f"its content looks like {actual or 'something else (not a ZIP container)'}."
            )
    elif actual is not None or _looks_binary(head):
        raise UnsupportedFileType(
            f"{file_name} is not {file_type.label}: "
            f"its content looks like {actual or 'binary data'}, not text."
        )
    return file_type


_UNSAFE_CHARS = re.compile(r'[<>:"|?*]')


def safe_file_name(name: str) -> str:
    """A file name safe to store and show: no directories (/ or \\), no "..", no control
    characters, no leading dots; Unicode (Chinese) kept; at most MAX_FILE_NAME_CHARS characters
    with the extension kept; never empty ("file")."""
    name = unicodedata.normalize("NFC", name)
    # Control (Cc) and format (Cf) characters: Cf holds the right-to-left override used to
    # disguise "gpj.exe" as "exe.jpg".
    name = "".join(ch for ch in name if unicodedata.category(ch) not in ("Cc", "Cf"))
    name = re.split(r"[\\/]", name)[-1]
    name = _UNSAFE_CHARS.sub("_", name).strip()
    stripped = name.lstrip(". ")
    if stripped != name and "." not in stripped and stripped:
        stripped = f"file.{stripped}"  # ".pdf" was an extension with no stem
    # Windows drops trailing dots and spaces, which would make two stored names collide.
    name = stripped.rstrip(". ")
    if not name:
        return "file"
    if len(name) > MAX_FILE_NAME_CHARS:
        stem, dot, ext = name.rpartition(".")
        if dot and 0 < len(ext) <= 16:
            name = stem[: MAX_FILE_NAME_CHARS - len(ext) - 1].rstrip(". ") + "." + ext
        else:
            name = name[:MAX_FILE_NAME_CHARS]
    return name
