"""Undo the backslash escapes that trafilatura's Markdown output puts into prose.

trafilatura (2.x, `include_formatting=True`) escapes every `* _ ` ~ [ ] <` in prose so the
Markdown renders literally, and a leading `# > - +` or `1.` of a paragraph or list item so it
is not read as block syntax. Our chunks are read as plain text (by the embedding model, the
keyword index and people looking at a citation), where `RAG\\_DATA\\_DIR` is noise that also
breaks keyword matches on the real name.

Only trafilatura's own escapes are reversed, not CommonMark escapes in general: a backslash in
the page's text (a Windows path `C:\\Users`, a UNC path `\\\\server`) must survive. trafilatura
turns a run of n backslashes before one of those characters into 2n+1 backslashes, so an odd
run is halved and an even one (never produced by it) is left alone; backslashes before any other
character are never added by it and are kept. Code spans and fenced blocks are verbatim in its
output (nothing escaped), so they are skipped.
"""

from __future__ import annotations

import re

_INLINE_ESCAPE = re.compile(r"(\\+)([*_`~\[\]<])")
# A fenced block, or a code span: in prose every backtick is escaped, so an unescaped run of
# backticks opens code.
_CODE = re.compile(
    r"^ {0,3}(`{3,}|~{3,})[^\n]*\n.*?(?:^ {0,3}\1[ \t]*$|\Z)"
    r"|(?<![\\`])(`+)(?!`).+?(?<!`)\2(?!`)",
    re.MULTILINE | re.DOTALL,
)
# The block-start escape sits at the start of a paragraph line, or after the list markers of
# the item it starts; it is a single backslash (existing backslashes are not doubled).
_BLOCK_ESCAPE = re.compile(
    r"^((?:[ \t]*(?:[-+*]|\d{1,9}[.)])[ \t]+)*[ \t]*)"
    r"(?:\\(?=#{1,6}(?:[ \t]|$)|[-+](?:[ \t]|$)|>)|(\d{1,9})\\(?=[.)](?:[ \t]|$)))",
    re.MULTILINE,
)


def _inline(match: re.Match[str]) -> str:
    run = len(match.group(1))
    if run % 2 == 0:
        return match.group(0)
    return "\\" * (run // 2) + match.group(2)


def _block(match: re.Match[str]) -> str:
    return match.group(1) + (match.group(2) or "")


def _prose(text: str, at_line_start: bool) -> str:
    text = _INLINE_ESCAPE.sub(_inline, text)
    if at_line_start:
        return _BLOCK_ESCAPE.sub(_block, text)
    # Text right after a code span starts mid-line: no block escape can be there.
    head, newline, rest = text.partition("\n")
    return head + newline + _BLOCK_ESCAPE.sub(_block, rest)


def unescape_markdown(text: str) -> str:
    """trafilatura Markdown with its prose escapes removed; code is returned unchanged."""
    if "\\" not in text:
        return text
    parts: list[str] = []
    position = 0
    for code in _CODE.finditer(text):
        at_line_start = position == 0 or text[position - 1] == "\n"
        parts.append(_prose(text[position : code.start()], at_line_start))
        parts.append(code.group(0))
        position = code.end()
    at_line_start = position == 0 or text[position - 1] == "\n"
    parts.append(_prose(text[position:], at_line_start))
    return "".join(parts)
