"""PPTX: one Document per slide with text, `slide` numbered from 1 (empty slides are skipped
but keep their numbers). Text: the title, then text frames and tables in reading order
(top to bottom, left to right, into groups), then the speaker notes as "Notes: ...".
The slide title is also the section's `heading_path`, so a chunk split off a long slide
still says which slide it is about.
"""

from __future__ import annotations

import io
from collections.abc import Iterable, Iterator

import pptx
from llama_index.core.schema import Document
from pptx.shapes.autoshape import Shape
from pptx.shapes.base import BaseShape
from pptx.shapes.graphfrm import GraphicFrame
from pptx.shapes.group import GroupShape
from pptx.slide import Slide

from indexes.readers.common import (
    MAX_HEADING_CHARS,
    clean_text,
    make_document,
    markdown_table,
    one_line,
)


def _reading_order(shapes: Iterable[BaseShape]) -> list[BaseShape]:
    return sorted(shapes, key=lambda shape: (shape.top or 0, shape.left or 0))


def _shape_texts(shapes: Iterable[BaseShape], skip_id: int | None) -> Iterator[str]:
    for shape in _reading_order(shapes):
        if shape.shape_id == skip_id:
            continue
        if isinstance(shape, GroupShape):
            yield from _shape_texts(shape.shapes, skip_id)
        elif isinstance(shape, Shape) and shape.has_text_frame:
            yield clean_text(shape.text_frame.text)
        elif isinstance(shape, GraphicFrame) and shape.has_table:
            yield markdown_table([[cell.text for cell in row.cells] for row in shape.table.rows])


def _slide_text(slide: Slide) -> tuple[str, str]:
    """(title, full text) of one slide."""
    title_shape = slide.shapes.title
    title = clean_text(title_shape.text_frame.text) if title_shape is not None else ""
    parts = [title] if title else []
    skip_id = title_shape.shape_id if title_shape is not None else None
    parts += [text for text in _shape_texts(slide.shapes, skip_id) if text]
    if slide.has_notes_slide:
        frame = slide.notes_slide.notes_text_frame
        notes = clean_text(frame.text) if frame is not None else ""
        if notes:
            parts.append(f"Notes: {notes}")
    return title, "\n\n".join(parts)


def read_pptx(data: bytes, file_name: str) -> list[Document]:
    presentation = pptx.Presentation(io.BytesIO(data))
    documents = []
    for number, slide in enumerate(presentation.slides, start=1):
        title, text = _slide_text(slide)
        if text:
            heading = one_line(title)[:MAX_HEADING_CHARS] or None
            documents.append(make_document(text, file_name, slide=number, heading_path=heading))
    return documents
