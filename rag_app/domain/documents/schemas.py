from __future__ import annotations

from datetime import datetime
from typing import Any

from rag_app.domain.common import ReadSchema


class DocumentRead(ReadSchema):
    id: int
    knowledge_id: int
    file_name: str
    file_extension: str
    file_size: int
    mime_type: str | None
    status: str
    progress: int
    chunk_count: int
    error_msg: str | None
    content_hash: str | None
    created_at: datetime
    updated_at: datetime


class DocumentStatusRead(ReadSchema):
    id: int
    status: str
    progress: int
    chunk_count: int
    error_msg: str | None


class UploadRead(ReadSchema):
    items: list[DocumentRead]


class ChunkRead(ReadSchema):
    id: str
    position: int
    text: str
    metadata: dict[str, Any]


class ReindexRead(ReadSchema):
    queued: int
    skipped_in_progress: int
