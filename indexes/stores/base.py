"""What every keyword store offers, and the plain records the stores hand back.

The vector side needs no protocol of ours: it is llama-index's ``MilvusVectorStore``. Keyword
stores (bm25s on disk, Milvus full-text, Elasticsearch) differ enough that retrieval talks to
them through this small protocol and builds its own LlamaIndex retriever on top.
"""

from __future__ import annotations

from collections.abc import Collection, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol, runtime_checkable

from llama_index.core.schema import BaseNode

from indexes.errors import StoreError


@dataclass(frozen=True)
class KeywordHit:
    """One keyword search result. ``score``: higher is better (raw BM25, not normalised)."""

    node_id: str
    score: float
    text: str
    metadata: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class Chunk:
    """One stored chunk as the documents API lists it."""

    node_id: str
    document_id: int
    position: int
    text: str
    metadata: dict[str, Any] = field(default_factory=dict)


@runtime_checkable
class KeywordStore(Protocol):
    """Keyword index of one knowledge base, written and deleted by document id."""

    def add(self, nodes: Sequence[BaseNode]) -> None:
        """Store these chunks (same node id: replaced)."""
        ...

    def delete_documents(self, document_ids: Collection[int]) -> None:
        """Remove every chunk of these documents; no error for one that has none."""
        ...

    def drop(self) -> None:
        """Remove the whole index of the knowledge base (files, collection or index)."""
        ...

    def count(self, document_id: int | None = None) -> int:
        """Number of chunks, of one document or of the whole knowledge base."""
        ...

    def search(
        self, query: str, top_k: int, document_ids: Collection[int] | None = None
    ) -> list[KeywordHit]:
        """Best ``top_k`` chunks for ``query``, best first, only those scoring above 0."""
        ...


def node_document_id(node: BaseNode) -> int:
    """The document id a chunk belongs to, from its metadata (required by every store)."""
    value = node.metadata.get("document_id")
    if isinstance(value, bool) or not isinstance(value, int):
        raise StoreError(
            f"Chunk {node.node_id} has no integer document_id in its metadata (got {value!r})."
        )
    return value


def node_position(node: BaseNode) -> int:
    """The chunk's position within its document, from its metadata."""
    value = node.metadata.get("position")
    if isinstance(value, bool) or not isinstance(value, int):
        raise StoreError(
            f"Chunk {node.node_id} has no integer position in its metadata (got {value!r})."
        )
    return value


def documents_label(document_ids: Collection[int]) -> str:
    """ "document 7" or "documents 7, 8, 9", for messages about a write or a delete."""
    ids = sorted(document_ids)
    if len(ids) == 1:
        return f"document {ids[0]}"
    return "documents " + ", ".join(str(i) for i in ids)
