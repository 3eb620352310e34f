"""The stores of one knowledge base behind one facade, written and deleted by document id.

The ingestion job calls :meth:`KnowledgeIndex.replace_documents` once per batch of documents; the
documents API lists and counts chunks; retrieval uses :attr:`KnowledgeIndex.vector_store`
(llama-index's ``MilvusVectorStore``) and :attr:`KnowledgeIndex.keyword_store`.

Consistency rule: a document is in every store or in none. Replacing first deletes the old
chunks everywhere, then writes the new ones; if a write fails, what was written for that
document is removed from every store before the error is raised. The old version is gone
either way (the job marks the document failed; a retry writes it again).
"""

from __future__ import annotations

import logging
from collections.abc import Collection, Mapping, Sequence

from llama_index.core.schema import BaseNode
from llama_index.vector_stores.milvus import MilvusVectorStore

from indexes.errors import StoreError
from indexes.specs import KnowledgeSpec, StoreSettings
from indexes.stores.base import Chunk, KeywordStore, documents_label, node_document_id
from indexes.stores.bm25 import BM25KeywordStore
from indexes.stores.milvus import MilvusKeywordStore, MilvusStore
from indexes.tokenize import configure_jieba

logger = logging.getLogger(__name__)


class KnowledgeIndex:
    """Vector store + keyword store of one knowledge base."""

    def __init__(
        self, spec: KnowledgeSpec, milvus: MilvusStore, keyword_store: KeywordStore
    ) -> None:
        self.spec = spec
        self.milvus = milvus
        self.keyword_store = keyword_store

    @classmethod
    def open(cls, spec: KnowledgeSpec, stores: StoreSettings, dimension: int) -> KnowledgeIndex:
        """Open (creating if needed) the knowledge base's collection and keyword index."""
        configure_jieba(stores.index_dir / "jieba")
        milvus = MilvusStore.open(
            stores,
            spec.collection_name,
            dimension,
            full_text=spec.keyword_backend == "milvus",
        )
        keyword_store: KeywordStore
        if spec.keyword_backend == "milvus":
            keyword_store = MilvusKeywordStore(milvus)
        elif spec.keyword_backend == "elasticsearch":
            # Imported here: the client is only needed by deployments that use it.
            from indexes.stores.elasticsearch import ElasticsearchKeywordStore

            keyword_store = ElasticsearchKeywordStore.open(stores, spec.collection_name)
        else:
            keyword_store = BM25KeywordStore.open(stores.bm25_dir, spec.collection_name)
        return cls(spec, milvus, keyword_store)

    @property
    def vector_store(self) -> MilvusVectorStore:
        """For searches: rows still waiting for Milvus Lite's debounced flush are flushed."""
        self.milvus.flush_pending()
        return self.milvus.vector_store

    def replace_document(self, document_id: int, nodes: Sequence[BaseNode]) -> None:
        """Make ``nodes`` the document's only chunks in every store (or raise StoreError)."""
        self.replace_documents({document_id: nodes})

    def replace_documents(self, chunks: Mapping[int, Sequence[BaseNode]]) -> None:
        """Make each document's nodes its only chunks in every store, all documents in one
        write per store (the ingestion job stores a batch of small documents at once: a Milvus
        or SQLite round trip costs more than the rows). All or nothing: when a write fails, what
        was written for these documents is removed from every store before StoreError."""
        for document_id, nodes in chunks.items():
            for node in nodes:
                if node_document_id(node) != document_id:
                    raise StoreError(
                        f"Chunk {node.node_id} belongs to document "
                        f"{node.metadata['document_id']}, not {document_id}."
                    )
        if not chunks:
            return
        all_nodes = [node for nodes in chunks.values() for node in nodes]
        self._delete_everywhere(chunks.keys())
        try:
            # Keyword first: it is local or cheap; the vector write is the likelier to fail
            # (remote server, wrong dimension) and the rollback below covers both anyway.
            self.keyword_store.add(all_nodes)
            self.milvus.add(all_nodes)
        except Exception as exc:
            # Any failure, ours or a third party's: roll back, then report as StoreError.
            label = documents_label(chunks.keys())
            logger.warning("Storing %s failed, rolling back: %s", label, exc)
            try:
                self.delete_documents(chunks.keys())
            except StoreError as cleanup:
                raise StoreError(
                    f"Could not store {label} ({exc}), and removing the partial chunks "
                    f"failed too ({cleanup}): delete or re-ingest once the store is back."
                ) from exc
            if isinstance(exc, StoreError):
                raise
            raise StoreError(f"Could not store {label}: {exc}") from exc

    def delete_document(self, document_id: int) -> None:
        """Remove the document's chunks from every store, trying all even if one fails."""
        self.delete_documents([document_id])

    def delete_documents(self, document_ids: Collection[int]) -> None:
        """Remove these documents' chunks from every store, trying all even if one fails."""
        self._delete_everywhere(document_ids)

    def _delete_everywhere(self, document_ids: Collection[int]) -> None:
        if not document_ids:
            return
        errors: list[StoreError] = []
        try:
            self.keyword_store.delete_documents(document_ids)
        except StoreError as exc:
            errors.append(exc)
        try:
            self.milvus.delete_documents(document_ids)
        except StoreError as exc:
            errors.append(exc)
        if errors:
            raise StoreError("; ".join(str(e) for e in errors)) from errors[0]

    def drop(self) -> None:
        """Remove the knowledge base's collection, keyword index and files."""
        errors: list[StoreError] = []
        for store in (self.keyword_store, self.milvus):
            try:
                store.drop()
            except StoreError as exc:
                errors.append(exc)
        if errors:
            raise StoreError("; ".join(str(e) for e in errors)) from errors[0]

    def count(self, document_id: int | None = None) -> int:
        """Chunks in the knowledge base, or of one document (the vector store is the reference)."""
        return self.milvus.count(document_id)

    def list_chunks(self, document_id: int, offset: int, limit: int) -> tuple[list[Chunk], int]:
        """A page of the document's chunks in position order, and its total chunk count."""
        if offset < 0 or limit < 0:
            raise StoreError("offset and limit must not be negative.")
        return self.milvus.list_chunks(document_id, offset, limit)
