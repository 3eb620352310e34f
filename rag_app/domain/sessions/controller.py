from __future__ import annotations

from typing import Annotated

from litestar import Controller, delete, get, patch, post
from litestar.di import NamedDependency, Provide
from litestar.params import JSONBody, QueryParameter
from sqlmodel.ext.asyncio.session import AsyncSession

from rag_app.api.pagination import Page, PageParams
from rag_app.api.params import SessionIdPath, id_query
from rag_app.db.models import User
from rag_app.domain.sessions.schemas import (
    EditableStatus,
    MessageRead,
    SessionCreate,
    SessionRead,
    SessionUpdate,
)
from rag_app.domain.sessions.service import SessionService


def provide_session_service(db_session: NamedDependency[AsyncSession]) -> SessionService:
    return SessionService(db_session)


class SessionController(Controller):
    """Your own chat sessions; nobody else's are visible, administrators' included."""

    path = "/sessions"
    tags = ["sessions"]
    dependencies = {"sessions": Provide(provide_session_service, sync_to_thread=False)}

    @post("/", summary="Open a session with a robot you own or a public one")
    async def create_session(
        self,
        data: JSONBody[SessionCreate],
        sessions: NamedDependency[SessionService],
        current_user: NamedDependency[User],
    ) -> SessionRead:
        return SessionRead.model_validate(await sessions.create(current_user, data))

    @get("/", summary="Your sessions: pinned first, then most recent activity")
    async def list_sessions(
        self,
        sessions: NamedDependency[SessionService],
        current_user: NamedDependency[User],
        page_params: NamedDependency[PageParams],
        robot_id: Annotated[int | None, id_query("Only sessions with this robot")] = None,
        status: Annotated[
            EditableStatus, QueryParameter(description="active (default) or archived")
        ] = "active",
    ) -> Page[SessionRead]:
        return await sessions.list(current_user, page_params, robot_id=robot_id, status=status)

    @get("/{session_id:str}", summary="One of your sessions")
    async def get_session(
        self,
        session_id: SessionIdPath,
        sessions: NamedDependency[SessionService],
        current_user: NamedDependency[User],
    ) -> SessionRead:
        return SessionRead.model_validate(await sessions.get(current_user, session_id))

    @patch("/{session_id:str}", summary="Rename, pin or unpin, archive or unarchive")
    async def update_session(
        self,
        session_id: SessionIdPath,
        data: JSONBody[SessionUpdate],
        sessions: NamedDependency[SessionService],
        current_user: NamedDependency[User],
    ) -> SessionRead:
        return SessionRead.model_validate(await sessions.update(current_user, session_id, data))

    @delete("/{session_id:str}", summary="Delete a session (it is no longer listed or readable)")
    async def delete_session(
        self,
        session_id: SessionIdPath,
        sessions: NamedDependency[SessionService],
        current_user: NamedDependency[User],
    ) -> None:
        await sessions.delete(current_user, session_id)

    @get("/{session_id:str}/messages", summary="The session's messages, oldest first")
    async def list_messages(
        self,
        session_id: SessionIdPath,
        sessions: NamedDependency[SessionService],
        current_user: NamedDependency[User],
        page_params: NamedDependency[PageParams],
    ) -> Page[MessageRead]:
        return await sessions.messages(current_user, session_id, page_params)
