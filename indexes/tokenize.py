"""Keyword tokens for Chinese, English and mixed text, shared by the BM25 store and its queries.

Documents and queries must be cut the same way or BM25 scores nothing (a raw Chinese query has
no spaces to split on), so every keyword path goes through :func:`tokenize`.

jieba loads its dictionary once per process (~1 s) and caches the parsed form in
``jieba.dt.tmp_dir`` — by default ``/tmp/jieba.cache``, a file any user of the machine could
plant. :func:`configure_jieba` points that cache at a directory we own (the index directory);
without it, a per-user private temp directory. Milvus Lite's ``jieba`` analyzer uses the same
global ``jieba.dt``, so configuring it here covers that too.
"""

from __future__ import annotations

import logging
import os
import tempfile
import threading
import unicodedata
from collections.abc import Collection
from pathlib import Path

import jieba

logger = logging.getLogger(__name__)

# Function words that carry no topic. Not applied by default (BM25's IDF already discounts
# them and a query made only of them should still match something); pass it where wanted.
_CHINESE_STOPWORDS = "的了是在和与及或也都就而这那有个之其为对把被让从到吗呢吧啊"
_ENGLISH_STOPWORDS = (
    "a an and are as at be by for from in is it of on or that the this to was were with"
)
DEFAULT_STOPWORDS: frozenset[str] = frozenset(_CHINESE_STOPWORDS) | frozenset(
    _ENGLISH_STOPWORDS.split(" ")
)

_lock = threading.Lock()
_configured = False
_loaded = False


def _default_cache_dir() -> Path:
    uid = os.getuid() if hasattr(os, "getuid") else 0
    return Path(tempfile.gettempdir()) / f"rag-app-jieba-{uid}"


def configure_jieba(cache_dir: Path | None = None) -> None:
    """Make jieba cache its parsed dictionary under ``cache_dir``; the first call wins.

    Cheap: the dictionary itself is loaded on first use (:func:`load_jieba`), so processes
    that never cut Chinese (Elasticsearch backend on a Milvus server) never pay for it.
    """
    global _configured
    if _configured:
        return
    with _lock:
        if _configured:
            return
        directory = cache_dir if cache_dir is not None else _default_cache_dir()
        directory.mkdir(mode=0o700, parents=True, exist_ok=True)
        # jieba prints "Building prefix dict ..." through its own DEBUG-level stderr logger.
        jieba.setLogLevel(logging.WARNING)
        jieba.dt.tmp_dir = str(directory)
        _configured = True


def load_jieba() -> None:
    """Load jieba's dictionary once per process (~1 s from its source, less from the cache)."""
    global _loaded
    if _loaded:
        return
    configure_jieba()
    with _lock:
        if not _loaded:
            jieba.dt.initialize()
            _loaded = True
            logger.debug("jieba dictionary loaded (cache in %s)", jieba.dt.tmp_dir)


def tokenize(text: str, stopwords: Collection[str] | None = None) -> list[str]:
    """Lowercased jieba search-mode tokens of ``text`` without punctuation or whitespace.

    Search mode also emits the dictionary sub-words of long words (活期存款 -> 活期, 存款,
    活期存款), so a query for either form matches. NFKC folds full-width letters and digits
    (ＡＢＣ１２３ -> abc123) as input methods often produce them.
    """
    load_jieba()
    normalised = unicodedata.normalize("NFKC", text)
    tokens: list[str] = []
    for raw in jieba.cut_for_search(normalised):
        token = raw.strip().lower()
        # Keep tokens with at least one letter/digit/ideograph: drops punctuation, symbols
        # and whitespace while keeping "0.2%", "c++" and "bm25".
        if not token or not any(ch.isalnum() for ch in token):
            continue
        if stopwords is not None and token in stopwords:
            continue
        tokens.append(token)
    return tokens
