from __future__ import annotations

from enum import StrEnum

from sqlmodel import Field

from rag_app.db.models.base import MYSQL_TABLE_ARGS, Timestamped, foreign_key, id_field


class KeywordBackend(StrEnum):
    bm25 = "bm25"
    milvus = "milvus"
    elasticsearch = "elasticsearch"


class Knowledge(Timestamped, table=True):
    __tablename__ = "rag_knowledge"
    __table_args__ = MYSQL_TABLE_ARGS

    id: int | None = id_field()
    user_id: int = foreign_key("rag_user.id")
    name: str = Field(max_length=100)
    description: str | None = Field(default=None, max_length=500)
    avatar: str | None = Field(default=None, max_length=255)
    # RESTRICT: a model in use cannot be deleted (the service answers 409 first).
    embed_llm_id: int = foreign_key("rag_llm.id", ondelete="RESTRICT")
    vector_collection_name: str = Field(max_length=100, unique=True)
    keyword_backend: str = Field(default=KeywordBackend.bm25, max_length=20)
    chunk_size: int = Field(default=500)
    chunk_overlap: int = Field(default=50)
    # Derived from rag_document by recount, never incremented blindly.
    document_count: int = Field(default=0)
    total_chunks: int = Field(default=0)
    status: int = Field(default=1, description="1 enabled, 0 disabled")
