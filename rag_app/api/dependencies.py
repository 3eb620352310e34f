"""Litestar dependencies shared by every controller."""

from __future__ import annotations

from collections.abc import AsyncGenerator
from typing import Any

from litestar import Request
from litestar.datastructures import State
from litestar.di import Provide
from sqlmodel.ext.asyncio.session import AsyncSession

from rag_app.api.pagination import provide_page_params
from rag_app.context import AppContext
from rag_app.db.models import User


def provide_app_context(state: State) -> AppContext:
    ctx: AppContext = state.ctx
    return ctx


async def provide_db_session(state: State) -> AsyncGenerator[AsyncSession, None]:
    # Services commit explicitly; whatever they did not commit is rolled back on close.
    ctx: AppContext = state.ctx
    async with ctx.sessionmaker() as session:
        yield session


def provide_current_user(request: Request[User, Any, Any]) -> User:
    return request.user


DEPENDENCIES = {
    "ctx": Provide(provide_app_context, sync_to_thread=False),
    "db_session": Provide(provide_db_session),
    "current_user": Provide(provide_current_user, sync_to_thread=False),
    "page_params": Provide(provide_page_params, sync_to_thread=False),
}
