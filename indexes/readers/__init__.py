"""Uploaded bytes + file name -> LlamaIndex Documents with metadata.

    documents = read_document(data, "员工手册.docx")

Synchronous and CPU-bound: call it in a worker thread. Every Document's metadata has
`file_name` and, where it applies, `page` (PDF, from 1), `slide` (PPTX, from 1), `sheet`
(XLSX), `row_start`/`row_end` (XLSX, CSV) and `heading_path` ("第一章 总则 > 第二条": DOCX,
Markdown, HTML, and the slide title for PPTX). Positions are excluded from the text the
embedding model and the LLM see; `file_name`, `sheet` and `heading_path` are kept there.

Errors are `indexes.errors` classes with messages fit for the user: UnsupportedFileType (type
not accepted, or content not matching the extension), DocumentUnreadable (corrupt, encrypted,
too large unpacked, or any parser failure), NoTextFound (empty, or a scanned PDF).

The format readers are imported on first use, so importing this package stays cheap.
"""

from __future__ import annotations

import importlib
import logging
from typing import TYPE_CHECKING

from indexes.errors import DocumentUnreadable, IndexesError, NoTextFound
from indexes.filetypes import HEAD_BYTES, FileType, detect_file_type, safe_file_name

if TYPE_CHECKING:
    from llama_index.core.schema import Document

__all__ = ["DEFAULT_MAX_UNPACKED_BYTES", "read_document"]

logger = logging.getLogger(__name__)

DEFAULT_MAX_UNPACKED_BYTES = 512 * 1024 * 1024

# family -> (module, function); modules are imported lazily.
_READERS = {
    "pdf": ("pdf", "read_pdf"),
    "word": ("word", "read_docx"),
    "spreadsheet": ("sheets", "read_xlsx"),
    "presentation": ("slides", "read_pptx"),
    "html": ("webpage", "read_html"),
    "markdown": ("markup", "read_markdown"),
    "text": ("plaintext", "read_txt"),
    "csv": ("plaintext", "read_csv"),
    "json": ("plaintext", "read_json"),
}


def _short_reason(exc: BaseException) -> str:
    text = " ".join(str(exc).split()).rstrip(".")
    if len(text) > 160:
        text = text[:157] + "..."
    return text or type(exc).__name__


def _parse(data: bytes, name: str, file_type: FileType, max_unpacked_bytes: int) -> list[Document]:
    if file_type.family in ("word", "spreadsheet", "presentation"):
        from indexes.readers.ooxml import check_ooxml

        check_ooxml(data, name, file_type, max_unpacked_bytes)
    module_name, function_name = _READERS[file_type.family]
    module = importlib.import_module(f"indexes.readers.{module_name}")
    documents: list[Document] = getattr(module, function_name)(data, name)
    return documents


def read_document(
    data: bytes, file_name: str, *, max_unpacked_bytes: int = DEFAULT_MAX_UNPACKED_BYTES
) -> list[Document]:
    """Parse one uploaded file into Documents (see the module docstring for the metadata)."""
    name = safe_file_name(file_name)
    if not data:
        raise NoTextFound(f"{name} is empty.")
    if len(data) <= HEAD_BYTES and not data.strip():
        raise NoTextFound(f"{name} contains no text.")
    file_type = detect_file_type(data[:HEAD_BYTES], name)
    try:
        documents = _parse(data, name, file_type, max_unpacked_bytes)
    except (IndexesError, ImportError):
        raise  # ImportError: a broken installation, not a bad file
    except Exception as exc:
        # Parser libraries raise anything (KeyError, lxml errors, zlib errors...) on damaged
        # files. The user gets one readable sentence; the log keeps the traceback.
        logger.info("%s could not be parsed", name, exc_info=True)
        raise DocumentUnreadable(f"{name} could not be read: {_short_reason(exc)}.") from None
    documents = [doc for doc in documents if doc.text.strip()]
    if not documents:
        raise NoTextFound(f"{name} contains no text.")
    return documents
