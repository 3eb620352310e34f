"""Shared column helpers for the tables."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import Column, ForeignKey
from sqlmodel import Field, SQLModel

from rag_app.db.types import BigIntPK, UTCDateTime, utcnow

# Table options for MySQL: InnoDB for foreign keys, utf8mb4 so any Chinese text (and emoji) fits.
MYSQL_TABLE_ARGS: dict[str, Any] = {
    "mysql_engine": "InnoDB",
    "mysql_charset": "utf8mb4",
    "mysql_collate": "utf8mb4_unicode_ci",
}


def id_field() -> Any:
    return Field(default=None, sa_column=Column(BigIntPK, primary_key=True, autoincrement=True))


def foreign_key(
    target: str, *, nullable: bool = False, ondelete: str = "CASCADE", index: bool = True
) -> Any:
    return Field(
        default=None,
        sa_column=Column(
            BigIntPK, ForeignKey(target, ondelete=ondelete), nullable=nullable, index=index
        ),
    )


# sa_type/sa_column_kwargs rather than sa_column: a Column object cannot be shared, and these
# fields are inherited by many tables through Timestamped.
def created_at_field() -> Any:
    return Field(default_factory=utcnow, sa_type=UTCDateTime, nullable=False)


def updated_at_field() -> Any:
    return Field(
        default_factory=utcnow,
        sa_type=UTCDateTime,
        nullable=False,
        sa_column_kwargs={"onupdate": utcnow},
    )


class Timestamped(SQLModel):
    created_at: datetime = created_at_field()
    updated_at: datetime = updated_at_field()
