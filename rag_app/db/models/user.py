from __future__ import annotations

from datetime import datetime
from enum import StrEnum

from sqlmodel import Field

from rag_app.db.models.base import MYSQL_TABLE_ARGS, Timestamped, id_field
from rag_app.db.types import UTCDateTime


class UserRole(StrEnum):
    admin = "admin"
    user = "user"


class User(Timestamped, table=True):
    __tablename__ = "rag_user"
    __table_args__ = MYSQL_TABLE_ARGS

    id: int | None = id_field()
    username: str = Field(max_length=50, unique=True, index=True)
    email: str = Field(max_length=100, unique=True, index=True)
    password_hash: str = Field(max_length=255)
    avatar_url: str | None = Field(default=None, max_length=255)
    role: str = Field(default=UserRole.user, max_length=20)
    status: int = Field(default=1, description="1 enabled, 0 disabled")
    password_changed_at: datetime | None = Field(default=None, sa_type=UTCDateTime)
    # Bumped on password change or reset: tokens carry it, so older tokens stop working.
    token_version: int = Field(default=0)

    @property
    def is_admin(self) -> bool:
        return self.role == UserRole.admin

    @property
    def is_active(self) -> bool:
        return self.status == 1
