from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import UniqueConstraint
from sqlmodel import Field, SQLModel, Text

from rag_app.db.models.base import (
    MYSQL_TABLE_ARGS,
    Timestamped,
    created_at_field,
    foreign_key,
    id_field,
)
from rag_app.db.types import JSONType


class Robot(Timestamped, table=True):
    """An assistant bound to knowledge bases."""

    __tablename__ = "rag_robot"
    __table_args__ = MYSQL_TABLE_ARGS

    id: int | None = id_field()
    user_id: int = foreign_key("rag_user.id")
    name: str = Field(max_length=100)
    avatar: str | None = Field(default=None, max_length=255)
    # NULL: no chat model, the robot answers in retrieval-only mode (cited passages).
    chat_llm_id: int | None = foreign_key("rag_llm.id", nullable=True, ondelete="RESTRICT")
    rerank_llm_id: int | None = foreign_key("rag_llm.id", nullable=True, ondelete="RESTRICT")
    description: str | None = Field(default=None, max_length=500)
    system_prompt: str | None = Field(default=None, sa_type=Text)
    welcome_msg: str | None = Field(default=None, max_length=500)
    suggested_questions: list[str] | None = Field(default=None, sa_type=JSONType)
    similarity_threshold: float = Field(default=0.0)
    top_k: int = Field(default=5)
    enable_rerank: bool = Field(default=False)
    temperature: float = Field(default=0.7)
    max_tokens: int = Field(default=2000)
    # Retrieval mode, fusion, weights: validated by rag_app.domain.robots.schemas.RetrievalConfig.
    retrieval_config: dict[str, Any] | None = Field(default=None, sa_type=JSONType)
    # Public robots can be chatted with by every signed-in user; only the owner changes them.
    is_public: bool = Field(default=False)
    status: int = Field(default=1, description="1 enabled, 0 disabled")


class RobotKnowledge(SQLModel, table=True):
    __tablename__ = "rag_robot_knowledge"
    __table_args__ = (
        UniqueConstraint("robot_id", "knowledge_id", name="uk_robot_kb"),
        MYSQL_TABLE_ARGS,
    )

    id: int | None = id_field()
    robot_id: int = foreign_key("rag_robot.id", index=False)
    knowledge_id: int = foreign_key("rag_knowledge.id")
    created_at: datetime = created_at_field()
