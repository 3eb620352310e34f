"""Open knowledge-base indexes, one per knowledge base per process.

Opening one costs a Milvus connection and, for BM25, loading its index from disk; the ingestion
job, the documents API and retrieval all reuse the same open object.
"""

from __future__ import annotations

import threading

from indexes.batching import BatchingEmbedding
from indexes.embedding_process import ProcessEmbedding, pool_shape
from indexes.knowledge_index import KnowledgeIndex
from indexes.models import (
    LOCAL,
    LOCAL_BATCH_SIZE,
    Tokenizer,
    build_embedding,
    build_tokenizer,
    local_model_dir,
)
from indexes.specs import KnowledgeSpec, ModelSpec, StoreSettings


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


class EmbeddingRegistry:
    """One batching embedding model (and token counter) per distinct model spec per process,
    so that concurrent ingestion jobs share full batches (see indexes.batching)."""

    def __init__(self, *, local_processes: int | None = None) -> None:
        """``local_processes``: child processes embedding documents with a local model (see
        indexes.embedding_process); None picks by core count, 0 embeds in this process."""
        self._models: dict[str, tuple[BatchingEmbedding, Tokenizer]] = {}
        self._lock = threading.Lock()
        self._local_processes = local_processes

    def get(self, spec: ModelSpec) -> tuple[BatchingEmbedding, Tokenizer]:
        """The shared model and tokenizer (blocking on first use: loads or connects)."""
        # The key holds the API key in memory only (it selects the client that uses it).
        key = spec.model_dump_json(exclude={"dimension", "max_tokens"})
        with self._lock:
            cached = self._models.get(key)
            if cached is None:
                cached = (self._build(spec), build_tokenizer(spec))
                self._models[key] = cached
            return cached

    def _build(self, spec: ModelSpec) -> BatchingEmbedding:
        if spec.provider != LOCAL or self._local_processes == 0:
            return BatchingEmbedding(build_embedding(spec))
        processes, threads = pool_shape(processes=self._local_processes)
        model = ProcessEmbedding(
            local_model_dir(spec),
            label=spec.model_name,
            processes=processes,
            threads=threads,
            batch_size=LOCAL_BATCH_SIZE,
        )
        return BatchingEmbedding(model, parallel=processes)
