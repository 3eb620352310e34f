"""Stable ids and names for a folder knowledge base: hashes, so they are the same on every run
and on every machine, and a re-run replaces a document's chunks instead of adding new ones."""

from __future__ import annotations

import hashlib
import re
import unicodedata

_ID_BITS = 52  # document ids stay exact as JSON numbers and floats (JavaScript clients)


def document_id_for(relative_path: str) -> int:
    """The document id of a file: a hash of its path relative to the folder (``/``-separated),
    the same on every run and on every machine."""
    key = unicodedata.normalize("NFC", relative_path).encode()
    digest = hashlib.sha256(key).digest()
    return int.from_bytes(digest[:8], "big") % (1 << _ID_BITS) or 1


def stable_int(text: str, bits: int) -> int:
    """A ``bits``-bit hash of ``text``, never 0 (the knowledge id of a named knowledge base)."""
    digest = hashlib.sha256(text.encode()).digest()
    return int.from_bytes(digest[:8], "big") % (1 << bits) or 1


def collection_name(name: str) -> str:
    """The collection of a named knowledge base: readable, and unique thanks to the hash."""
    slug = re.sub(r"[^A-Za-z0-9]+", "_", name).strip("_").lower()[:40]
    digest = hashlib.sha256(name.encode()).hexdigest()[:8]
    return f"kb_{slug}_{digest}" if slug else f"kb_{digest}"
