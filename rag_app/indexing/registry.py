"""Open knowledge-base indexes, one per knowledge base per process.

Opening one costs a Milvus connection and, for BM25, loading its index from disk; the ingestion
job, the documents API and retrieval all reuse the same open object.
"""

from __future__ import annotations

import threading

from indexes.knowledge_index import KnowledgeIndex
from indexes.specs import KnowledgeSpec, StoreSettings


class IndexRegistry:
    def __init__(self, stores: StoreSettings) -> None:
        self.stores = stores
        self._open: dict[int, tuple[tuple[str, str, int], KnowledgeIndex]] = {}
        self._lock = threading.Lock()

    def get(self, spec: KnowledgeSpec, dimension: int) -> KnowledgeIndex:
        """The open index of a knowledge base (blocking: call from a worker thread)."""
        # Reopen only when what the stores are built from changes, not on every spec change
        # (chunk sizes, API keys and names do not affect an open index).
        identity = (spec.collection_name, spec.keyword_backend, dimension)
        with self._lock:
            cached = self._open.get(spec.knowledge_id)
            if cached is not None and cached[0] == identity:
                return cached[1]
            index = KnowledgeIndex.open(spec, self.stores, dimension)
            self._open[spec.knowledge_id] = (identity, index)
            return index

    def forget(self, knowledge_id: int) -> None:
        with self._lock:
            self._open.pop(knowledge_id, None)
