from __future__ import annotations

from enum import StrEnum
from typing import Any

from sqlmodel import BigInteger, Field, Text

from rag_app.db.models.base import MYSQL_TABLE_ARGS, Timestamped, foreign_key, id_field
from rag_app.db.types import JSONType


class DocumentStatus(StrEnum):
    uploading = "uploading"
    parsing = "parsing"
    splitting = "splitting"
    embedding = "embedding"
    completed = "completed"
    failed = "failed"


class Document(Timestamped, table=True):
    __tablename__ = "rag_document"
    __table_args__ = MYSQL_TABLE_ARGS

    id: int | None = id_field()
    knowledge_id: int = foreign_key("rag_knowledge.id")
    file_name: str = Field(max_length=255)
    file_path: str = Field(max_length=500, description="Key of the original in the object store")
    file_extension: str = Field(max_length=20)
    file_size: int = Field(default=0, sa_type=BigInteger)
    mime_type: str | None = Field(default=None, max_length=100)
    width: int | None = Field(default=None)
    height: int | None = Field(default=None)
    status: str = Field(default=DocumentStatus.uploading, max_length=20, index=True)
    chunk_count: int = Field(default=0)
    error_msg: str | None = Field(default=None, sa_type=Text)
    meta_data: dict[str, Any] | None = Field(default=None, sa_type=JSONType)
