"""Vector and keyword stores of a knowledge base, written and deleted by document id.

``indexes.stores.elasticsearch`` is not imported here: only deployments using that backend
pay for the client import.
"""

from __future__ import annotations

from indexes.stores.base import Chunk, KeywordHit, KeywordStore
from indexes.stores.bm25 import BM25KeywordStore
from indexes.stores.milvus import MilvusKeywordStore, MilvusStore

__all__ = [
    "BM25KeywordStore",
    "Chunk",
    "KeywordHit",
    "KeywordStore",
    "MilvusKeywordStore",
    "MilvusStore",
]
