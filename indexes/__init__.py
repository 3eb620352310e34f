"""Plain specs in, LlamaIndex objects out.

The app turns its SQL entities into these specs; a notebook writes them by hand. Nothing here
knows about databases or HTTP. The names a notebook needs are importable from the package
(loaded on first use, so ``import indexes`` stays cheap)::

    from indexes import KnowledgeBase, ModelSpec

    kb = KnowledgeBase.from_folder("my-documents/", progress=True)
    engine = kb.chat_engine(ModelSpec(provider="openai-compatible", model_type="chat", ...))

See docs/notebook.md.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from indexes.chat import build_chat_engine, build_robot_llm, turn_info
    from indexes.errors import (
        DocumentUnreadable,
        IndexesError,
        ModelError,
        NoTextFound,
        StoreError,
        UnsupportedFileType,
    )
    from indexes.kb import FolderSync, KnowledgeBase, document_id_for, packaged_embedding
    from indexes.knowledge_index import KnowledgeIndex
    from indexes.llms import build_llm
    from indexes.models import build_embedding, build_tokenizer
    from indexes.pipeline import embed_document
    from indexes.readers import read_document
    from indexes.rerank import build_reranker
    from indexes.retrieval import (
        KnowledgeSource,
        RetrievalResult,
        RetrievedChunk,
        RobotRetriever,
        build_retriever,
    )
    from indexes.specs import (
        PACKAGED_EMBEDDING,
        KnowledgeSpec,
        ModelSpec,
        RetrievalSpec,
        RobotSpec,
        StoreSettings,
    )

# name -> module that defines it
_EXPORTS = {
    "KnowledgeBase": "indexes.kb",
    "FolderSync": "indexes.kb",
    "document_id_for": "indexes.kb",
    "packaged_embedding": "indexes.kb",
    "PACKAGED_EMBEDDING": "indexes.specs",
    "KnowledgeSpec": "indexes.specs",
    "ModelSpec": "indexes.specs",
    "RetrievalSpec": "indexes.specs",
    "RobotSpec": "indexes.specs",
    "StoreSettings": "indexes.specs",
    "build_chat_engine": "indexes.chat",
    "build_robot_llm": "indexes.chat",
    "turn_info": "indexes.chat",
    "build_llm": "indexes.llms",
    "build_embedding": "indexes.models",
    "build_tokenizer": "indexes.models",
    "build_reranker": "indexes.rerank",
    "build_retriever": "indexes.retrieval",
    "KnowledgeSource": "indexes.retrieval",
    "RetrievalResult": "indexes.retrieval",
    "RetrievedChunk": "indexes.retrieval",
    "RobotRetriever": "indexes.retrieval",
    "KnowledgeIndex": "indexes.knowledge_index",
    "embed_document": "indexes.pipeline",
    "read_document": "indexes.readers",
    "IndexesError": "indexes.errors",
    "DocumentUnreadable": "indexes.errors",
    "ModelError": "indexes.errors",
    "NoTextFound": "indexes.errors",
    "StoreError": "indexes.errors",
    "UnsupportedFileType": "indexes.errors",
}

__all__ = [
    "PACKAGED_EMBEDDING",
    "DocumentUnreadable",
    "FolderSync",
    "IndexesError",
    "KnowledgeBase",
    "KnowledgeIndex",
    "KnowledgeSource",
    "KnowledgeSpec",
    "ModelError",
    "ModelSpec",
    "NoTextFound",
    "RetrievalResult",
    "RetrievalSpec",
    "RetrievedChunk",
    "RobotRetriever",
    "RobotSpec",
    "StoreError",
    "StoreSettings",
    "UnsupportedFileType",
    "build_chat_engine",
    "build_embedding",
    "build_llm",
    "build_reranker",
    "build_retriever",
    "build_robot_llm",
    "build_tokenizer",
    "document_id_for",
    "embed_document",
    "packaged_embedding",
    "read_document",
    "turn_info",
]


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'indexes' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value  # later lookups skip this function
    return value


def __dir__() -> list[str]:
    return sorted({*globals(), *_EXPORTS})
