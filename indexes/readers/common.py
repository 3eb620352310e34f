"""Pieces shared by the readers: Document construction with the metadata policy, text
clean-up, heading sections, Markdown tables and "header: value" rows."""

from __future__ import annotations

import datetime
import re
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass

from llama_index.core.schema import Document

# Positions help the app cite a page or slide, but in the text an LLM or an embedding model
# sees they are noise (and they eat a small embedding model's 256-token window). The ids are
# added by the ingestion pipeline; they are listed here so that they are hidden too.
POSITION_KEYS: tuple[str, ...] = ("page", "slide", "row_start", "row_end")
HIDDEN_KEYS: tuple[str, ...] = (*POSITION_KEYS, "position", "document_id", "knowledge_id")

# Metadata is prepended to every chunk: keep it short.
MAX_HEADING_CHARS = 100
MAX_HEADING_PATH_CHARS = 300
HEADING_SEPARATOR = " > "

MetadataValue = str | int


def make_document(text: str, file_name: str, **metadata: MetadataValue | None) -> Document:
    """A Document with `file_name` and the given metadata (None values left out)."""
    values: dict[str, MetadataValue] = {"file_name": file_name}
    values.update({key: value for key, value in metadata.items() if value is not None})
    return Document(
        text=text,
        metadata=values,
        excluded_embed_metadata_keys=list(HIDDEN_KEYS),
        excluded_llm_metadata_keys=list(HIDDEN_KEYS),
    )


_CONTROL = re.compile(r"[\x00-\x08\x0b\x0e-\x1f\x7f\ud800-\udfff]")
_TRAILING_SPACE = re.compile(r"[ \t\u3000]+\n")
_MANY_NEWLINES = re.compile(r"\n{3,}")


def clean_text(text: str) -> str:
    """Normalised newlines, no control characters or lone surrogates (embedding APIs reject
    them), no trailing spaces, at most one blank line in a row."""
    text = text.replace("\r\n", "\n").replace("\r", "\n").replace("\f", "\n")
    text = _CONTROL.sub("", text).replace("\u00a0", " ")
    text = _TRAILING_SPACE.sub("\n", text)
    return _MANY_NEWLINES.sub("\n\n", text).strip()


def one_line(text: str) -> str:
    return " ".join(text.split())


@dataclass(frozen=True)
class Section:
    heading_path: str | None
    text: str


class SectionBuilder:
    """Collects text blocks under the current heading path.

    A section is emitted per heading block (a heading and the text up to the next heading);
    a heading with no text of its own before a sub-heading only appears in its children's
    paths. The heading line is repeated at the top of the section text so keyword search and
    a chunk read on its own both see it.
    """

    def __init__(self) -> None:
        self._stack: list[tuple[int, str]] = []
        self._heading_line: str | None = None
        self._blocks: list[str] = []
        self.sections: list[Section] = []

    def heading(self, level: int, text: str, line: str | None = None) -> None:
        title = one_line(text)[:MAX_HEADING_CHARS]
        if not title:
            return
        self._flush()
        while self._stack and self._stack[-1][0] >= level:
            self._stack.pop()
        self._stack.append((level, title))
        self._heading_line = line if line is not None else title

    def add(self, block: str) -> None:
        if block.strip():
            self._blocks.append(block)

    def finish(self) -> list[Section]:
        self._flush()
        return self.sections

    def _flush(self) -> None:
        if self._blocks:
            parts = [self._heading_line] if self._heading_line else []
            text = "\n\n".join([*parts, *self._blocks])
            path = HEADING_SEPARATOR.join(title for _, title in self._stack)
            self.sections.append(Section(path[:MAX_HEADING_PATH_CHARS] or None, text))
        self._blocks = []
        self._heading_line = None


def _cell(value: str) -> str:
    return one_line(value).replace("|", "\\|")


def markdown_table(rows: Sequence[Sequence[str]]) -> str:
    """A Markdown table; the first row is the header. Ragged rows are padded."""
    rows = [row for row in rows if any(cell.strip() for cell in row)]
    if not rows:
        return ""
    width = max(len(row) for row in rows)
    padded = [[_cell(c) for c in row] + [""] * (width - len(row)) for row in rows]
    lines = ["| " + " | ".join(padded[0]) + " |", "|" + " --- |" * width]
    lines += ["| " + " | ".join(row) + " |" for row in padded[1:]]
    return "\n".join(lines)


def format_value(value: object) -> str:
    """A spreadsheet/CSV cell as text, the way a person would write it."""
    if value is None:
        return ""
    if isinstance(value, bool):
        return "TRUE" if value else "FALSE"
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    if isinstance(value, datetime.datetime):
        return value.date().isoformat() if value.time() == datetime.time() else value.isoformat(" ")
    if isinstance(value, datetime.date | datetime.time):
        return value.isoformat()
    return one_line(str(value))


def column_letter(index: int) -> str:
    """0 -> A, 25 -> Z, 26 -> AA: labels columns whose header cell is empty."""
    letters = ""
    index += 1
    while index:
        index, rest = divmod(index - 1, 26)
        letters = chr(ord("A") + rest) + letters
    return letters


@dataclass(frozen=True)
class RowBlock:
    row_start: int
    row_end: int
    text: str


def row_blocks(rows: Iterable[Sequence[object]], rows_per_block: int) -> Iterator[RowBlock]:
    """Rows (numbered from 1) as "header: value; header: value" lines in blocks.

    The first non-empty row gives the headers, so every line stands on its own after the text
    is chunked. A table with only a header row yields that row as plain values.
    """
    headers: list[str] | None = None
    header_row = 0
    lines: list[str] = []
    start = end = 0
    for number, row in enumerate(rows, start=1):
        values = [format_value(v) for v in row]
        if not any(values):
            continue
        if headers is None:
            headers, header_row = values, number
            continue
        pairs = [
            f"{headers[i] if i < len(headers) and headers[i] else column_letter(i)}: {value}"
            for i, value in enumerate(values)
            if value
        ]
        if not lines:
            start = number
        lines.append("; ".join(pairs))
        end = number
        if len(lines) >= rows_per_block:
            yield RowBlock(start, end, "\n".join(lines))
            lines = []
    if lines:
        yield RowBlock(start, end, "\n".join(lines))
    elif headers is not None and end == 0:
        yield RowBlock(header_row, header_row, "; ".join(v for v in headers if v))
