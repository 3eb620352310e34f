from __future__ import annotations

from enum import StrEnum

from sqlmodel import Field

from rag_app.db.models.base import MYSQL_TABLE_ARGS, Timestamped, foreign_key, id_field


class ModelType(StrEnum):
    chat = "chat"
    embedding = "embedding"
    rerank = "rerank"


class Llm(Timestamped, table=True):
    """A registered model of any provider: chat, embedding or rerank."""

    __tablename__ = "rag_llm"
    __table_args__ = MYSQL_TABLE_ARGS

    id: int | None = id_field()
    # The admin who registered it; kept (as NULL) when that admin is deleted.
    user_id: int | None = foreign_key("rag_user.id", nullable=True, ondelete="SET NULL")
    name: str = Field(max_length=100)
    model_type: str = Field(max_length=20, index=True)
    provider: str = Field(max_length=50)
    model_name: str = Field(max_length=255)
    base_url: str | None = Field(default=None, max_length=255)
    api_version: str | None = Field(default=None, max_length=50)
    max_tokens: int | None = Field(default=4096)
    dimension: int | None = Field(default=None, description="Embedding models: vector size")
    description: str | None = Field(default=None, max_length=1000)
    status: int = Field(default=1, description="1 enabled, 0 disabled")
