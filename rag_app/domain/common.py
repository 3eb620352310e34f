"""Helpers every service uses: schema base classes and shared field types, paging, searching,
PATCH rules and ownership."""

from __future__ import annotations

from collections.abc import Callable, Collection, Sequence
from typing import Annotated, Any, Literal, TypeVar

from pydantic import BaseModel, ConfigDict, StringConstraints
from sqlalchemy import ColumnElement, func
from sqlmodel import col, select
from sqlmodel.ext.asyncio.session import AsyncSession
from sqlmodel.sql.expression import SelectOfScalar

from rag_app.api.pagination import Page, PageParams
from rag_app.db.models import User
from rag_app.errors import NotFound, ValidationFailed

E = TypeVar("E")
R = TypeVar("R", bound=BaseModel)

# The value of every ``status`` column that means enabled (users, models, API keys, knowledge
# bases, robots); 0 means disabled.
ENABLED = 1
Status = Literal[0, 1]
# Display names of models, knowledge bases and robots (their columns are VARCHAR(100)).
Name = Annotated[str, StringConstraints(min_length=1, max_length=100)]
# The escape character of every LIKE pattern made by like_pattern. SQLite has no default one,
# so each .like() must name it (``contains`` does).
LIKE_ESCAPE = "\\"


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


def like_pattern(search: str) -> str:
    """``%search%`` with LIKE wildcards escaped, so a search for "50%" or "a_b" means exactly
    that. Use with ``escape=LIKE_ESCAPE`` (or through ``contains``)."""
    escaped = (
        search.replace(LIKE_ESCAPE, LIKE_ESCAPE * 2)
        .replace("%", LIKE_ESCAPE + "%")
        .replace("_", LIKE_ESCAPE + "_")
    )
    return f"%{escaped}%"


def contains(column: Any, search: str) -> ColumnElement[bool]:
    """The column contains ``search`` literally (case-insensitive under the default
    collations of SQLite and MySQL)."""
    clause: ColumnElement[bool] = column.like(like_pattern(search), escape=LIKE_ESCAPE)
    return clause


def owned_listing(
    entity: type[E], user: User, owner_id: int | None = None, search: str | None = None
) -> SelectOfScalar[E]:
    """The listing of an owned, named resource (knowledge bases, robots), newest first. Users
    see their own rows; administrators everyone's, or one owner's by ``owner_id`` (which never
    widens a normal user's view). ``search``: part of the name."""
    table: Any = entity  # a table model: id, user_id and name are columns
    statement = select(entity).order_by(col(table.id).desc())
    if not user.is_admin:
        statement = statement.where(col(table.user_id) == user.id)
    if owner_id is not None:
        statement = statement.where(col(table.user_id) == owner_id)
    if search:
        statement = statement.where(contains(col(table.name), search))
    return statement


def ensure_owner(entity: E | None, user: User, what: str) -> E:
    """The entity, if the user owns it or is an administrator. Someone else's resource answers
    404, exactly as a missing one: no data, no existence leak."""
    if entity is None or (getattr(entity, "user_id", None) != user.id and not user.is_admin):
        raise NotFound(f"{what} not found")
    return entity


def invalid(field: str, message: str) -> ValidationFailed:
    """A 422 about one request field, worded like Litestar's own errors: "field: message"."""
    return ValidationFailed(f"{field}: {message}", field=field)


def reject_nulls(changes: dict[str, Any], nullable: Collection[str]) -> None:
    """PATCH bodies may send null only to clear an optional field, never a required one
    (leaving a field out is how a client says "no change")."""
    for field, value in changes.items():
        if value is None and field not in nullable:
            raise invalid(field, "cannot be null; leave it out to keep the current value")
