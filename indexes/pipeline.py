"""Ingestion: a document's sections (LlamaIndex Documents) in, embedded chunks out.

No store is attached here: the caller writes the chunks to the vector and keyword stores keyed by
document id, so a re-ingest replaces them everywhere (chunk ids are ``f"{document_id}-{n}"``).
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence

from llama_index.core.base.embeddings.base import BaseEmbedding
from llama_index.core.ingestion import IngestionPipeline
from llama_index.core.schema import Document, TextNode

from indexes.specs import KnowledgeSpec
from indexes.splitting import Tokenizer, build_splitter, split_documents

Progress = Callable[[str, float], None]

logger = logging.getLogger(__name__)

# Special tokens a local (BERT-like) model adds around every input: [CLS] ... [SEP].
_SPECIAL_TOKENS = 2


def effective_chunking(spec: KnowledgeSpec, embed_model: BaseEmbedding) -> tuple[int, int]:
    """(chunk_size, chunk_overlap) for this model: a local model silently truncates inputs past
    its maximum sequence length (256 tokens for all-MiniLM-L6-v2), so chunks are kept within it
    rather than losing their tails from the vectors."""
    chunk_size, overlap = spec.chunk_size, spec.chunk_overlap
    max_length = getattr(embed_model, "max_length", None)  # set by HuggingFaceEmbedding
    if isinstance(max_length, int) and chunk_size > max_length - _SPECIAL_TOKENS:
        limit = max_length - _SPECIAL_TOKENS
        # info, not warning: with the defaults (500 tokens, the packaged model) it is every ingest.
        logger.info(
            "Knowledge base %s: chunk size %s exceeds what %s reads (%s tokens); using %s.",
            spec.knowledge_id,
            chunk_size,
            spec.embedding.model_name,
            limit,
            limit,
        )
        chunk_size = limit
    if overlap >= chunk_size:
        overlap = chunk_size // 2
    return chunk_size, overlap


def build_ingestion_pipeline(
    spec: KnowledgeSpec, embed_model: BaseEmbedding, tokenizer: Tokenizer
) -> IngestionPipeline:
    """An IngestionPipeline [splitter, embed_model] without docstore, vector store or cache.

    Run it on Documents whose metadata holds ``knowledge_id`` and ``document_id`` (see
    ``indexes.splitting.prepare_documents``) to get chunk ids and positions.
    """
    chunk_size, overlap = effective_chunking(spec, embed_model)
    splitter = build_splitter(chunk_size, overlap, tokenizer)
    # disable_cache: the cache would hash every node and keep a second copy of every vector.
    return IngestionPipeline(transformations=[splitter, embed_model], disable_cache=True)


def embed_document(
    spec: KnowledgeSpec,
    documents: Sequence[Document],
    *,
    document_id: int,
    embed_model: BaseEmbedding,
    tokenizer: Tokenizer,
    progress: Progress | None = None,
) -> list[TextNode]:
    """Split one document (all its sections) and embed the chunks, batch by batch.

    ``progress(stage, fraction)`` is called with "splitting" (0, then 1) and "embedding" (0, then
    after every batch); an exception it raises aborts the work (use it to cancel).
    """

    def report(stage: str, fraction: float) -> None:
        if progress is not None:
            progress(stage, fraction)

    chunk_size, overlap = effective_chunking(spec, embed_model)
    report("splitting", 0.0)
    nodes = split_documents(
        documents,
        build_splitter(chunk_size, overlap, tokenizer),
        knowledge_id=spec.knowledge_id,
        document_id=document_id,
    )
    report("splitting", 1.0)
    report("embedding", 0.0)
    # Batches of similar lengths: a local model pads every input to the batch's longest, so
    # this saves the padding compute (sentence-transformers sorts the same way within a call).
    order = sorted(nodes, key=lambda node: len(node.text), reverse=True)
    size = max(1, embed_model.embed_batch_size)
    for start in range(0, len(order), size):
        embed_model(order[start : start + size])  # sets node.embedding
        report("embedding", min(1.0, (start + size) / len(order)))
    return nodes
