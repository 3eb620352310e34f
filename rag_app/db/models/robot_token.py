from __future__ import annotations

from datetime import datetime

from sqlmodel import Field, SQLModel

from rag_app.db.models.base import MYSQL_TABLE_ARGS, created_at_field, foreign_key, id_field
from rag_app.db.types import UTCDateTime


class RobotToken(SQLModel, table=True):
    """A bearer token for the OpenAI-compatible endpoint, bound to one robot. Only its SHA-256
    is stored: the token itself is shown once, when it is created."""

    __tablename__ = "rag_robot_token"
    __table_args__ = MYSQL_TABLE_ARGS

    id: int | None = id_field()
    robot_id: int = foreign_key("rag_robot.id")
    user_id: int = foreign_key("rag_user.id")
    name: str = Field(max_length=100)
    token_hash: str = Field(max_length=64, unique=True, index=True)
    token_hint: str = Field(max_length=32)
    created_at: datetime = created_at_field()
    last_used_at: datetime | None = Field(default=None, sa_type=UTCDateTime)
    revoked_at: datetime | None = Field(default=None, sa_type=UTCDateTime)
