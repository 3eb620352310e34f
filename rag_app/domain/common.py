"""Helpers every service uses: schema base classes, paging, ownership."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any, TypeVar

from pydantic import BaseModel, ConfigDict
from sqlalchemy import func
from sqlmodel import select
from sqlmodel.ext.asyncio.session import AsyncSession
from sqlmodel.sql.expression import SelectOfScalar

from rag_app.api.pagination import Page, PageParams
from rag_app.db.models import User
from rag_app.errors import NotFound

E = TypeVar("E")
R = TypeVar("R", bound=BaseModel)


class InputSchema(BaseModel):
    """Request bodies: unknown fields are an error, not silently dropped; text is trimmed."""

    model_config = ConfigDict(extra="forbid", str_strip_whitespace=True)


class ReadSchema(BaseModel):
    model_config = ConfigDict(from_attributes=True)


async def paginate(
    session: AsyncSession,
    statement: SelectOfScalar[E],
    params: PageParams,
    to_read: Callable[[E], R],
) -> Page[R]:
    total_statement = select(func.count()).select_from(statement.order_by(None).subquery())
    total = (await session.exec(total_statement)).one()
    rows: Sequence[E] = (
        await session.exec(statement.offset(params.offset).limit(params.page_size))
    ).all()
    return Page[R](
        items=[to_read(row) for row in rows],
        total=total,
        page=params.page,
        page_size=params.page_size,
    )


def ensure_owner(entity: Any, user: User, what: str) -> None:
    """Someone else's resource answers 404, exactly as a missing one: no data, no existence leak."""
    if entity is None or (entity.user_id != user.id and not user.is_admin):
        raise NotFound(f"{what} not found")
