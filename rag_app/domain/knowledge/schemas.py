from __future__ import annotations

from datetime import datetime
from typing import Annotated

from pydantic import Field

from rag_app.api.params import Id
from rag_app.db.models.knowledge import KeywordBackend
from rag_app.domain.common import InputSchema, Name, ReadSchema, Status

ChunkSize = Annotated[int, Field(ge=100, le=4000, description="Target chunk size in tokens")]
# The upper bound (below chunk_size) depends on two fields, so the service checks it.
ChunkOverlap = Annotated[int, Field(ge=0, description="Tokens shared by neighbouring chunks")]


class KnowledgeCreate(InputSchema):
    name: Name
    description: str | None = Field(default=None, max_length=500)
    avatar: str | None = Field(default=None, max_length=255)
    embed_llm_id: Id = Field(description="An enabled model of type 'embedding'")
    chunk_size: ChunkSize = 500
    chunk_overlap: ChunkOverlap = Field(default=50, description="0 <= overlap < chunk_size")
    keyword_backend: KeywordBackend = KeywordBackend.bm25


class KnowledgeUpdate(InputSchema):
    """Only the fields sent change; chunking is checked against the merged result."""

    name: Name | None = None
    description: str | None = Field(default=None, max_length=500)
    avatar: str | None = Field(default=None, max_length=255)
    embed_llm_id: Id | None = Field(
        default=None, description="Can change only while the knowledge base has no documents"
    )
    chunk_size: ChunkSize | None = None
    chunk_overlap: ChunkOverlap | None = None
    keyword_backend: KeywordBackend | None = None
    status: Status | None = Field(default=None, description="1 enabled, 0 disabled")


class KnowledgeRead(ReadSchema):
    id: int
    user_id: int
    name: str
    description: str | None
    avatar: str | None
    embed_llm_id: int
    vector_collection_name: str
    keyword_backend: str
    chunk_size: int
    chunk_overlap: int
    document_count: int = Field(description="Derived from the documents; read-only")
    total_chunks: int = Field(description="Derived from the documents; read-only")
    status: int
    created_at: datetime
    updated_at: datetime
