"""Retrieval for robots over every bound knowledge base, with every score kept visible.

:meth:`RobotRetriever.search` runs, for one query:

1. **embed**: the query once per distinct embedding model among the knowledge bases (each base
   is searched with the vectors of its own model).
2. **legs**: the vector leg asks each base's ``MilvusVectorStore`` for its ``candidate_k``
   nearest chunks (cosine); the keyword leg asks each base's keyword store for its
   ``candidate_k`` best BM25 chunks. ``candidate_k`` is raised to ``top_k`` when smaller, so a
   search can always fill ``top_k``. Keyword hits are completed from Milvus (the stored node,
   and in hybrid mode the stored embedding); a hit Milvus no longer holds belongs to a document
   being deleted or re-ingested and is dropped.
3. **ranks**: each leg's hits of all bases are pooled and ranked by the leg's score, best = 1.
   Pooling (rather than one ranking per base) keeps an unrelated base's best chunk from
   ranking level with a relevant base's best one.
4. **fusion** (hybrid mode only; a single leg needs none and its ``fused_score`` is None):
   ``rrf``: ``sum over legs of 1 / (rrf_k + rank)``; ``weighted``: ``w_v * minmax(cosine) +
   w_k * minmax(bm25)``, weights normalised to sum 1, min-max over the leg's pooled hits (all
   equal: 1 if positive, else 0); a leg that did not find the chunk adds 0.
5. **threshold** and **rerank**, then the best ``top_k``.

Threshold rule (``RetrievalSpec.similarity_threshold``): it applies to a score comparable
across queries, never to a fused (RRF or weighted) score, and it removes chunks without
rescoring the rest:

- with a reranker: the best ``candidate_k`` (or ``top_k``, if more) fused chunks are reranked,
  and chunks whose ``rerank_score`` is below the threshold are dropped, whatever the mode;
- without a reranker, vector and hybrid modes: chunks whose ``similarity`` (cosine between the
  query and the chunk's stored embedding) is below the threshold are dropped. Every chunk has
  one: a vector hit's is its vector score; for a chunk only the keyword leg found, it is
  computed from the embedding stored in Milvus (fetched with its node, no model call). So a
  keyword-only hit is kept exactly when a vector hit of the same similarity would be. Caveat:
  with an English-only model (the packaged all-MiniLM-L6-v2), Chinese chunks score about
  0.3–0.45 against any Chinese query, so a threshold above that also drops the Chinese chunks
  only the keyword leg can find: keep it low there, or use a reranker;
- keyword mode without a reranker: ignored (raw BM25 has no fixed scale);
  ``RetrievalResult.threshold_on`` says which score, if any, the threshold was applied to.

``RetrievedChunk.score`` is the score the results are ordered by: the rerank score when
reranked, else the fused score in hybrid mode, else the leg's own score (cosine or BM25).
``RetrievalResult.candidates`` keeps every fused candidate, including those the threshold, the
reranker or ``top_k`` left out. Timings are in milliseconds; ``keyword`` includes reading the
keyword hits' stored nodes and embeddings back from Milvus.

The fusion maths is in ``indexes.retrieval_fusion`` and the result types are in
``indexes.retrieval_results``; the names in ``__all__`` are importable from here.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import Any, Literal

import numpy as np
from llama_index.core.base.base_retriever import BaseRetriever
from llama_index.core.postprocessor.types import BaseNodePostprocessor
from llama_index.core.schema import BaseNode, NodeWithScore, QueryBundle, TextNode
from llama_index.core.vector_stores.types import VectorStoreQuery
from llama_index.core.vector_stores.utils import metadata_dict_to_node

from indexes.errors import IndexesError, ModelError, StoreError
from indexes.retrieval_fusion import min_max, rrf_scores, weighted_scores
from indexes.retrieval_results import (
    STAGES,
    KnowledgeSource,
    RetrievalResult,
    RetrievedChunk,
    ThresholdOn,
)
from indexes.specs import RetrievalMode, RetrievalSpec
from indexes.stores.milvus import EMBEDDING_FIELD, TEXT_FIELD

__all__ = [
    "MODES",
    "STAGES",
    "KnowledgeSource",
    "RetrievalResult",
    "RetrievedChunk",
    "RobotRetriever",
    "ThresholdOn",
    "build_retriever",
    "min_max",
    "rrf_scores",
    "weighted_scores",
]

logger = logging.getLogger(__name__)

MODES: tuple[RetrievalMode, ...] = ("vector", "keyword", "hybrid")
_NODE_FIELDS = ["_node_content", "_node_type", TEXT_FIELD]


def _text_node(node: BaseNode) -> TextNode:
    if isinstance(node, TextNode):
        return node
    return TextNode(id_=node.node_id, text=node.get_content(), metadata=node.metadata)


def _cosine(a: Sequence[float], b: Sequence[float]) -> float:
    va, vb = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
    norm = float(np.linalg.norm(va) * np.linalg.norm(vb))
    return float(va @ vb) / norm if norm else 0.0


@contextmanager
def _timed(timings: dict[str, float], stage: str) -> Iterator[None]:
    started = time.perf_counter()
    try:
        yield
    finally:
        timings[stage] += (time.perf_counter() - started) * 1000


@contextmanager
def _store_errors(source: KnowledgeSource, action: str) -> Iterator[None]:
    try:
        yield
    except IndexesError:
        raise
    except Exception as exc:  # pymilvus, grpc, bm25s, numpy...: one error type for callers
        detail = getattr(exc, "message", None) or str(exc) or type(exc).__name__
        raise StoreError(
            f"Could not {action} of knowledge base {source.spec.knowledge_id} "
            f"(collection {source.spec.collection_name}): {detail}"
        ) from exc


# --- the retriever -------------------------------------------------------------------------------

Key = tuple[int, str]  # (knowledge_id, node_id)


class RobotRetriever(BaseRetriever):
    """Vector and keyword legs over every knowledge base, fused, thresholded and reranked (see
    the module docstring). ``retrieve``/``aretrieve`` give NodeWithScore (score = final score)
    for chat engines; ``search``/``asearch`` give every score and the timings."""

    def __init__(
        self,
        retrieval: RetrievalSpec,
        sources: Sequence[KnowledgeSource],
        reranker: BaseNodePostprocessor | None = None,
    ) -> None:
        super().__init__()
        self.retrieval = retrieval
        self.sources = tuple(sources)
        self.reranker = reranker

    def _retrieve(self, query_bundle: QueryBundle) -> list[NodeWithScore]:
        return self.search(query_bundle.query_str).to_nodes()

    async def _aretrieve(self, query_bundle: QueryBundle) -> list[NodeWithScore]:
        return (await self.asearch(query_bundle.query_str)).to_nodes()

    async def asearch(
        self, query: str, *, top_k: int | None = None, mode: RetrievalMode | None = None
    ) -> RetrievalResult:
        # In a worker thread: the stores and local models block, and MilvusVectorStore.aquery
        # stays bound to the first event loop it ran in.
        return await asyncio.to_thread(self.search, query, top_k=top_k, mode=mode)

    def search(
        self, query: str, *, top_k: int | None = None, mode: RetrievalMode | None = None
    ) -> RetrievalResult:
        spec = self.retrieval
        mode = mode or spec.mode
        top_k = spec.top_k if top_k is None else top_k
        if mode not in MODES:
            raise IndexesError(f"Unknown retrieval mode {mode!r}: use one of {', '.join(MODES)}.")
        if top_k < 1:
            raise IndexesError(f"top_k must be at least 1, not {top_k}.")
        timings = dict.fromkeys(STAGES, 0.0)
        started = time.perf_counter()
        result = RetrievalResult([], timings, mode)
        if query.strip() and self.sources:
            self._run(query, top_k, result)
        timings["total"] = (time.perf_counter() - started) * 1000
        return result

    def _run(self, query: str, top_k: int, result: RetrievalResult) -> None:
        spec, mode, timings = self.retrieval, result.mode, result.timings_ms
        depth = max(spec.candidate_k, top_k)
        embeddings: list[list[float] | None] = [None] * len(self.sources)
        if mode != "keyword":
            with _timed(timings, "embed"):
                embeddings = [*self._embed(query)]
        found: dict[Key, RetrievedChunk] = {}
        if mode != "keyword":
            with _timed(timings, "vector"):
                for source, embedding in zip(self.sources, embeddings, strict=True):
                    self._vector_leg(source, embedding or [], depth, found)
        if mode != "vector":
            with _timed(timings, "keyword"):
                for source, embedding in zip(self.sources, embeddings, strict=True):
                    self._keyword_leg(source, query, embedding, depth, found)
        with _timed(timings, "fusion"):
            vector, keyword = _ranked(found, "vector"), _ranked(found, "keyword")
            if mode == "hybrid":
                _fuse(spec, found, vector, keyword)
            ordered = sorted(found, key=lambda k: (-found[k].score, k))
        chunks = result.candidates = [found[key] for key in ordered]
        threshold = spec.similarity_threshold
        if self.reranker is not None:
            with _timed(timings, "rerank"):
                chunks = _rerank(self.reranker, query, chunks[:depth], top_k)
            chunks = [c for c in chunks if (c.rerank_score or 0.0) >= threshold]
            result.threshold_on = "rerank"
        elif mode != "keyword":
            chunks = [c for c in chunks if c.similarity is not None and c.similarity >= threshold]
            result.threshold_on = "similarity"
        result.chunks = chunks[:top_k]

    def _embed(self, query: str) -> Iterator[list[float]]:
        done: dict[tuple[Any, ...], list[float]] = {}
        for source in self.sources:
            model = source.spec.embedding
            key = (model.provider, model.model_name, model.base_url, model.dimension)
            if key not in done:
                try:
                    done[key] = source.embed_model.get_query_embedding(query)
                except IndexesError:
                    raise
                except Exception as exc:
                    raise ModelError(
                        f"Could not embed the query with '{model.model_name}': {exc}"
                    ) from exc
            yield done[key]

    def _vector_leg(
        self,
        source: KnowledgeSource,
        embedding: list[float],
        depth: int,
        found: dict[Key, RetrievedChunk],
    ) -> None:
        query = VectorStoreQuery(
            query_embedding=embedding, similarity_top_k=depth, output_fields=_NODE_FIELDS[:2]
        )
        with _store_errors(source, "search the vectors"):
            result = source.index.vector_store.query(query)
        kid = source.spec.knowledge_id
        for node, score in zip(result.nodes or [], result.similarities or [], strict=True):
            cosine = float(score)
            found[(kid, node.node_id)] = RetrievedChunk(
                _text_node(node), kid, vector_score=cosine, similarity=cosine, score=cosine
            )

    def _keyword_leg(
        self,
        source: KnowledgeSource,
        query: str,
        embedding: list[float] | None,
        depth: int,
        found: dict[Key, RetrievedChunk],
    ) -> None:
        kid = source.spec.knowledge_id
        with _store_errors(source, "search the keyword index"):
            hits = source.index.keyword_store.search(query, depth)
        missing = [hit for hit in hits if (kid, hit.node_id) not in found]
        rows: dict[str, dict[str, Any]] = {}
        if missing:
            # The stored node carries what the keyword store lacks (which metadata the LLM
            # sees); its embedding gives the hit a similarity comparable with vector hits.
            fields = [*_NODE_FIELDS, EMBEDDING_FIELD] if embedding is not None else _NODE_FIELDS
            milvus = source.index.milvus
            with _store_errors(source, "read the chunks found by keyword"):
                result = milvus.client.query(
                    milvus.collection_name,
                    ids=[hit.node_id for hit in missing],
                    output_fields=fields,
                )
            rows = {str(row["id"]): row for row in result}
        for hit in hits:
            chunk = found.get((kid, hit.node_id))
            if chunk is None:
                row = rows.get(hit.node_id)
                if row is None:
                    logger.debug("Keyword hit %s is not in Milvus (being replaced)", hit.node_id)
                    continue
                node = _text_node(metadata_dict_to_node(row, text=str(row.get(TEXT_FIELD, ""))))
                chunk = found[(kid, hit.node_id)] = RetrievedChunk(node, kid)
                if embedding is not None and row.get(EMBEDDING_FIELD) is not None:
                    chunk.similarity = _cosine(embedding, row[EMBEDDING_FIELD])
            chunk.keyword_score = float(hit.score)
            if chunk.vector_score is None:
                chunk.score = chunk.keyword_score


def _rerank(
    reranker: BaseNodePostprocessor, query: str, pool: list[RetrievedChunk], top_k: int
) -> list[RetrievedChunk]:
    if not pool:
        return []
    top_n = getattr(reranker, "top_n", None)
    if isinstance(top_n, int) and top_n < top_k:
        # A search may ask for more than the reranker was built to keep.
        reranker = reranker.model_copy(update={"top_n": top_k})
    by_identity = {id(chunk.node): chunk for chunk in pool}
    by_id = {chunk.node_id: chunk for chunk in pool}
    inputs = [NodeWithScore(node=chunk.node, score=chunk.score) for chunk in pool]
    try:
        ranked = reranker.postprocess_nodes(inputs, QueryBundle(query))
    except IndexesError:
        raise
    except Exception as exc:  # a third-party postprocessor: one error type for callers
        raise ModelError(f"Reranking failed: {type(exc).__name__}: {exc}") from exc
    reranked: list[RetrievedChunk] = []
    for item in ranked:
        chunk = by_identity.get(id(item.node)) or by_id.get(item.node.node_id)
        if chunk is not None and item.score is not None:
            chunk.rerank_score = chunk.score = float(item.score)
            reranked.append(chunk)
    reranked.sort(key=lambda chunk: -chunk.score)
    return reranked


def _fuse(
    spec: RetrievalSpec, found: dict[Key, RetrievedChunk], vector: list[Key], keyword: list[Key]
) -> None:
    if spec.fusion == "rrf":
        fused = rrf_scores([vector, keyword], spec.rrf_k)
    else:
        vector_scores = {key: found[key].vector_score or 0.0 for key in vector}
        keyword_scores = {key: found[key].keyword_score or 0.0 for key in keyword}
        fused = weighted_scores(
            [(spec.vector_weight, vector_scores), (spec.keyword_weight, keyword_scores)]
        )
    for key, chunk in found.items():
        chunk.fused_score = chunk.score = fused[key]


def _ranked(found: dict[Key, RetrievedChunk], leg: Literal["vector", "keyword"]) -> list[Key]:
    """The leg's hits of all bases, best first; sets their ``<leg>_rank``."""
    scores = {key: getattr(c, f"{leg}_score") for key, c in found.items()}
    ranking = sorted((k for k, s in scores.items() if s is not None), key=lambda k: (-scores[k], k))
    for rank, key in enumerate(ranking, start=1):
        setattr(found[key], f"{leg}_rank", rank)
    return ranking


def build_retriever(
    retrieval: RetrievalSpec,
    sources: Sequence[KnowledgeSource],
    *,
    reranker: BaseNodePostprocessor | None = None,
) -> RobotRetriever:
    """A retriever over ``sources`` (each knowledge base at most once) configured by
    ``retrieval``; ``reranker`` from ``indexes.rerank.build_reranker`` or any postprocessor."""
    seen: set[int] = set()
    for source in sources:
        kid = source.spec.knowledge_id
        if kid in seen:
            raise IndexesError(f"Knowledge base {kid} is bound twice.")
        if source.index.spec.knowledge_id != kid:
            raise IndexesError(
                f"Knowledge base {kid} was given the stores of knowledge base "
                f"{source.index.spec.knowledge_id}."
            )
        seen.add(kid)
    if retrieval.fusion == "weighted" and retrieval.vector_weight + retrieval.keyword_weight <= 0:
        raise IndexesError("Weighted fusion needs a positive vector or keyword weight.")
    return RobotRetriever(retrieval, sources, reranker)
