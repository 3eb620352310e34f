from __future__ import annotations

from datetime import datetime
from enum import StrEnum
from typing import Any

from sqlalchemy import Column, ForeignKey, String, UniqueConstraint
from sqlmodel import Field, SQLModel, Text

from rag_app.db.models.base import MYSQL_TABLE_ARGS, created_at_field, id_field
from rag_app.db.types import JSONType


class MessageRole(StrEnum):
    user = "user"
    assistant = "assistant"


class ChatHistory(SQLModel, table=True):
    """One turn of a session. (session_id, sequence) is unique so that two concurrent requests
    can never store two turns under the same number."""

    __tablename__ = "rag_chat_history"
    __table_args__ = (
        UniqueConstraint("session_id", "sequence", name="uq_chat_history_session_sequence"),
        MYSQL_TABLE_ARGS,
    )

    id: int | None = id_field()
    session_id: str = Field(
        sa_column=Column(
            String(64),
            ForeignKey("rag_session.session_id", ondelete="CASCADE"),
            nullable=False,
            index=True,
        )
    )
    message_id: str = Field(max_length=64, unique=True, index=True)
    role: str = Field(max_length=20)
    content: str = Field(sa_type=Text)
    retrieved_contexts: list[dict[str, Any]] | None = Field(default=None, sa_type=JSONType)
    referenced_doc_ids: list[int] | None = Field(default=None, sa_type=JSONType)
    prompt_tokens: int = Field(default=0)
    completion_tokens: int = Field(default=0)
    total_tokens: int = Field(default=0)
    retrieval_time_ms: int = Field(default=0)
    generation_time_ms: int = Field(default=0)
    total_time_ms: int = Field(default=0)
    feedback: int | None = Field(default=None, description="1 helpful, -1 not helpful")
    feedback_comment: str | None = Field(default=None, max_length=500)
    sequence: int = Field()
    created_at: datetime = created_at_field()
    meta_data: dict[str, Any] | None = Field(default=None, sa_type=JSONType)
