"""HTML: the page's main text as heading blocks with `heading_path`.

Two extractors, measured on a saved CMS article (div-based menu, breadcrumb, share bar,
related posts, comments, sidebar, cookie banner, footer: 19 noise phrases, 10 content
phrases) and on the semantic fixture page of the tests:

- a BeautifulSoup walker with structural clean-up (scripts, styles, forms, nav, aside,
  page-level header/footer, hidden elements; <main> or a single <article> preferred): keeps
  all 10 content phrases on both pages, but 15 of the 19 noise phrases of the CMS page, which
  marks its noise only with class names; ~3 ms.
- trafilatura (markdown output, headings kept): all content and 0 of 19 noise phrases on the
  CMS page, ~2 ms; but below 250 characters of content it falls back to a flat one-line text
  (the fixture page lost all its headings and paragraphs), and being heuristic it can drop
  real content.

So trafilatura's markdown is used when it is structured and keeps the substantial lines of
the walker's text (>= 70 % of the characters of lines of 40+ characters, i.e. paragraphs
rather than menu entries); otherwise the walker's sections are used. trafilatura's Markdown
escapes in prose (`rag\\_app`) are taken out again (md_unescape.py).
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

import trafilatura
from bs4 import BeautifulSoup, NavigableString, Tag
from bs4.element import Comment, Declaration, Doctype, ProcessingInstruction
from llama_index.core.schema import Document

from indexes.readers.common import (
    Section,
    SectionBuilder,
    clean_text,
    make_document,
    markdown_table,
)
from indexes.readers.encoding import decode_text
from indexes.readers.markup import split_markdown
from indexes.readers.md_unescape import unescape_markdown

# <meta charset="gbk">, <meta http-equiv="Content-Type" content="text/html; charset=gbk">,
# or an XHTML declaration <?xml version="1.0" encoding="gbk"?>.
_META_CHARSET = re.compile(
    rb"""<meta[^>]+charset\s*=\s*["']?\s*([A-Za-z0-9_\-:.]+)"""
    rb"""|<\?xml[^>]+encoding\s*=\s*["']([A-Za-z0-9_\-.]+)""",
    re.IGNORECASE,
)
_DROP_TAGS = (
    "script", "style", "noscript", "template", "nav", "aside", "form", "iframe", "svg",
    "canvas", "button", "select", "textarea", "input", "object", "embed", "dialog", "link",
    "meta", "head",
)  # fmt: skip
_DROP_ROLES = {"navigation", "banner", "contentinfo", "complementary", "search", "menu", "menubar"}
_HIDDEN_STYLE = re.compile(r"display\s*:\s*none|visibility\s*:\s*hidden", re.IGNORECASE)
_HEADINGS = {f"h{n}": n for n in range(1, 7)}
_BLOCKS = {
    "p", "div", "section", "article", "main", "body", "ul", "ol", "dl", "dt", "dd",
    "blockquote", "figure", "figcaption", "address", "details", "summary", "center", "hr",
    "header", "footer", "table", "tr", "td", "th", "caption", "fieldset", "legend",
}  # fmt: skip
_LAYOUT_INSIDE_TABLE = ("p", "div", "table", "ul", "ol", *_HEADINGS)
_SKIPPED_STRINGS = (Comment, Declaration, Doctype, ProcessingInstruction)


def declared_charset(data: bytes) -> str | None:
    match = _META_CHARSET.search(data[:4096])
    if not match:
        return None
    return (match.group(1) or match.group(2)).decode("ascii")


def _remove_noise(soup: BeautifulSoup) -> None:
    for tag in soup.find_all(_DROP_TAGS):
        tag.decompose()
    for tag in soup.find_all(["header", "footer"]):
        # An article's own header carries its title; a page-level one carries the site logo.
        if tag.name == "footer" or tag.find_parent(["article", "main"]) is None:
            tag.decompose()
    for tag in soup.find_all(True):
        if tag.decomposed:  # inside something removed earlier in this loop
            continue
        role = str(tag.get("role") or "").lower()
        style = str(tag.get("style") or "")
        if (
            role in _DROP_ROLES
            or tag.has_attr("hidden")
            or str(tag.get("aria-hidden") or "").lower() == "true"
            or _HIDDEN_STYLE.search(style)
        ):
            tag.decompose()


def _main_content(soup: BeautifulSoup) -> Tag:
    body = soup.body or soup
    candidates: list[Tag] = list(
        soup.find_all("main") or soup.find_all(True, attrs={"role": "main"})
    )
    if len(candidates) != 1:
        articles = soup.find_all("article")
        candidates = list(articles) if len(articles) == 1 else []
    if candidates:
        main = candidates[0]
        # A <main> that holds a small part of the page's text is a misuse; keep everything.
        if len(main.get_text(strip=True)) >= 0.3 * len(body.get_text(strip=True)):
            return main
    return body


def _text(tag: Tag) -> str:
    return " ".join(tag.get_text(" ").split())


def _is_data_table(table: Tag) -> bool:
    return table.find(_LAYOUT_INSIDE_TABLE) is None


def _table_rows(table: Tag) -> list[list[str]]:
    rows = []
    for row in table.find_all("tr"):
        cells = row.find_all(["th", "td"], recursive=False)
        rows.append([_text(cell) for cell in cells])
    return rows


@dataclass
class _Walker:
    sections: SectionBuilder = field(default_factory=SectionBuilder)
    inline: list[str] = field(default_factory=list)
    prefix: str = ""
    items: list[str] = field(default_factory=list)  # consecutive list items, one block
    depth: int = 0

    def flush(self) -> None:
        raw = "".join(self.inline)
        self.inline = []
        lines = (" ".join(line.split()) for line in raw.split("\n"))
        text = "\n".join(line for line in lines if line)
        if self.prefix:
            if text:
                self.items.append(self.prefix + text)
            self.prefix = ""
            return
        if text:
            self.end_list()
            self.sections.add(text)

    def end_list(self) -> None:
        if self.items:
            self.sections.add("\n".join(self.items))
            self.items = []

    def block(self, text: str) -> None:
        self.flush()
        self.end_list()
        self.sections.add(text)

    def walk(self, node: Tag) -> None:
        for child in node.children:
            if isinstance(child, _SKIPPED_STRINGS):
                continue
            if isinstance(child, NavigableString):
                self.inline.append(str(child))
            elif isinstance(child, Tag):
                self.element(child)

    def element(self, tag: Tag) -> None:
        name = tag.name
        if name in _HEADINGS:
            self.flush()
            self.end_list()
            text = _text(tag)
            level = _HEADINGS[name]
            self.sections.heading(level, text, line=f"{'#' * level} {text}")
        elif name == "pre":
            self.block(tag.get_text().strip("\n"))
        elif name == "table" and _is_data_table(tag):
            self.block(markdown_table(_table_rows(tag)))
        elif name == "br":
            self.inline.append("\n")
        elif name in ("ul", "ol") and tag.find("li", recursive=False) is not None:
            self.flush()
            self.depth += 1
            for number, item in enumerate(tag.find_all("li", recursive=False), start=1):
                self.flush()
                marker = f"{number}." if name == "ol" else "-"
                self.prefix = "  " * (self.depth - 1) + marker + " "
                self.walk(item)
                self.flush()
            self.depth -= 1
            if self.depth == 0:
                self.end_list()
        elif name in _BLOCKS:
            self.flush()
            self.walk(tag)
            self.flush()
        else:
            self.walk(tag)


_MARKUP = re.compile(r"[\s*_`#|>~-]+")
_SUBSTANTIAL_LINE = 40
_MIN_COVERAGE = 0.7


def _squash(text: str) -> str:
    return _MARKUP.sub("", text)


def _coverage(reference: str, candidate: str) -> float:
    """Share of the reference's substantial lines (by characters) found in the candidate."""
    squashed = _squash(candidate)
    lines = [
        line for line in map(_squash, reference.splitlines()) if len(line) >= _SUBSTANTIAL_LINE
    ]
    total = sum(len(line) for line in lines)
    if not total:
        return 1.0
    return sum(len(line) for line in lines if line[:30] in squashed) / total


def _trafilatura_sections(html: str, reference: str) -> list[Section] | None:
    markdown = trafilatura.extract(
        html,
        output_format="markdown",
        include_formatting=True,
        include_tables=True,
        include_comments=False,
        include_links=False,
        include_images=False,
    )
    if not markdown or "\n\n" not in markdown.strip():
        return None  # nothing, or the flat fallback text without structure
    # Compared unescaped: the walker's text has no `\_`, and a page full of identifiers
    # would otherwise look uncovered.
    if _coverage(reference, unescape_markdown(markdown)) < _MIN_COVERAGE:
        return None
    # Split while still escaped (an escaped "\#" line start is text, not a heading), then
    # unescape what the chunks, citations and keyword index will see.
    return [
        Section(
            unescape_markdown(section.heading_path) if section.heading_path else None,
            unescape_markdown(section.text),
        )
        for section in split_markdown(clean_text(markdown)).finish()
    ]


def read_html(data: bytes, file_name: str) -> list[Document]:
    html = decode_text(data, file_name, declared=declared_charset(data))
    soup = BeautifulSoup(html, "lxml")
    _remove_noise(soup)
    walker = _Walker()
    walker.walk(_main_content(soup))
    walker.flush()
    walker.end_list()
    sections = walker.sections.finish()
    reference = "\n".join(section.text for section in sections)
    sections = _trafilatura_sections(html, reference) or sections
    return [
        make_document(clean_text(section.text), file_name, heading_path=section.heading_path)
        for section in sections
    ]
