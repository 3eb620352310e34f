"""Bounded request parameters shared by every controller.

Ids are BIGINT columns: a larger number would reach the driver (SQLite raises an integer
overflow) and fail as a 500, so every id in a path, a query or a body is checked first and
answers 422 instead.
"""

from __future__ import annotations

from typing import Annotated

from litestar.params import PathParameter, QueryParameter
from pydantic import Field

MAX_ID = 2**63 - 1
# What rag_session.session_id holds.
MAX_SESSION_ID_LENGTH = 64

IdPath = Annotated[int, PathParameter(ge=1, le=MAX_ID)]
"""A row id in the path: ``item_id: IdPath`` with a route ``/{item_id:int}``."""

SessionIdPath = Annotated[str, PathParameter(min_length=1, max_length=MAX_SESSION_ID_LENGTH)]
"""A chat session's public id in the path."""

Id = Annotated[int, Field(ge=1, le=MAX_ID)]
"""A row id in a request body (pydantic)."""


def id_query(description: str) -> QueryParameter:
    """An optional row id in the query: ``Annotated[int | None, id_query("...")] = None``."""
    return QueryParameter(ge=1, le=MAX_ID, description=description)
