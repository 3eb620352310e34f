"""What retrieval searches and what it returns: knowledge sources, and chunks with every score
they got (see indexes.retrieval)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal

from llama_index.core.base.embeddings.base import BaseEmbedding
from llama_index.core.schema import MetadataMode, NodeWithScore, TextNode

from indexes.knowledge_index import KnowledgeIndex
from indexes.specs import KnowledgeSpec, RetrievalMode

STAGES = ("embed", "vector", "keyword", "fusion", "rerank", "total")
ThresholdOn = Literal["rerank", "similarity"]


@dataclass
class KnowledgeSource:
    """A knowledge base to search: its spec, its stores and its own embedding model."""

    spec: KnowledgeSpec
    index: KnowledgeIndex
    embed_model: BaseEmbedding


@dataclass
class RetrievedChunk:
    """One chunk with every score it got; a score is None when its stage did not see the chunk
    or did not run. Ranks are 1-based within the leg's hits of all bases."""

    node: TextNode
    knowledge_id: int
    vector_rank: int | None = None
    vector_score: float | None = None  # cosine similarity from the vector leg
    keyword_rank: int | None = None
    keyword_score: float | None = None  # raw BM25 (higher is better)
    similarity: float | None = None  # cosine with the query, for every chunk outside keyword mode
    fused_score: float | None = None
    rerank_score: float | None = None
    score: float = 0.0  # the final score, the one results are ordered by
    node_id: str = field(init=False)
    text: str = field(init=False)
    document_id: int | None = field(init=False)
    file_name: str | None = field(init=False)
    page: int | None = field(init=False)
    heading_path: str | None = field(init=False)

    def __post_init__(self) -> None:
        self.set_node(self.node)

    def set_node(self, node: TextNode) -> None:
        metadata = node.metadata
        self.node = node
        self.node_id = node.node_id
        self.text = node.get_content(metadata_mode=MetadataMode.NONE)
        self.document_id = _as_int(metadata.get("document_id", node.ref_doc_id))
        self.page = _as_int(metadata.get("page"))
        self.file_name = _as_str(metadata.get("file_name"))
        self.heading_path = _as_str(metadata.get("heading_path"))


@dataclass
class RetrievalResult:
    chunks: list[RetrievedChunk]
    timings_ms: dict[str, float]  # keys: STAGES; 0.0 for a stage that did not run
    mode: RetrievalMode
    threshold_on: ThresholdOn | None = None  # None: the threshold was not applied
    # Every fused candidate, best first by fused (or leg) score, including those the threshold,
    # the reranker or top_k left out: what a recall test shows to explain a missing chunk.
    candidates: list[RetrievedChunk] = field(default_factory=list)

    def to_nodes(self) -> list[NodeWithScore]:
        return [NodeWithScore(node=chunk.node, score=chunk.score) for chunk in self.chunks]


def _as_int(value: Any) -> int | None:
    try:
        return None if isinstance(value, bool) else int(value)
    except (TypeError, ValueError):
        return None


def _as_str(value: Any) -> str | None:
    return None if value is None else str(value)
