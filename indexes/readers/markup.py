"""Markdown: one Document per heading block with `heading_path`; fenced code blocks are kept
intact (a "# comment" inside one is not a heading), and YAML front matter stays with the
text before the first heading."""

from __future__ import annotations

import re

from llama_index.core.schema import Document

from indexes.readers.common import SectionBuilder, clean_text, make_document
from indexes.readers.encoding import decode_text

_ATX = re.compile(r"^ {0,3}(#{1,6})(?:[ \t]+(.*?))?(?:[ \t]+#+)?[ \t]*$")
_SETEXT = re.compile(r"^ {0,3}(=+|-{2,})[ \t]*$")
_FENCE = re.compile(r"^ {0,3}(`{3,}|~{3,})")
_LIST_OR_QUOTE = re.compile(r"^ {0,3}(?:[-*+][ \t]|\d{1,9}[.)][ \t]|>)")
_FRONT_MATTER = re.compile(r"\A---[ \t]*\n.*?\n(?:---|\.\.\.)[ \t]*(?:\n|\Z)", re.DOTALL)


def _is_paragraph_line(line: str) -> bool:
    """Whether a setext underline below this line would make it a heading."""
    stripped = line.strip()
    return (
        bool(stripped)
        and not line.startswith(("    ", "\t"))
        and not _ATX.match(line)
        and not _LIST_OR_QUOTE.match(line)
    )


def split_markdown(text: str) -> SectionBuilder:
    sections = SectionBuilder()
    front = _FRONT_MATTER.match(text)
    if front:
        sections.add(front.group(0).strip())
        text = text[front.end() :]
    paragraph: list[str] = []
    fence: str | None = None

    def flush() -> None:
        block = "\n".join(paragraph).strip("\n")
        if block.strip():
            sections.add(block)
        paragraph.clear()

    for line in text.split("\n"):
        if fence is not None:
            paragraph.append(line)
            stripped = line.strip()
            if stripped.startswith(fence) and set(stripped) == {fence[0]}:
                fence = None
            continue
        opening = _FENCE.match(line)
        if opening:
            fence = opening.group(1)
            paragraph.append(line)
            continue
        atx = _ATX.match(line)
        if atx:
            flush()
            level, title = len(atx.group(1)), (atx.group(2) or "").strip()
            sections.heading(level, title, line=f"{atx.group(1)} {title}")
            continue
        setext = _SETEXT.match(line)
        if setext and paragraph and _is_paragraph_line(paragraph[-1]):
            title = paragraph.pop()
            flush()
            level = 1 if setext.group(1).startswith("=") else 2
            sections.heading(level, title, line=f"{'#' * level} {title.strip()}")
            continue
        if not line.strip():
            flush()
            continue
        paragraph.append(line)
    flush()
    return sections


def read_markdown(data: bytes, file_name: str) -> list[Document]:
    text = clean_text(decode_text(data, file_name))
    return [
        make_document(section.text, file_name, heading_path=section.heading_path)
        for section in split_markdown(text).finish()
    ]
