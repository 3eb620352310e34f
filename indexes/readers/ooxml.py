"""Checks on DOCX/XLSX/PPTX containers before a parser unpacks them.

These formats are ZIP archives, so a small upload can expand to gigabytes (a zip bomb). The
central directory declares every member's uncompressed size; Python's zipfile, which
python-docx, openpyxl and python-pptx all read through, never inflates a member past its
declared size (it stops and fails the CRC check), so bounding the declared total bounds the
memory the parsers can be made to use.
"""

from __future__ import annotations

import io
import zipfile

from indexes.errors import DocumentUnreadable, UnsupportedFileType
from indexes.filetypes import FileType

# The folder that holds each format's main part, after [Content_Types].xml.
_MAIN_FOLDER = {"word": "word/", "spreadsheet": "xl/", "presentation": "ppt/"}
_WHAT = {"word/": "a Word document", "xl/": "an Excel workbook", "ppt/": "a PowerPoint file"}
# Office XML compresses about 5-30:1 as a whole; deflate cannot exceed ~1030:1. A whole archive
# past this ratio, once it unpacks to more than _RATIO_FLOOR bytes, is a bomb, not a document.
MAX_COMPRESSION_RATIO = 100
_RATIO_FLOOR = 10 * 1024 * 1024
MAX_MEMBERS = 50_000


def _mb(size: int) -> str:
    return f"{size / (1024 * 1024):.1f} MB"


def check_ooxml(data: bytes, file_name: str, file_type: FileType, max_unpacked_bytes: int) -> None:
    """Raise unless `data` is a ZIP holding this Office format, of a safe unpacked size."""
    try:
        with zipfile.ZipFile(io.BytesIO(data)) as archive:
            members = archive.infolist()
    except (zipfile.BadZipFile, zipfile.LargeZipFile, OSError, ValueError) as exc:
        raise DocumentUnreadable(
            f"{file_name} could not be read: it is not {file_type.label} or it is damaged "
            f"(the ZIP container cannot be opened: {exc})."
        ) from None
    names = {member.filename for member in members}
    folder = _MAIN_FOLDER[file_type.family]
    if "[Content_Types].xml" not in names or not any(n.startswith(folder) for n in names):
        actual = next(
            (what for prefix, what in _WHAT.items() if any(n.startswith(prefix) for n in names)),
            "a ZIP archive",
        )
        raise UnsupportedFileType(
            f"{file_name} is not {file_type.label}: its content looks like {actual}."
        )
    if len(members) > MAX_MEMBERS:
        raise DocumentUnreadable(
            f"{file_name} could not be read: it holds {len(members)} parts, more than the "
            f"limit of {MAX_MEMBERS}."
        )
    # zipfile bounds deflate output by the declared size as it inflates; bzip2/LZMA members
    # inflate whole chunks first. Office never writes them, so refuse rather than trust them.
    odd = [m for m in members if m.compress_type not in (zipfile.ZIP_STORED, zipfile.ZIP_DEFLATED)]
    if odd:
        raise DocumentUnreadable(
            f"{file_name} could not be read: it uses a compression method Office files do not "
            f"use ({odd[0].filename})."
        )
    unpacked = sum(member.file_size for member in members)
    if unpacked > max_unpacked_bytes:
        raise DocumentUnreadable(
            f"{file_name} could not be read: its decompressed size ({_mb(unpacked)}) exceeds the "
            f"limit of {_mb(max_unpacked_bytes)}."
        )
    packed = sum(member.compress_size for member in members)
    if unpacked > _RATIO_FLOOR and unpacked > MAX_COMPRESSION_RATIO * max(packed, 1):
        raise DocumentUnreadable(
            f"{file_name} could not be read: it decompresses {unpacked // max(packed, 1)} times "
            f"over ({_mb(packed)} to {_mb(unpacked)}), which only a zip bomb does."
        )
