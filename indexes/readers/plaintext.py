"""TXT, CSV and JSON: decoded by indexes.readers.encoding, one Document per file (CSV: per
block of rows, like a spreadsheet)."""

from __future__ import annotations

import csv
import io
import json

from llama_index.core.schema import Document

from indexes.errors import DocumentUnreadable
from indexes.readers.common import clean_text, make_document, row_blocks
from indexes.readers.encoding import decode_text
from indexes.readers.sheets import ROWS_PER_DOCUMENT

# csv's default field limit (128 KiB) rejects legitimate long text cells; this still bounds
# what one malformed quote can swallow.
csv.field_size_limit(16 * 1024 * 1024)


def read_txt(data: bytes, file_name: str) -> list[Document]:
    return [make_document(clean_text(decode_text(data, file_name)), file_name)]


def _dialect(sample: str) -> type[csv.Dialect] | csv.Dialect:
    try:
        return csv.Sniffer().sniff(sample, delimiters=",;\t|")
    except csv.Error:
        return csv.excel  # the sniffer gives up on one-column files: plain commas then


def read_csv(data: bytes, file_name: str) -> list[Document]:
    text = decode_text(data, file_name).replace("\r\n", "\n").replace("\r", "\n")
    rows = csv.reader(io.StringIO(text, newline=""), _dialect(text[: 64 * 1024]))
    try:
        return [
            make_document(block.text, file_name, row_start=block.row_start, row_end=block.row_end)
            for block in row_blocks(rows, ROWS_PER_DOCUMENT)
        ]
    except csv.Error as exc:
        raise DocumentUnreadable(f"{file_name} is not a valid CSV file: {exc}.") from None


def read_json(data: bytes, file_name: str) -> list[Document]:
    text = decode_text(data, file_name)
    try:
        value = json.loads(text)
    except json.JSONDecodeError as exc:
        value = _json_lines(text)
        if value is None:
            raise DocumentUnreadable(
                f"{file_name} is not valid JSON: {exc.msg} at line {exc.lineno}, "
                f"column {exc.colno}."
            ) from None
    # A bare JSON string is shown as its text, anything else pretty-printed with Chinese as is.
    text = value if isinstance(value, str) else json.dumps(value, ensure_ascii=False, indent=2)
    return [make_document(clean_text(text), file_name)]


def _json_lines(text: str) -> list[object] | None:
    """JSON Lines saved as .json: one value per non-empty line, or None if it is not that."""
    lines = [line for line in text.splitlines() if line.strip()]
    if len(lines) < 2:
        return None
    try:
        return [json.loads(line) for line in lines]
    except json.JSONDecodeError:
        return None
