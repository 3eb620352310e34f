from __future__ import annotations

from datetime import datetime
from enum import StrEnum
from typing import Any

from sqlalchemy import Index
from sqlmodel import BigInteger, Field, Text

from rag_app.db.models.base import MYSQL_TABLE_ARGS, Timestamped, foreign_key, id_field
from rag_app.db.types import JSONType, UTCDateTime


class DocumentStatus(StrEnum):
    uploading = "uploading"
    parsing = "parsing"
    splitting = "splitting"
    embedding = "embedding"
    completed = "completed"
    failed = "failed"


# Statuses during which a job holds the document; a heartbeat older than the stale limit means
# the worker died and the document may be claimed again.
IN_PROGRESS = (
    DocumentStatus.parsing,
    DocumentStatus.splitting,
    DocumentStatus.embedding,
)


class Document(Timestamped, table=True):
    __tablename__ = "rag_document"
    __table_args__ = (
        Index("ix_rag_document_knowledge_hash", "knowledge_id", "content_hash"),
        MYSQL_TABLE_ARGS,
    )

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
    # SHA-256 of the original: the same content twice in one knowledge base is refused.
    content_hash: str | None = Field(default=None, max_length=64)
    progress: int = Field(default=0, description="0-100 within the current status")
    # The job run that holds the document, and when it last reported: a claim made by an
    # atomic UPDATE so that no two workers process one document at once.
    job_id: str | None = Field(default=None, max_length=64)
    heartbeat_at: datetime | None = Field(default=None, sa_type=UTCDateTime)
