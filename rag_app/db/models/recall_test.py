from __future__ import annotations

from enum import StrEnum
from typing import Any

from sqlmodel import Field, Text

from rag_app.db.models.base import MYSQL_TABLE_ARGS, Timestamped, foreign_key, id_field
from rag_app.db.types import JSONType


class RecallTestStatus(StrEnum):
    queued = "queued"
    running = "running"
    completed = "completed"
    failed = "failed"


class RecallTest(Timestamped, table=True):
    """A batch recall test: queries with their expected documents, run as a job."""

    __tablename__ = "rag_recall_test"
    __table_args__ = MYSQL_TABLE_ARGS

    id: int | None = id_field()
    user_id: int = foreign_key("rag_user.id")
    robot_id: int | None = foreign_key("rag_robot.id", nullable=True, ondelete="SET NULL")
    knowledge_ids: list[int] = Field(default_factory=list, sa_type=JSONType)
    top_k: int = Field(default=10)
    mode: str = Field(default="hybrid", max_length=20)
    status: str = Field(default=RecallTestStatus.queued, max_length=20)
    progress: int = Field(default=0, description="queries done")
    total_queries: int = Field(default=0)
    queries: list[dict[str, Any]] = Field(default_factory=list, sa_type=JSONType)
    results: list[dict[str, Any]] | None = Field(default=None, sa_type=JSONType)
    metrics: dict[str, Any] | None = Field(default=None, sa_type=JSONType)
    error_msg: str | None = Field(default=None, sa_type=Text)
