"""Bytes to text for plain-text formats, with Chinese encodings first-class.

Order: a BOM decides; then strict UTF-8 (which almost never decodes other encodings by
accident); then charset-normalizer, preferring GB18030 whenever it is among its best
candidates, because short GBK text is often a tie with Korean/Japanese code pages
(measured: "你好世界" in GBK comes back as cp949 first, gb18030 second, both with chaos 0.0).
GB18030 is a superset of GB2312 and GBK, so it is the decoder for all three.
"""

from __future__ import annotations

import codecs

import charset_normalizer

from indexes.errors import DocumentUnreadable

_BOMS: tuple[tuple[bytes, str], ...] = (
    # UTF-32 first: its little-endian BOM starts with the UTF-16 one.
    (codecs.BOM_UTF32_LE, "utf-32"),
    (codecs.BOM_UTF32_BE, "utf-32"),
    (codecs.BOM_UTF8, "utf-8-sig"),
    (codecs.BOM_UTF16_LE, "utf-16"),
    (codecs.BOM_UTF16_BE, "utf-16"),
)
_CHINESE = {"gb2312", "gbk", "gb18030", "hz"}
# Within this much "chaos" of the best guess, a GB18030 candidate wins.
_GB_TOLERANCE = 0.05
# charset-normalizer looks at samples; more than this adds time, not accuracy.
_SAMPLE_BYTES = 256 * 1024


def bom_encoding(data: bytes) -> str | None:
    for bom, encoding in _BOMS:
        if data.startswith(bom):
            return encoding
    return None


def _normalizer_guess(data: bytes) -> str | None:
    matches = list(charset_normalizer.from_bytes(data[:_SAMPLE_BYTES]))
    if not matches:
        return None
    best = matches[0]
    for match in matches:
        if match.encoding in _CHINESE and match.chaos <= best.chaos + _GB_TOLERANCE:
            return "gb18030"
    return best.encoding


def _python_codec(label: str) -> str:
    label = label.strip().lower().replace("_", "-")
    if label in _CHINESE or label in ("gb-2312", "x-gbk", "cp936"):
        return "gb18030"
    # As browsers do (WHATWG): pages labelled Latin-1 or ASCII are really windows-1252.
    if label in ("iso-8859-1", "latin1", "latin-1", "us-ascii", "ascii"):
        return "cp1252"
    return label


def decode_text(data: bytes, file_name: str, declared: str | None = None) -> str:
    """Text from bytes. `declared` is a charset the file states about itself (an HTML <meta>):
    it is used unless the bytes have a BOM or are valid UTF-8, since mislabelled UTF-8 pages
    are far more common than Latin-1 text that happens to be valid UTF-8."""
    bom = bom_encoding(data)
    if bom:
        return data.decode(bom, errors="replace")
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError:
        pass
    candidates = [_python_codec(declared)] if declared else []
    candidates += [_python_codec(_normalizer_guess(data) or "gb18030"), "gb18030"]
    for encoding in candidates:
        try:
            return data.decode(encoding)
        except (UnicodeDecodeError, LookupError):
            continue
    # A few damaged bytes (a truncated download, a bad copy) should not lose the whole file.
    for encoding in candidates:
        try:
            text = data.decode(encoding, errors="replace")
        except LookupError:
            continue
        if text.count("\ufffd") <= len(text) // 100:
            return text
    raise DocumentUnreadable(
        f"{file_name} could not be read: its text encoding could not be determined "
        "(save it as UTF-8 and upload it again)."
    )
