from __future__ import annotations

from sqlmodel import Field, Text

from rag_app.db.models.base import MYSQL_TABLE_ARGS, Timestamped, foreign_key, id_field


class ApiKey(Timestamped, table=True):
    """A provider API key for one model, encrypted at rest (see rag_app.crypto)."""

    __tablename__ = "rag_apikey"
    __table_args__ = MYSQL_TABLE_ARGS

    id: int | None = id_field()
    user_id: int | None = foreign_key("rag_user.id", nullable=True, ondelete="SET NULL")
    llm_id: int = foreign_key("rag_llm.id")
    alias: str = Field(max_length=100)
    api_key_encrypted: str = Field(sa_type=Text)
    # What responses show instead of the key: a few characters at each end.
    key_mask: str = Field(max_length=32)
    description: str | None = Field(default=None, max_length=500)
    status: int = Field(default=1, description="1 active, 0 disabled")
